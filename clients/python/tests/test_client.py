"""rcache.RCache (the plain Python client) against a real server, plus offline unit tests."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import redis

import rcache
from rcache.client import _query_args, _tag_args, _ttl_args, _vary_args
from rcache.httpformat import FormatError, StoredResponse, etag_of

# -- offline: argument mapping -----------------------------------------------------


def test_ttl_mapping() -> None:
    assert _ttl_args(None) == []
    assert _ttl_args(30) == [b"EX", b"30"]
    assert _ttl_args(1.5) == [b"PX", b"1500"]
    assert _ttl_args(2.0) == [b"EX", b"2"]
    assert _ttl_args(dt.timedelta(minutes=5)) == [b"EX", b"300"]
    assert _ttl_args(dt.timedelta(milliseconds=250)) == [b"PX", b"250"]
    for bad in (0, -1, 0.0, float("nan"), dt.timedelta(0), 0.0001):
        with pytest.raises(ValueError):
            _ttl_args(bad)
    with pytest.raises(TypeError):
        _ttl_args(True)
    with pytest.raises(TypeError):
        _ttl_args("10")  # type: ignore[arg-type]


def test_query_vary_tags_mapping() -> None:
    assert _query_args("") == [] and _query_args("?") == [] and _query_args(None) == []
    assert _query_args("a=1") == [b"QUERY", b"a=1"]
    assert _query_args({"a": 1, "b": ["x", "y"]}) == [b"QUERY", b"a=1&b=x&b=y"]
    assert _query_args([("q", "ü")]) == [b"QUERY", b"q=%C3%BC"]
    assert _vary_args({}) == [] and _vary_args(None) == []
    assert _vary_args({"Accept": "text/html", "x": ["1", "2"]}) == [
        b"VARY", b"3", b"Accept", b"text/html", b"x", b"1", b"x", b"2"]
    assert _vary_args([("a", b"\x00"), ("a", "")]) == [b"VARY", b"2", b"a", b"\x00", b"a", b""]
    assert _tag_args("one") == [b"TAGS", b"1", b"one"]
    assert _tag_args(["a", b"b"]) == [b"TAGS", b"2", b"a", b"b"]
    assert _tag_args([]) == [] and _tag_args(None) == []


def test_path_rules() -> None:
    ok = ["/", "/a/b", "shop.example.com/x", "{shop1}/products/7", "/a/{b}/c", "/" + "x" * 4095]
    bad = ["", "/a?b", "/a\x00", "/a\x7f", "/a\n", "/a{b", "/a}b", "/{}", "/{a}{b}", "/}a{", "/" + "x" * 4096]
    for p in ok:
        assert rcache.path_error(p) is None, p
        assert rcache.validate_path(p) == p.encode()
    for p in bad:
        assert rcache.path_error(p) is not None, p
        with pytest.raises(ValueError):
            rcache.validate_path(p)
    assert rcache.path_error("/abc", max_len=3) is not None


def test_httpformat_round_trip() -> None:
    sr = StoredResponse(200, [("Content-Type", "text/plain; charset=utf-8"), ("X-Ü", "ä")], bytes(range(256)))
    data = sr.dumps()
    assert data[:4] == b"RCH1"
    assert StoredResponse.loads(data) == sr
    assert sr.dumps() == data  # deterministic
    assert etag_of(data).strip('"') == __import__("hashlib").md5(data).hexdigest()
    for bad in (b"", b"RCH2\x00\x00\x00\x00", b"RCH1\x00\x00\x00\x10{}", b"RCH1\x00\x00\x00\x02{}", b"pickle"):
        with pytest.raises(FormatError):
            StoredResponse.loads(bad)


# -- against the server ------------------------------------------------------------


def test_set_get_delete(cache: rcache.RCache, r: redis.Redis) -> None:
    assert cache.set("/a", b"v1") is True
    assert cache.get("/a") == b"v1"
    assert r.ttl(cache.key("/a")) == -1
    assert cache.set("/a", "v2", ttl=100, query="x=1", vary={"Accept": "json"}, tags=["t1", "t2"]) is True
    assert cache.get("/a", query="x=1", vary={"accept": "json"}) == b"v2"
    assert cache.get("/a", query="?x=1", vary=[("ACCEPT", "json")]) == b"v2"
    assert cache.get("/a", query="x=1") is None
    assert 0 < r.ttl(cache.key("/a", query="x=1", vary={"Accept": "json"})) <= 100
    assert cache.delete("/a", query="x=1", vary={"Accept": "json"}) == 1
    assert cache.delete("/a", query="x=1", vary={"Accept": "json"}) == 0
    assert cache.get("/a") == b"v1"


def test_ttl_forms(cache: rcache.RCache, r: redis.Redis) -> None:
    cache.set("/t1", b"x", ttl=1.5)
    cache.set("/t2", b"x", ttl=dt.timedelta(hours=1))
    assert 1000 < r.pttl(cache.key("/t1")) <= 1500
    assert 3500 < r.ttl(cache.key("/t2")) <= 3600
    cache.set("/t3", b"x", ttl=0.05)
    time.sleep(0.1)
    assert cache.get("/t3") is None


def test_purge_purge_tag_list(cache: rcache.RCache) -> None:
    for p in ("/shop/1", "/shop/1/reviews", "/shop/10", "/blog"):
        cache.set(p, b"x", tags=[p.split("/")[1]])
    cache.set("/shop/1", b"x", query="page=2")
    assert cache.list("/") == [b"/blog", b"/shop/1", b"/shop/1/reviews", b"/shop/10"]
    assert cache.list("/shop", count=2) == [b"/shop/1", b"/shop/1/reviews"]
    assert cache.list("/shop", count=2, after="/shop/1/reviews") == [b"/shop/10"]
    assert list(cache.iter_paths("/", page_size=1)) == cache.list("/")
    assert cache.purge("/shop/1", exact=True) == 2
    assert cache.purge("/shop/1") == 1
    assert cache.purge_tag("nope") == 0
    assert cache.purge_tag("shop", "blog") == 2
    assert cache.purge_tag() == 0
    assert cache.list("/") == []


def test_info_and_key(cache: rcache.RCache) -> None:
    before = cache.info()
    cache.set("/i", b"x", tags="t")
    cache.get("/i")
    cache.get("/missing")
    info = cache.info()
    assert info["sets"] - before["sets"] == 1
    assert info["hits"] - before["hits"] == 1
    assert info["misses"] - before["misses"] == 1
    assert info["entries"] == 1 and info["paths"] == 1 and info["tags"] == 1
    key = cache.key("/i")
    assert key.startswith(b"rcache:") and b"/i" in key


def test_pipeline(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=True)
    c = rcache.RCache(pipe)
    c.set("/p", b"1", tags="t")
    c.get("/p")
    c.purge_tag("t")
    c.purge_tag()  # nothing sent
    c.get("/p")
    assert pipe.execute() == [b"OK", b"1", 1, None]


def test_errors_come_back_as_response_errors(cache: rcache.RCache) -> None:
    with pytest.raises(redis.ResponseError):
        cache.set("/a?b", b"x")
    with pytest.raises(redis.ResponseError):
        cache.list("/", count=0)


def test_lookup_and_v3_set_options(cache: rcache.RCache, r: redis.Redis) -> None:
    assert cache.lookup("/l") == rcache.Lookup("MISS", None, None, None, None, None)
    assert cache.set("/l", b"v", ttl=60, grace=30, etag="e1", jitter=0) is True
    found = cache.lookup("/l", if_none_match="nope")
    assert (found.state, found.value, found.etag, found.ttl > 55_000) == ("FRESH", b"v", b"e1", True)
    assert 0 <= found.age < 5_000 and not found.not_modified
    assert cache.lookup("/l", if_none_match="e1").not_modified
    assert 85_000 < r.pttl(cache.key("/l")) <= 90_000  # the key lives to the end of grace
    assert cache.soft_purge("/l") == 1
    assert cache.lookup("/l").state == "STALE" and cache.get("/l") is None
    cache.set("/t", b"v", tags="t")
    assert cache.soft_purge_tag("t") == 1  # grace 0: removed
    assert cache.lookup("/t").state == "MISS"
    with pytest.raises(ValueError):
        cache.lookup("/l", lease=0)
    pipe = r.pipeline()
    rcache.RCache(pipe).lookup("/l")
    assert rcache.parse_lookup(pipe.execute()[0]).state == "STALE"


def test_async_client(redis_server) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    import redis.asyncio as aredis

    async def run() -> None:
        conn = aredis.Redis(host="127.0.0.1", port=redis_server.port)
        c = rcache.AsyncRCache(conn)
        await conn.flushall()
        assert await c.set("/a/1", b"x", ttl=60, tags=["t"]) is True
        assert await c.get("/a/1") == b"x"
        assert (await c.lookup("/a/1")).state == "FRESH"
        assert (await c.key("/a/1")).startswith(b"rcache:")
        assert await c.list("/a") == [b"/a/1"]
        assert await c.soft_purge("/a") == 1
        await c.set("/a/2", b"x", tags=["t"])
        assert await c.purge_tag("t") == 1
        assert await c.soft_purge_tag() == 0
        await c.set("/a/3", b"x")
        assert await c.delete("/a/3") == 1
        assert await c.purge("/a") == 0
        assert await c.wait(0, 0) == 0
        assert (await c.info())["entries"] == 0
        await conn.aclose()

    asyncio.run(run())
