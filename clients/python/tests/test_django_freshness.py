"""Reads through RCACHE.LOOKUP: ETags and 304s from the module, soft purges, stale-if-error."""

from __future__ import annotations

import hashlib
from typing import Iterator

import pytest
import redis
from django.test import Client

import rcache
import rcache.django as rdj
from testproject.testapp import views
from testproject.testapp.models import Article
from testproject.testapp.views import CALLS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rcache_site")]
PAGE_VARY = [(":language", "en-us"), (":timezone", "UTC")]


def test_stored_etag_is_ours_and_304_skips_the_body(client: Client, cache: rcache.RCache, r: redis.Redis) -> None:
    a = Article.objects.create(title="E")
    url = f"/articles/{a.pk}/"
    etag = client.get(url)["ETag"]
    found = cache.lookup(url, vary=PAGE_VARY)
    assert found.state == "FRESH" and found.etag.decode() == etag.strip('"')
    assert etag.strip('"') == hashlib.md5(found.value).hexdigest()
    before = r.info("rcache")["rcache_not_modified"]
    resp = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert resp.status_code == 304 and resp["ETag"] == etag and resp["X-RCache"] == "HIT"
    assert r.info("rcache")["rcache_not_modified"] == before + 1  # the module compared, no body sent
    assert CALLS["detail"] == 1


def test_soft_purged_page_is_rendered_again(client: Client) -> None:
    a = Article.objects.create(title="S")
    url = f"/articles/{a.pk}/"
    client.get(url)
    assert rdj.purge(url, soft=True) == 1
    r = client.get(url)
    assert r["X-RCache"] == "MISS" and CALLS["detail"] == 2
    assert client.get(url)["X-RCache"] == "HIT"


@pytest.fixture()
def flaky() -> Iterator[None]:
    views.FAIL["mode"] = ""
    yield
    views.FAIL["mode"] = ""


@pytest.mark.usefixtures("flaky")
@pytest.mark.parametrize("mode", ["raise", "500"])
def test_stale_if_error_serves_the_stale_copy(client: Client, cache: rcache.RCache, mode: str) -> None:
    assert client.get("/flaky/").content == b"flaky render 1"
    assert rdj.purge_tag("flaky", soft=True) == 1  # stale now, for its grace (60 s)
    assert cache.lookup("/flaky/", vary=PAGE_VARY).state == "STALE"
    views.FAIL["mode"] = mode
    r = client.get("/flaky/")
    assert r.status_code == 200 and r.content == b"flaky render 1" and r["X-RCache"] == "STALE"
    assert CALLS["flaky"] == 2  # the view ran, failed, and the stale copy answered
    views.FAIL["mode"] = ""
    r = client.get("/flaky/")
    # The failed refill's lease runs until LEASE_TIME: meanwhile renders are not stored.
    assert r.content == b"flaky render 3" and r["X-RCache"] == "BYPASS lease"


@pytest.mark.usefixtures("flaky")
def test_without_a_stale_copy_the_error_propagates(client: Client) -> None:
    views.FAIL["mode"] = "500"
    assert client.get("/flaky/").status_code == 503
    views.FAIL["mode"] = "raise"
    with pytest.raises(RuntimeError):
        client.get("/flaky/")


def test_grace_is_the_longest_stale_window(client: Client, cache: rcache.RCache, r: redis.Redis) -> None:
    client.get("/flaky/")  # cache_path(1, stale_if_error=60): the key lives 1 + 60 s
    assert 59_000 < r.pttl(cache.key("/flaky/", vary=PAGE_VARY)) <= 61_000
