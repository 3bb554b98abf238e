"""The CACHES backend (low-level API, tagged {% cache %} fragments) and the per-site middleware pair."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator, List

import pytest
from django.core.cache import cache as default_cache
from django.core.cache import caches
from django.test import Client

import rcache
import rcache.django as rdj
from rcache_server import RedisServer
from rcache.django.cache import RCacheBackend
from testproject.testapp.models import Article
from testproject.testapp.views import CALLS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rcache_site")]


@pytest.fixture()
def backend(settings, redis_server: RedisServer) -> Iterator[RCacheBackend]:  # type: ignore[no-untyped-def]
    settings.CACHES = {
        "default": {"BACKEND": "rcache.django.cache.RCacheBackend", "LOCATION": redis_server.url, "KEY_PREFIX": "t"},
    }
    c = caches["default"]
    assert isinstance(c, RCacheBackend)
    yield c


def test_low_level_api(backend: RCacheBackend, cache: rcache.RCache) -> None:
    assert default_cache.get("missing", "dflt") == "dflt"
    default_cache.set("a", {"x": [1, 2]}, 60)
    assert default_cache.get("a") == {"x": [1, 2]}
    assert default_cache.add("a", "other") is False
    assert default_cache.add("b", 5) is True and default_cache.get("b") == 5
    assert default_cache.incr("b", 2) == 7 and default_cache.decr("b") == 6
    assert default_cache.get_or_set("c", lambda: "computed", 60) == "computed"
    assert default_cache.get_or_set("c", lambda: "again", 60) == "computed"
    default_cache.set_many({"d": 1, "e": "two"}, 60)
    assert default_cache.get_many(["a", "d", "e", "nope"]) == {"a": {"x": [1, 2]}, "d": 1, "e": "two"}
    assert default_cache.has_key("d") and not default_cache.has_key("nope")
    default_cache.delete_many(["d", "e"])
    assert default_cache.get_many(["d", "e"]) == {}
    assert default_cache.delete("a") is True and default_cache.delete("a") is False
    assert default_cache.touch("b", 100) is True and default_cache.touch("nope") is False
    default_cache.set("zero", 1, 0)  # timeout 0: not kept
    assert default_cache.get("zero") is None
    default_cache.set("weird key/with?{chars}", "ok")
    assert default_cache.get("weird key/with?{chars}") == "ok"
    # Each key is one entry under the backend's own prefix, never under "/".
    assert cache.list("/") == []
    assert sorted(cache.list("django-cache")) == [
        b"django-cache/t%3A1%3Ab", b"django-cache/t%3A1%3Ac", b"django-cache/t%3A1%3Aweird%20key%2Fwith%3F%7Bchars%7D"
    ]
    default_cache.clear()
    assert cache.list("django-cache") == []


def test_add_is_atomic(backend: RCacheBackend) -> None:
    winners: List[int] = []
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        barrier.wait()
        if caches["default"].add("lock", i, 30):
            winners.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and default_cache.get("lock") == winners[0]


def test_tagged_values_and_fragments_purged_by_tag(backend: RCacheBackend) -> None:
    default_cache.set("tagged", "v", 60, tags=["articles"])
    client = Client()
    assert b"<aside>1</aside>" in client.get("/fragment/").content
    r = client.get("/fragment/")
    assert b"<p>2</p>" in r.content and b"<aside>1</aside>" in r.content  # the fragment came from rcache
    assert backend.purge_tag("sidebar") == 1
    assert b"<aside>3</aside>" in client.get("/fragment/").content
    Article.objects.create(title="x")  # purge_on_save purges the "articles" tag
    assert default_cache.get("tagged") is None
    assert b"<aside>4</aside>" in client.get("/fragment/").content


@pytest.fixture()
def site_middleware(settings) -> None:  # type: ignore[no-untyped-def]
    settings.MIDDLEWARE = [
        "rcache.django.middleware.UpdateCacheMiddleware",
        *settings.MIDDLEWARE,
        "rcache.django.middleware.FetchFromCacheMiddleware",
    ]


@pytest.mark.usefixtures("site_middleware")
def test_site_middleware_caches_every_page_with_purge_by_path(r: Any) -> None:
    client = Client()
    assert client.get("/plain/?x=1")["X-RCache"] == "MISS"
    r2 = client.get("/plain/?x=1")
    assert r2["X-RCache"] == "HIT" and r2.content == b"plain 1"
    assert "Cookie" not in r2.get("Vary", "")  # deciding on the user did not make the page per-session
    assert client.get("/plain/?x=2").content == b"plain 2"
    assert CALLS["plain"] == 2
    assert rdj.purge("/plain/") == 2
    assert client.get("/plain/?x=1")["X-RCache"] == "MISS"
    # A cache_path view is stored once, by its decorator (its tags, its timeout), which
    # takes over the middleware's lookup and lease (a second lookup would wait on it).
    a = Article.objects.create(title="mw")
    start = time.monotonic()
    assert client.get(f"/articles/{a.pk}/")["X-RCache"] == "MISS"
    assert time.monotonic() - start < 2.0
    assert client.get(f"/articles/{a.pk}/")["X-RCache"] == "HIT"
    assert rdj.purge_tag(f"article:{a.pk}") == 1
    assert CALLS["detail"] == 1


@pytest.mark.usefixtures("site_middleware")
def test_site_middleware_never_shares_a_logged_in_page() -> None:
    from django.contrib.auth.models import User

    User.objects.create_user("dave", password="pw")
    dave = Client()
    dave.login(username="dave", password="pw")
    assert dave.get("/plain/")["X-RCache"] == "BYPASS auth"
    assert Client().get("/plain/")["X-RCache"] == "MISS"
