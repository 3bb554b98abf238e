"""The circuit breaker and the warning limiter, offline (fake clock)."""

from __future__ import annotations

import logging

import pytest

from rcache.django import _guard
from rcache.django._guard import Breaker, WarningLimiter


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> list:
    now = [1000.0]
    monkeypatch.setattr(_guard.time, "monotonic", lambda: now[0])
    return now


def test_breaker_opens_probes_once_per_interval_and_closes(clock: list) -> None:
    b = Breaker(failures=2, seconds=5)
    assert b.allow() and not b.failure()  # 1 failure: still closed
    assert b.allow() and b.failure()  # 2nd consecutive: open
    assert not b.allow() and b.skipped_calls == 1
    clock[0] += 5
    assert b.allow()  # the probe
    assert not b.allow()  # only one probe at a time
    assert b.failure()  # the probe failed: open again for 5 s
    clock[0] += 4.9
    assert not b.allow()
    clock[0] += 0.1
    assert b.allow()
    b.success()
    assert not b.is_open and b.allow() and b.allow()
    assert b.failed_calls == 3


def test_a_success_resets_the_count(clock: list) -> None:
    b = Breaker(failures=2, seconds=5)
    b.failure()
    b.success()
    assert not b.failure()  # not consecutive


def test_warning_limiter(clock: list, caplog: pytest.LogCaptureFixture) -> None:
    w = WarningLimiter(logging.getLogger("t"), interval=10)
    with caplog.at_level(logging.WARNING, logger="t"):
        w.warn("a", "first")
        w.warn("a", "second")
        w.warn("a", "third")
        w.warn("b", "other kind")
        clock[0] += 10
        w.warn("a", "later")
    assert [r.getMessage() for r in caplog.records] == [
        "first",
        "other kind",
        "later (2 similar warning(s) suppressed in the last 10s)",
    ]
