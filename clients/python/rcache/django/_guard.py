"""Fail-open that stays fast: a circuit breaker and rate-limited warnings.

A hung Redis (a stopped process, a dead link) costs each call the full socket
timeout.  After ``failures`` consecutive failed calls the breaker opens: calls
are skipped (the caller treats them as failed, without a round trip) for
``seconds``; then one call is let through as a probe -- its success closes the
breaker, its failure opens it again.  So a Redis that stays hung costs at most
one timeout per ``seconds`` per process (after the first ``failures``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Dict, Optional


class Breaker:
    def __init__(self, failures: int, seconds: float) -> None:
        self.failures = max(1, failures)
        self.seconds = seconds
        self._lock = threading.Lock()
        self._consecutive = 0
        self._open_until: Optional[float] = None
        self._probing = False
        self.failed_calls = 0  # totals, for monitoring: calls that failed / calls skipped
        self.skipped_calls = 0

    def allow(self) -> bool:
        """May a call go to Redis now?  (Takes the probe slot when the breaker is half-open.)"""
        with self._lock:
            if self._open_until is None:
                return True
            if self._probing or time.monotonic() < self._open_until:
                self.skipped_calls += 1
                return False
            self._probing = True
            return True

    def success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._open_until = None
            self._probing = False

    def failure(self) -> bool:
        """Record a failed call; True when this failure opened (or re-opened) the breaker."""
        with self._lock:
            self.failed_calls += 1
            self._consecutive += 1
            probe_failed = self._probing
            self._probing = False
            if probe_failed or self._consecutive >= self.failures:
                self._open_until = time.monotonic() + self.seconds
                return True
            return False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None


class WarningLimiter:
    """At most one warning per ``interval`` seconds per kind; the next one says how many were held back."""

    def __init__(self, logger: logging.Logger, interval: float) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._last: Dict[str, float] = {}
        self._held: Dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._held[kind] = self._held.get(kind, 0) + 1
                return
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            message += f" ({held} similar warning(s) suppressed in the last {self.interval:g}s)"
        self.logger.warning("%s", message)
