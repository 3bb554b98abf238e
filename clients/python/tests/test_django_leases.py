"""Leases: one render per miss, never a stale refill, stale-while-revalidate, and a
crashed holder costing at most its lease time."""

from __future__ import annotations

import time

import pytest
from django.test import Client

import rcache
import rcache.django as rdj
from rcache.httpformat import StoredResponse
from testproject.testapp.views import CALLS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rcache_site", "leases")]
PAGE_VARY = [(":language", "en-us"), (":timezone", "UTC")]


@pytest.fixture()
def leases(settings) -> None:  # type: ignore[no-untyped-def]
    settings.RCACHE = {**settings.RCACHE, "LEASE_TIME": 2.0, "LEASE_WAIT": 5.0, "SOCKET_TIMEOUT": 1.0}


def test_a_render_purged_while_rendering_is_not_stored(client: Client, cache: rcache.RCache) -> None:
    r = client.get("/purged-while-rendering/")
    assert r.content == b"render 1" and r["X-RCache"] == "BYPASS invalidated"
    assert cache.lookup("/purged-while-rendering/", vary=PAGE_VARY).state == "MISS"
    assert client.get("/purged-while-rendering/").content == b"render 2"


def test_stale_while_revalidate_serves_stale_while_another_renders(client: Client, cache: rcache.RCache) -> None:
    client.get("/swr/")
    assert rdj.purge("/swr/", soft=True) == 1
    # Another request is re-rendering: it holds the lease.
    other = cache.lookup("/swr/", vary=PAGE_VARY, lease=10)
    assert other.state == "STALE" and other.lease
    r = client.get("/swr/")
    assert r.content == b"swr render 1" and r["X-RCache"] == "STALE"
    assert CALLS["swr"] == 1
    # That render lands: everybody gets the new page.
    value = StoredResponse(200, [("Content-Type", "text/plain")], b"the other render").dumps()
    assert cache.set("/swr/", value, ttl=60, vary=PAGE_VARY, lease=other.lease) is True
    r = client.get("/swr/")
    assert r.content == b"the other render" and r["X-RCache"] == "HIT"


def test_the_request_that_gets_the_lease_on_a_stale_page_renders_it(client: Client) -> None:
    client.get("/swr/")
    rdj.purge("/swr/", soft=True)
    r = client.get("/swr/")  # no other lease: this one takes it and renders
    assert r.content == b"swr render 2" and r["X-RCache"] == "MISS"
    assert client.get("/swr/")["X-RCache"] == "HIT"


def test_a_crashed_holder_costs_at_most_its_lease_time(client: Client, cache: rcache.RCache) -> None:
    crashed = cache.lookup("/lang/", vary=PAGE_VARY, lease=0.5)  # never refills
    assert crashed.lease
    start = time.monotonic()
    r = client.get("/lang/")  # waits for the lease, is handed it when it expires, renders
    elapsed = time.monotonic() - start
    assert r["X-RCache"] == "MISS" and CALLS["lang"] == 1
    assert 0.4 <= elapsed < 3.0, elapsed
    assert client.get("/lang/")["X-RCache"] == "HIT"


def test_a_waiter_is_answered_by_the_holders_render(client: Client, cache: rcache.RCache) -> None:
    import threading

    holder = cache.lookup("/lang/", vary=PAGE_VARY, lease=5)
    assert holder.lease
    results = []
    t = threading.Thread(target=lambda: results.append(Client().get("/lang/")))
    t.start()
    time.sleep(0.3)
    value = StoredResponse(200, [("Content-Type", "text/plain")], b"rendered by the holder").dumps()
    assert cache.set("/lang/", value, ttl=60, vary=PAGE_VARY, lease=holder.lease) is True
    t.join(10)
    assert results and results[0].content == b"rendered by the holder" and results[0]["X-RCache"] == "HIT"
    assert CALLS["lang"] == 0


def test_an_uncacheable_page_does_not_make_requests_wait(client: Client, cache: rcache.RCache) -> None:
    # The first render finds the page cannot be stored (a CSRF token): it leaves a pass
    # marker with its lease, so the next requests neither wait nor take a lease.
    assert client.get("/csrf/")["X-RCache"] == "BYPASS csrf"
    start = time.monotonic()
    assert [Client().get("/csrf/")["X-RCache"] for _ in range(3)] == ["BYPASS pass"] * 3
    assert time.monotonic() - start < 1.0
    assert CALLS["csrf"] == 4
    assert cache.lookup("/csrf/", vary=PAGE_VARY).lease is None  # nobody holds a lease


def test_concurrent_requests_for_an_uncacheable_page_are_not_serialised() -> None:
    import threading

    barrier = threading.Barrier(6)
    seen = []

    def one() -> None:
        barrier.wait()
        start = time.monotonic()
        seen.append((Client().get("/csrf/")["X-RCache"], time.monotonic() - start))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(sec < 3.0 for _, sec in seen), seen  # LEASE_WAIT is 5 s
    assert CALLS["csrf"] == 6


def test_a_failed_render_releases_its_lease(client: Client, cache: rcache.RCache) -> None:
    from testproject.testapp import views

    views.FAIL["mode"] = "raise"
    try:
        with pytest.raises(RuntimeError):
            client.get("/flaky/")
    finally:
        views.FAIL["mode"] = ""
    start = time.monotonic()
    assert client.get("/flaky/")["X-RCache"] == "MISS"  # took the lease at once
    assert time.monotonic() - start < 1.0


def test_a_stale_page_within_its_window_answers_if_none_match(client: Client, cache: rcache.RCache, caplog: pytest.LogCaptureFixture) -> None:
    etag = client.get("/swr/")["ETag"]
    rdj.purge("/swr/", soft=True)
    assert cache.lookup("/swr/", vary=PAGE_VARY, lease=10).lease  # another request re-renders
    with caplog.at_level("WARNING", logger="rcache.django"):
        r = client.get("/swr/", HTTP_IF_NONE_MATCH=etag)
    assert r.status_code == 304 and r["X-RCache"] == "STALE" and r["ETag"] == etag
    assert not caplog.records and CALLS["swr"] == 1
