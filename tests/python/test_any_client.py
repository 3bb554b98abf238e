"""The "any language" proof: every RCACHE command driven by a generic Redis client.

Uses redis-py's generic ``execute_command`` only (no rcache package) and a tiny raw
RESP reader for error replies, so the exact error prefix (``ERR``, ``WRONGTYPE``,
``NOPERM``) is checked as any client would see it.  The server comes from
``rcache_server.py`` (a throw-away redis-server with the module loaded).
"""

from __future__ import annotations

import socket
import time
from typing import Any, List, Optional

import pytest
import redis

from rcache_server import RedisServer

FIELDS = [
    "entries", "paths", "tags", "index_bytes", "hits", "misses", "sets", "dels", "purges",
    "purged_entries", "tag_purges", "tag_purged_entries", "index_removals_expired",
    "index_removals_evicted", "index_removals_other", "purge_max_us",
]
ALL_BYTES = bytes(range(256))
MIB = (ALL_BYTES * 4096)[: 1 << 20]


# -- helpers -----------------------------------------------------------------------


class Raw:
    """Minimal RESP2 client: sends one command, returns the parsed reply; errors as RawError."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.sock.makefile("rb")

    def close(self) -> None:
        self.f.close()
        self.sock.close()

    def __call__(self, *args: Any) -> Any:
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        self.sock.sendall(out)
        return self._read()

    def _read(self) -> Any:
        line = self.f.readline()
        assert line.endswith(b"\r\n"), line
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RawError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise AssertionError(f"unexpected reply {line!r}")


class RawError(str):
    pass


@pytest.fixture()
def raw(redis_server: RedisServer, r: redis.Redis):  # type: ignore[no-untyped-def]
    c = Raw(redis_server.port)
    try:
        yield c
    finally:
        c.close()


def cmd(r: redis.Redis, *args: Any) -> Any:
    return r.execute_command(*args)


def err(raw: Raw, *args: Any, prefix: str = "ERR") -> str:
    reply = raw(*args)
    assert isinstance(reply, RawError), f"{args!r} -> {reply!r}, expected an error"
    assert reply.startswith(prefix + " "), f"{args!r} -> {reply!r}, expected {prefix} ..."
    return reply


def info(r: redis.Redis) -> dict:
    return dict(r.info("rcache"))  # redis-py parses "rcache_entries:3" lines into a dict


def counters(r: redis.Redis) -> dict:
    i = info(r)
    return {f: int(i["rcache_" + f]) for f in FIELDS}


def crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def slot(key: bytes) -> int:
    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1 : e]
    return crc16(key) % 16384


def key_of(r: redis.Redis, path: bytes | str, *opts: Any) -> bytes:
    return cmd(r, "RCACHE.KEY", path, *opts)


# -- SET / GET / DEL -----------------------------------------------------------------


def test_set_get_del_exact_replies(r: redis.Redis) -> None:
    assert cmd(r, "RCACHE.SET", "/a", "hello") == b"OK"
    assert cmd(r, "RCACHE.GET", "/a") == b"hello"
    assert cmd(r, "RCACHE.GET", "/b") is None
    assert cmd(r, "RCACHE.SET", "/a", "again") == b"OK"
    assert cmd(r, "RCACHE.GET", "/a") == b"again"
    assert cmd(r, "RCACHE.DEL", "/a") == 1
    assert cmd(r, "RCACHE.DEL", "/a") == 0
    assert cmd(r, "RCACHE.GET", "/a") is None


@pytest.mark.parametrize("value", [ALL_BYTES, b"", MIB, b"\x00", b"\r\n$-1\r\n"], ids=["256", "empty", "1MiB", "nul", "resp"])
def test_binary_values(r: redis.Redis, value: bytes) -> None:
    assert cmd(r, "RCACHE.SET", "/bin", value) == b"OK"
    assert cmd(r, "RCACHE.GET", "/bin") == value
    assert cmd(r, "RCACHE.SET", "/bin", value, "QUERY", ALL_BYTES, "VARY", 1, "x", ALL_BYTES, "TAGS", 1, "t") == b"OK"
    assert cmd(r, "RCACHE.GET", "/bin", "QUERY", ALL_BYTES, "VARY", 1, "x", ALL_BYTES) == value
    # the entry is a plain Redis string key named by RCACHE.KEY
    assert r.type(key_of(r, "/bin")) == b"string"


def test_ex_px_and_default_ttl(r: redis.Redis) -> None:
    assert cmd(r, "RCACHE.SET", "/ex", "v", "EX", 100) == b"OK"
    assert 98 <= r.ttl(key_of(r, "/ex")) <= 100
    assert cmd(r, "RCACHE.SET", "/px", "v", "PX", 1500) == b"OK"
    assert 1000 < r.pttl(key_of(r, "/px")) <= 1500
    assert cmd(r, "RCACHE.SET", "/none", "v") == b"OK"
    assert r.ttl(key_of(r, "/none")) == -1
    assert cmd(r, "RCACHE.SET", "/ex", "v2") == b"OK"  # replacing without EX: default TTL (none)
    assert r.ttl(key_of(r, "/ex")) == -1


@pytest.mark.parametrize(
    "opts",
    [
        ["EX", 0], ["EX", -1], ["EX", "1.5"], ["EX", "abc"], ["EX", "99999999999999999999"],
        ["PX", 0], ["PX", -5], ["PX", "x"], ["EX", 10, "PX", 100], ["EX", 10, "EX", 10],
        ["EX"], ["QUERY"], ["QUERY", "a", "QUERY", "a"], ["VARY", 1, "a", "1", "VARY", 1, "b", "2"],
        ["TAGS", 1, "a", "TAGS", 1, "b"], ["NOPE"], ["EX", 10, "extra"],
    ],
)
def test_set_option_errors_change_nothing(r: redis.Redis, raw: Raw, opts: List[Any]) -> None:
    before = counters(r)
    err(raw, "RCACHE.SET", "/o", "v", *opts)
    assert cmd(r, "RCACHE.GET", "/o") is None
    assert r.dbsize() == 0
    after = counters(r)
    assert after["sets"] == before["sets"]


def test_options_any_order_any_case(r: redis.Redis) -> None:
    assert cmd(r, "RCACHE.SET", "/c", "v", "tags", 1, "t", "query", "q=1", "Vary", 1, "A", "b", "ex", 50) == b"OK"
    assert cmd(r, "RCACHE.GET", "/c", "vary", 1, "a", "b", "QUERY", "q=1") == b"v"
    assert cmd(r, "RCACHE.GET", "/c", "Query", "q=1", "VARY", 1, "a", "b") == b"v"
    assert 0 < r.ttl(key_of(r, "/c", "QUERY", "q=1", "VARY", 1, "a", "b")) <= 50
    assert cmd(r, "RCACHE.PURGETAG", "t") == 1


def test_get_and_del_option_errors(raw: Raw) -> None:
    for c in ("RCACHE.GET", "RCACHE.DEL", "RCACHE.KEY"):
        err(raw, c)
        err(raw, c, "/a", "EX", 10)
        err(raw, c, "/a", "TAGS", 1, "t")
        err(raw, c, "/a", "QUERY")
        err(raw, c, "/a", "QUERY", "a", "QUERY", "b")
        err(raw, c, "/a", "VARY", 2, "a", "1")


def test_wrong_key_contents(r: redis.Redis, raw: Raw) -> None:
    k = key_of(r, "/w")
    r.rpush(k, "x")
    err(raw, "RCACHE.GET", "/w", prefix="WRONGTYPE")
    assert cmd(r, "RCACHE.DEL", "/w") == 1  # whatever a user put at its key
    assert r.exists(k) == 0
    r.set(k, "not an entry")
    err(raw, "RCACHE.GET", "/w", prefix="ERR")
    r.rpush(key_of(r, "/w2"), "x")
    assert cmd(r, "RCACHE.SET", "/w2", "v") == b"OK"  # replaces, as SET would
    assert cmd(r, "RCACHE.GET", "/w2") == b"v"
    assert r.ping()


def test_expired_entries_are_gone_for_every_command(r: redis.Redis) -> None:
    cmd(r, "RCACHE.SET", "/exp/a", "v", "PX", 50, "TAGS", 1, "t")
    cmd(r, "RCACHE.SET", "/exp/b", "v", "PX", 50, "TAGS", 1, "t")
    cmd(r, "RCACHE.SET", "/exp/c", "v", "PX", 50, "TAGS", 1, "t")
    cmd(r, "RCACHE.SET", "/exp/live", "v", "TAGS", 1, "t")
    time.sleep(0.12)
    assert cmd(r, "RCACHE.GET", "/exp/a") is None
    assert cmd(r, "RCACHE.DEL", "/exp/b") == 0
    assert cmd(r, "RCACHE.PURGETAG", "t") == 1
    cmd(r, "RCACHE.SET", "/exp/d", "v", "PX", 50)
    time.sleep(0.12)
    assert cmd(r, "RCACHE.PURGE", "/exp") == 0


# -- variants: QUERY and VARY --------------------------------------------------------


def test_query_rules(r: redis.Redis, raw: Raw) -> None:
    base = key_of(r, "/q")
    assert key_of(r, "/q", "QUERY", "") == base
    assert key_of(r, "/q", "QUERY", "?") == base
    assert key_of(r, "/q", "QUERY", "?a=1") == key_of(r, "/q", "QUERY", "a=1")
    assert key_of(r, "/q", "QUERY", "??a=1") != key_of(r, "/q", "QUERY", "?a=1")  # only one "?" is removed
    assert key_of(r, "/q", "QUERY", "??a=1") != key_of(r, "/q", "QUERY", "a=1")
    assert key_of(r, "/q", "QUERY", "a=1&b=2") != key_of(r, "/q", "QUERY", "b=2&a=1")
    cmd(r, "RCACHE.SET", "/q", "plain")
    cmd(r, "RCACHE.SET", "/q", "with", "QUERY", "?a=1")
    assert cmd(r, "RCACHE.GET", "/q", "QUERY", "a=1") == b"with"
    assert cmd(r, "RCACHE.GET", "/q", "QUERY", "?") == b"plain"
    big = b"x" * 65536
    assert cmd(r, "RCACHE.SET", "/q", "big", "QUERY", big) == b"OK"
    assert cmd(r, "RCACHE.GET", "/q", "QUERY", big) == b"big"
    err(raw, "RCACHE.SET", "/q", "v", "QUERY", big + b"x")


def test_vary_rules(r: redis.Redis, raw: Raw) -> None:
    k = lambda *pairs: key_of(r, "/v", "VARY", len(pairs) // 2, *pairs)  # noqa: E731
    assert k("a", "1", "b", "2") == k("b", "2", "a", "1")
    assert k("Accept", "x") == k("accept", "x") == k("ACCEPT", "x")
    assert k("a", "X") != k("a", "x")
    assert k("a", "1", "a", "1") != k("a", "1")
    assert k("a", "1", "a", "2") == k("a", "2", "a", "1")
    assert k("a", "bc") != k("ab", "c")
    assert k("a", "") != key_of(r, "/v")
    assert k("a", "", "b", "") != k("a", "b")
    assert key_of(r, "/v", "QUERY", "a=1") != k("a", "1")
    cmd(r, "RCACHE.SET", "/v", "one", "VARY", 2, "Accept-Language", "fr", "X", "1")
    assert cmd(r, "RCACHE.GET", "/v", "VARY", 2, "x", "1", "accept-language", "fr") == b"one"
    assert cmd(r, "RCACHE.GET", "/v", "VARY", 1, "accept-language", "fr") is None
    assert cmd(r, "RCACHE.GET", "/v") is None
    for bad in (
        ["VARY", 0], ["VARY", 1], ["VARY", 1, "a"], ["VARY", 2, "a", "1"], ["VARY", 1, "a", "1", "b"],
        ["VARY", -1, "a", "1"], ["VARY", "x", "a", "1"], ["VARY", 1, "", "1"], ["VARY", 1, "a\x01", "1"],
        ["VARY", 1, "n" * 1025, "1"],
    ):
        err(raw, "RCACHE.SET", "/v2", "v", *bad)
        err(raw, "RCACHE.GET", "/v2", *bad)
    assert cmd(r, "RCACHE.SET", "/v2", "v", "VARY", 1, "n" * 1024, "") == b"OK"
    pairs32 = [x for i in range(32) for x in (f"h{i}", "v")]
    assert cmd(r, "RCACHE.SET", "/v3", "v", "VARY", 32, *pairs32) == b"OK"
    err(raw, "RCACHE.SET", "/v3", "v", "VARY", 33, *pairs32, "h32", "v")  # rcache.max-vary 32


# -- paths and keys ------------------------------------------------------------------


BAD_PATHS = [b"", b"/a?b", b"?", b"/a\x00b", b"/a\x1f", b"/a\x7f", b"/a{b", b"/a}b", b"/{}", b"/{a}{b}", b"/}a{", b"/" + b"x" * 65536]


def test_path_rules_for_every_command(r: redis.Redis, raw: Raw) -> None:
    for p in BAD_PATHS:
        err(raw, "RCACHE.SET", p, "v")
        err(raw, "RCACHE.GET", p)
        err(raw, "RCACHE.DEL", p)
        err(raw, "RCACHE.KEY", p)
        err(raw, "RCACHE.PURGE", p)
        if p:  # LIST "" lists every path
            err(raw, "RCACHE.LIST", p)
        err(raw, "RCACHE.LIST", "/", "AFTER", p)
    # rcache.max-path-len (4096) limits what SET stores; the others take up to 65536.
    long = b"/" + b"x" * 4096
    err(raw, "RCACHE.SET", long, "v")
    assert cmd(r, "RCACHE.GET", long) is None
    assert cmd(r, "RCACHE.DEL", long) == 0
    assert cmd(r, "RCACHE.PURGE", long) == 0
    assert cmd(r, "RCACHE.LIST", long, "AFTER", long) == []
    assert cmd(r, "RCACHE.LIST", "") == []
    assert r.dbsize() == 0
    for p in (b"/", b"x", b"/" + b"x" * 4095, b"{shop1}/products/7", b"/a/{b}/c", "/caf\u00e9".encode(), b"/a b"):
        assert cmd(r, "RCACHE.SET", p, "v") == b"OK", p
        assert cmd(r, "RCACHE.GET", p) == b"v", p


def test_keys_are_readable_distinct_and_slotted(r: redis.Redis) -> None:
    paths = [b"/tournament/5/bracket", b"shop.example.com/products/7", b"{shop1}/products/7", b"/a/{b}/c", b"/"]
    seen = set()
    for p in paths:
        for opts in ([], ["QUERY", "a=1"], ["VARY", 1, "a", "1"], ["QUERY", "a=1", "VARY", 1, "a", "1"]):
            k = key_of(r, p, *opts)
            assert k.startswith(b"rcache:"), k
            assert p in k, (p, k)
            assert slot(k) == slot(p), (p, k)
            assert k not in seen
            seen.add(k)
            assert cmd(r, "RCACHE.SET", p, "v", *opts) == b"OK"
            assert r.exists(k) == 1
    # a plain redis-server could load these: every key is a string
    assert {r.type(k) for k in r.keys("*")} == {b"string"}


def test_commands_declare_keys_and_flags(raw: Raw) -> None:
    assert raw("COMMAND", "GETKEYS", "RCACHE.SET", "/p", "v", "EX", "1") == [b"/p"]
    assert raw("COMMAND", "GETKEYS", "RCACHE.GET", "/p") == [b"/p"]
    assert raw("COMMAND", "GETKEYS", "RCACHE.LIST", "/p", "COUNT", "5") == [b"/p"]
    assert raw("COMMAND", "GETKEYS", "RCACHE.PURGE", "/p", "EXACT") == [b"/p"]
    assert raw("COMMAND", "GETKEYS", "RCACHE.KEY", "/p") == [b"/p"]
    infos = raw("COMMAND", "INFO", "rcache.set", "rcache.get", "rcache.del", "rcache.purge",
                "rcache.purgetag", "rcache.list", "rcache.key")
    flags = {}
    for entry in infos:
        assert entry is not None
        flags[entry[0]] = set(entry[2])
    assert {b"write", b"denyoom"} <= flags[b"rcache.set"]
    assert {b"readonly", b"fast"} <= flags[b"rcache.get"]
    assert b"write" in flags[b"rcache.del"] and b"write" in flags[b"rcache.purge"]
    assert b"write" in flags[b"rcache.purgetag"]
    assert b"readonly" in flags[b"rcache.list"]
    assert {b"readonly", b"fast"} <= flags[b"rcache.key"]


# -- PURGE -----------------------------------------------------------------------------


def _fill(r: redis.Redis, paths: List[str]) -> None:
    for p in paths:
        assert cmd(r, "RCACHE.SET", p, "v") == b"OK"


def _alive(r: redis.Redis, paths: List[str]) -> List[str]:
    return [p for p in paths if cmd(r, "RCACHE.GET", p) is not None]


@pytest.mark.parametrize(
    "prefix,covered,not_covered",
    [
        ("/tournament/5", ["/tournament/5", "/tournament/5/", "/tournament/5/bracket", "/tournament/5/a/b"],
         ["/tournament/50", "/tournament/5x", "/tournament"]),
        ("/tournament/5/", ["/tournament/5", "/tournament/5/", "/tournament/5/bracket", "/tournament/5/a/b"],
         ["/tournament/50", "/tournament/5x", "/tournament"]),
        ("/", ["/", "/a", "/tournament/5", "//x"], ["shop.example.com/x", "x"]),
        ("shop.example.com", ["shop.example.com", "shop.example.com/products/7"], ["shop.example.community/x", "/shop.example.com"]),
        ("/a//", ["/a/", "/a//x"], ["/a/b", "/a"]),
        ("{s1}/p", ["{s1}/p", "{s1}/p/1"], ["{s1}/pp", "{s2}/p"]),
    ],
)
def test_purge_coverage(r: redis.Redis, prefix: str, covered: List[str], not_covered: List[str]) -> None:
    _fill(r, covered + not_covered)
    cmd(r, "RCACHE.SET", covered[0], "variant", "QUERY", "x=1")
    before = counters(r)
    assert cmd(r, "RCACHE.PURGE", prefix) == len(covered) + 1
    assert _alive(r, covered) == []
    assert _alive(r, not_covered) == not_covered
    after = counters(r)
    assert after["purges"] - before["purges"] == 1
    assert after["purged_entries"] - before["purged_entries"] == len(covered) + 1
    assert cmd(r, "RCACHE.PURGE", prefix) == 0


def test_purge_exact(r: redis.Redis, raw: Raw) -> None:
    _fill(r, ["/a", "/a/", "/a/b"])
    cmd(r, "RCACHE.SET", "/a", "v", "VARY", 1, "x", "y")
    assert cmd(r, "RCACHE.PURGE", "/a/", "EXACT") == 1
    assert _alive(r, ["/a", "/a/", "/a/b"]) == ["/a", "/a/b"]
    assert cmd(r, "RCACHE.PURGE", "/a", "exact") == 2
    assert _alive(r, ["/a", "/a/b"]) == ["/a/b"]
    err(raw, "RCACHE.PURGE", "/a", "EXACT", "EXACT")
    err(raw, "RCACHE.PURGE", "/a", "NOPE")
    err(raw, "RCACHE.PURGE")


# -- TAGS and PURGETAG -------------------------------------------------------------------


def test_purgetag(r: redis.Redis, raw: Raw) -> None:
    cmd(r, "RCACHE.SET", "/x/1", "v", "TAGS", 2, "article:1", "list")
    cmd(r, "RCACHE.SET", "/x/2", "v", "TAGS", 1, "article:2")
    cmd(r, "RCACHE.SET", "shop/3", "v", "TAGS", 2, "list", "list")
    cmd(r, "RCACHE.SET", "/x/1", "v", "QUERY", "p=2", "TAGS", 1, "article:1")
    cmd(r, "RCACHE.SET", "/untagged", "v")
    before = counters(r)
    assert cmd(r, "RCACHE.PURGETAG", "article:1", "list") == 3
    assert _alive(r, ["/x/1", "/x/2", "shop/3", "/untagged"]) == ["/x/2", "/untagged"]
    assert cmd(r, "RCACHE.PURGETAG", "unknown") == 0
    assert cmd(r, "RCACHE.PURGETAG", "article:2", "article:2") == 1
    after = counters(r)
    assert after["tag_purges"] - before["tag_purges"] == 3
    assert after["tag_purged_entries"] - before["tag_purged_entries"] == 4
    err(raw, "RCACHE.PURGETAG")
    err(raw, "RCACHE.PURGETAG", "")
    err(raw, "RCACHE.PURGETAG", "ok", "bad\x01")
    err(raw, "RCACHE.PURGETAG", "t" * 1025)


def test_set_replaces_tags(r: redis.Redis) -> None:
    cmd(r, "RCACHE.SET", "/rt", "v", "TAGS", 1, "old")
    cmd(r, "RCACHE.SET", "/rt", "v", "TAGS", 1, "new")
    assert cmd(r, "RCACHE.PURGETAG", "old") == 0
    assert cmd(r, "RCACHE.PURGETAG", "new") == 1
    cmd(r, "RCACHE.SET", "/rt", "v", "TAGS", 1, "t")
    cmd(r, "RCACHE.SET", "/rt", "v")
    assert cmd(r, "RCACHE.PURGETAG", "t") == 0


def test_tag_rules(r: redis.Redis, raw: Raw) -> None:
    for bad in (["TAGS", 0], ["TAGS", 1], ["TAGS", 2, "a"], ["TAGS", 1, "a", "b"], ["TAGS", 1, ""],
                ["TAGS", 1, "a\nb"], ["TAGS", 1, "t" * 1025], ["TAGS", "x", "a"]):
        err(raw, "RCACHE.SET", "/t", "v", *bad)
    assert r.dbsize() == 0
    assert cmd(r, "RCACHE.SET", "/t", "v", "TAGS", 1, "t" * 1024) == b"OK"
    tags64 = [f"t{i}" for i in range(64)]
    assert cmd(r, "RCACHE.SET", "/t", "v", "TAGS", 64, *tags64) == b"OK"
    err(raw, "RCACHE.SET", "/t", "v", "TAGS", 65, *tags64, "t64")
    # a repeated tag counts once against rcache.max-tags
    assert cmd(r, "RCACHE.SET", "/t", "v", "TAGS", 65, *tags64, "t0") == b"OK"


# -- LIST ------------------------------------------------------------------------------


def test_list(r: redis.Redis, raw: Raw) -> None:
    paths = ["/b", "/a/2", "/a/10", "/a", "/a/1", "/ab", "x/y"]
    _fill(r, paths)
    cmd(r, "RCACHE.SET", "/a", "v", "QUERY", "q")  # a variant: the path is listed once
    assert cmd(r, "RCACHE.LIST", "/") == [b"/a", b"/a/1", b"/a/10", b"/a/2", b"/ab", b"/b"]
    assert cmd(r, "RCACHE.LIST", "/a") == [b"/a", b"/a/1", b"/a/10", b"/a/2"]
    assert cmd(r, "RCACHE.LIST", "/a/") == [b"/a", b"/a/1", b"/a/10", b"/a/2"]
    assert cmd(r, "RCACHE.LIST", "x") == [b"x/y"]
    assert cmd(r, "RCACHE.LIST", "/nothing") == []
    assert cmd(r, "RCACHE.LIST", "/", "COUNT", 2) == [b"/a", b"/a/1"]
    assert cmd(r, "RCACHE.LIST", "/", "COUNT", 2, "AFTER", "/a/1") == [b"/a/10", b"/a/2"]
    assert cmd(r, "RCACHE.LIST", "/", "after", "/a/10", "count", 10) == [b"/a/2", b"/ab", b"/b"]
    assert cmd(r, "RCACHE.LIST", "/", "AFTER", "/a/0") == [b"/a/1", b"/a/10", b"/a/2", b"/ab", b"/b"]
    assert cmd(r, "RCACHE.LIST", "/", "AFTER", "/b") == []
    assert cmd(r, "RCACHE.LIST", "/", "COUNT", 10000) == [b"/a", b"/a/1", b"/a/10", b"/a/2", b"/ab", b"/b"]
    for bad in (["COUNT", 0], ["COUNT", 10001], ["COUNT", -1], ["COUNT", "x"], ["COUNT"], ["AFTER"],
                ["COUNT", 1, "COUNT", 1], ["AFTER", "/a", "AFTER", "/b"], ["NOPE"], ["AFTER", "/a?b"]):
        err(raw, "RCACHE.LIST", "/", *bad)
    err(raw, "RCACHE.LIST")


def test_list_default_count_and_paging(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(250):
        pipe.execute_command("RCACHE.SET", f"/p/{i:04d}", "v")
    assert pipe.execute() == [b"OK"] * 250
    page = cmd(r, "RCACHE.LIST", "/p")
    assert len(page) == 100 and page[0] == b"/p/0000" and page[-1] == b"/p/0099"
    got: List[bytes] = []
    after: Optional[bytes] = None
    while True:
        args = ["RCACHE.LIST", "/p", "COUNT", 64] + (["AFTER", after] if after else [])
        page = cmd(r, *args)
        got += page
        if len(page) < 64:
            break
        after = page[-1]
    assert got == [f"/p/{i:04d}".encode() for i in range(250)]


# -- pipelines -------------------------------------------------------------------------


@pytest.mark.parametrize("transaction", [False, True], ids=["pipeline", "multi"])
def test_pipelines(r: redis.Redis, transaction: bool) -> None:
    pipe = r.pipeline(transaction=transaction)
    pipe.execute_command("RCACHE.SET", "/pl/a", ALL_BYTES, "TAGS", 1, "t")
    pipe.execute_command("RCACHE.SET", "/pl/b", b"", "QUERY", "x", "EX", 100)
    pipe.execute_command("RCACHE.SET", "/pl/c", MIB, "VARY", 1, "k", "v")
    pipe.execute_command("RCACHE.GET", "/pl/a")
    pipe.execute_command("RCACHE.GET", "/pl/b", "QUERY", "x")
    pipe.execute_command("RCACHE.GET", "/pl/c", "VARY", 1, "K", "v")
    pipe.execute_command("RCACHE.LIST", "/pl")
    pipe.execute_command("RCACHE.KEY", "/pl/a")
    pipe.execute_command("RCACHE.DEL", "/pl/b", "QUERY", "x")
    pipe.execute_command("RCACHE.PURGETAG", "t")
    pipe.execute_command("RCACHE.PURGE", "/pl")
    pipe.execute_command("RCACHE.GET", "/pl/c", "VARY", 1, "k", "v")
    replies = pipe.execute()
    assert replies[:7] == [b"OK", b"OK", b"OK", ALL_BYTES, b"", MIB, [b"/pl/a", b"/pl/b", b"/pl/c"]]
    assert replies[7].startswith(b"rcache:") and b"/pl/a" in replies[7]
    assert replies[8:] == [1, 1, 1, None]


def test_pipeline_with_an_error_in_the_middle(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    pipe.execute_command("RCACHE.SET", "/pe", "v")
    pipe.execute_command("RCACHE.SET", "/pe?", "v")
    pipe.execute_command("RCACHE.GET", "/pe")
    replies = pipe.execute(raise_on_error=False)
    assert replies[0] == b"OK" and isinstance(replies[1], redis.ResponseError) and replies[2] == b"v"


# -- INFO ------------------------------------------------------------------------------


def test_info_fields_and_counters(r: redis.Redis, raw: Raw) -> None:
    i = info(r)
    for f in FIELDS:
        assert "rcache_" + f in i, f
        assert int(i["rcache_" + f]) >= 0
    c0 = counters(r)
    cmd(r, "RCACHE.SET", "/i/a", "v", "TAGS", 2, "t1", "t2")
    cmd(r, "RCACHE.SET", "/i/a", "v", "QUERY", "x", "TAGS", 1, "t1")
    cmd(r, "RCACHE.SET", "/i/b", "v")
    c1 = counters(r)
    assert c1["sets"] - c0["sets"] == 3
    assert (c1["entries"], c1["paths"], c1["tags"]) == (3, 2, 2)
    assert c1["index_bytes"] > 0
    cmd(r, "RCACHE.GET", "/i/a")
    cmd(r, "RCACHE.GET", "/i/a", "QUERY", "x")
    cmd(r, "RCACHE.GET", "/i/zz")
    cmd(r, "RCACHE.DEL", "/i/zz")
    cmd(r, "RCACHE.DEL", "/i/b")
    raw("RCACHE.GET", "/bad?")  # rejected: moves no counter
    raw("RCACHE.SET", "/bad?", "v")
    raw("RCACHE.DEL", "/bad?")
    raw("RCACHE.PURGE", "/bad?")
    raw("RCACHE.PURGETAG", "")
    c2 = counters(r)
    assert c2["hits"] - c1["hits"] == 2
    assert c2["misses"] - c1["misses"] == 1
    assert c2["dels"] - c1["dels"] == 1
    assert c2["sets"] == c1["sets"] and c2["purges"] == c1["purges"] and c2["tag_purges"] == c1["tag_purges"]
    assert (c2["entries"], c2["paths"]) == (2, 1)
    cmd(r, "RCACHE.PURGE", "/i", "EXACT")
    c3 = counters(r)
    assert c3["purges"] - c2["purges"] == 1 and c3["purged_entries"] == c2["purged_entries"]
    cmd(r, "RCACHE.PURGETAG", "t2")
    c4 = counters(r)
    assert (c4["tag_purges"] - c3["tag_purges"], c4["tag_purged_entries"] - c3["tag_purged_entries"]) == (1, 1)
    assert (c4["entries"], c4["paths"], c4["tags"]) == (1, 1, 1)


def test_info_index_removals(r: redis.Redis) -> None:
    c0 = counters(r)
    cmd(r, "RCACHE.SET", "/r/1", "v")
    cmd(r, "RCACHE.SET", "/r/2", "v")
    cmd(r, "RCACHE.SET", "/r/3", "v")
    r.delete(key_of(r, "/r/1"))
    r.set(key_of(r, "/r/2"), "overwritten")
    c1 = counters(r)
    assert c1["index_removals_other"] - c0["index_removals_other"] == 2
    assert c1["entries"] == 1
    cmd(r, "RCACHE.SET", "/r/4", "v")
    r.flushdb()
    c2 = counters(r)
    assert c2["index_removals_other"] - c1["index_removals_other"] == 2  # per entry
    assert (c2["entries"], c2["paths"], c2["tags"]) == (0, 0, 0)
    assert cmd(r, "RCACHE.LIST", "/") == []
    cmd(r, "RCACHE.SET", "/r/e", "v", "PX", 20, "TAGS", 1, "t")
    time.sleep(0.05)
    assert r.exists(key_of(r, "/r/e")) == 0  # access expires it
    c3 = counters(r)
    assert c3["index_removals_expired"] - c2["index_removals_expired"] == 1
    assert (c3["entries"], c3["paths"], c3["tags"]) == (0, 0, 0)


def test_purge_max_us(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(2000):
        pipe.execute_command("RCACHE.SET", f"/m/{i}", "v", "TAGS", 1, "m")
    pipe.execute()
    assert cmd(r, "RCACHE.PURGE", "/m") == 2000
    assert counters(r)["purge_max_us"] > 0


# -- databases, configuration, ACL ---------------------------------------------------------


def test_databases_are_separate(redis_server: RedisServer, r: redis.Redis) -> None:
    db1 = redis_server.client(db=1)
    try:
        cmd(r, "RCACHE.SET", "/d", "zero", "TAGS", 1, "t")
        cmd(db1, "RCACHE.SET", "/d", "one", "TAGS", 1, "t")
        cmd(db1, "RCACHE.SET", "/d1only", "one")
        assert cmd(r, "RCACHE.GET", "/d") == b"zero" and cmd(db1, "RCACHE.GET", "/d") == b"one"
        assert cmd(r, "RCACHE.LIST", "/") == [b"/d"]
        assert cmd(db1, "RCACHE.LIST", "/") == [b"/d", b"/d1only"]
        assert counters(r)["entries"] == 3  # totals over all databases
        assert cmd(db1, "RCACHE.PURGE", "/d", "EXACT") == 1
        assert cmd(r, "RCACHE.GET", "/d") == b"zero"
        assert cmd(db1, "RCACHE.PURGETAG", "t") == 0
        assert cmd(r, "RCACHE.PURGETAG", "t") == 1
        assert cmd(db1, "RCACHE.GET", "/d1only") == b"one"
    finally:
        db1.close()


CONFIG_DEFAULTS = {"rcache.default-ttl": b"0", "rcache.max-path-len": b"4096", "rcache.max-tags": b"64", "rcache.max-vary": b"32"}


def test_config(r: redis.Redis, raw: Raw) -> None:
    for name, default in CONFIG_DEFAULTS.items():
        assert raw("CONFIG", "GET", name) == [name.encode(), default]
    try:
        assert raw("CONFIG", "SET", "rcache.default-ttl", 100) == b"OK"
        cmd(r, "RCACHE.SET", "/cfg", "v")
        assert 98 <= r.ttl(key_of(r, "/cfg")) <= 100
        cmd(r, "RCACHE.SET", "/cfg", "v", "EX", 5000)
        assert r.ttl(key_of(r, "/cfg")) > 4000
        assert raw("CONFIG", "SET", "rcache.max-path-len", 10) == b"OK"
        err(raw, "RCACHE.SET", "/123456789x", "v")
        assert cmd(r, "RCACHE.SET", "/123456789", "v") == b"OK"
        assert raw("CONFIG", "SET", "rcache.max-tags", 1) == b"OK"
        err(raw, "RCACHE.SET", "/t", "v", "TAGS", 2, "a", "b")
        assert cmd(r, "RCACHE.SET", "/t", "v", "TAGS", 2, "a", "a") == b"OK"
        assert raw("CONFIG", "SET", "rcache.max-vary", 1) == b"OK"
        err(raw, "RCACHE.GET", "/t", "VARY", 2, "a", "1", "b", "2")
        for name, bad in (("rcache.default-ttl", -1), ("rcache.default-ttl", 315360001), ("rcache.default-ttl", "x"),
                          ("rcache.max-path-len", 0), ("rcache.max-path-len", 65537), ("rcache.max-tags", 0),
                          ("rcache.max-tags", 1025), ("rcache.max-vary", 0), ("rcache.max-vary", 257),
                          ("rcache.nope", 1)):
            err(raw, "CONFIG", "SET", name, bad)
        assert raw("CONFIG", "GET", "rcache.max-tags") == [b"rcache.max-tags", b"1"]
    finally:
        for name, default in CONFIG_DEFAULTS.items():
            raw("CONFIG", "SET", name, default)


def test_loadmodule_arguments() -> None:
    from rcache_server import running_server

    with running_server(["default-ttl", "300", "max-tags", "2"]) as srv:
        c = srv.client()
        rc = Raw(srv.port)
        try:
            assert rc("CONFIG", "GET", "rcache.default-ttl") == [b"rcache.default-ttl", b"300"]
            assert rc("CONFIG", "GET", "rcache.max-tags") == [b"rcache.max-tags", b"2"]
            cmd(c, "RCACHE.SET", "/l", "v")
            assert 290 < c.ttl(key_of(c, "/l")) <= 300
        finally:
            rc.close()
            c.close()


def test_acl_noperm(redis_server: RedisServer, r: redis.Redis, raw: Raw) -> None:
    cmd(r, "RCACHE.SET", "/public/a", "v", "TAGS", 1, "pub")
    cmd(r, "RCACHE.SET", "/private/b", "v", "TAGS", 2, "priv", "mixed")
    cmd(r, "RCACHE.SET", "/public/c", "v", "TAGS", 1, "mixed")
    r.execute_command("ACL", "SETUSER", "limited", "on", "nopass", "~/public/*", "~/public", "+@all")
    try:
        assert raw("AUTH", "limited", "x") == b"OK"
        err(raw, "RCACHE.SET", "/private/x", "v", prefix="NOPERM")
        err(raw, "RCACHE.GET", "/private/b", prefix="NOPERM")
        assert raw("RCACHE.GET", "/public/a") == b"v"
        err(raw, "RCACHE.PURGE", "/", prefix="NOPERM")
        err(raw, "RCACHE.PURGETAG", "mixed", prefix="NOPERM")
        # nothing was removed by the refused purges
        assert cmd(r, "RCACHE.GET", "/private/b") == b"v" and cmd(r, "RCACHE.GET", "/public/c") == b"v"
        assert raw("RCACHE.PURGETAG", "pub") == 1
        assert raw("RCACHE.PURGE", "/public") == 1  # /public/c
        assert cmd(r, "RCACHE.GET", "/private/b") == b"v"
    finally:
        r.execute_command("ACL", "DELUSER", "limited")


def test_server_survives_bad_requests(r: redis.Redis, raw: Raw) -> None:
    for args in (["RCACHE.SET"], ["RCACHE.SET", "/a"], ["RCACHE.GET", "/a", "VARY", "99999999999999999999"],
                 ["RCACHE.SET", "/a", "v", "VARY", 2147483647, "a", "b"], ["RCACHE.LIST", "/", "COUNT", "1e3"],
                 ["RCACHE.SET", "/a", "v", "TAGS", -2147483648, "a"]):
        err(raw, *args)
    assert r.ping() is True and r.dbsize() == 0


# -- the index follows the keyspace ----------------------------------------------------------


def test_index_follows_rename_move_swapdb_restore(redis_server: RedisServer, r: redis.Redis) -> None:
    db1 = redis_server.client(db=1)
    try:
        cmd(r, "RCACHE.SET", "/k/renamed", "v", "TAGS", 1, "t")
        cmd(r, "RCACHE.SET", "/k/moved", "v", "TAGS", 1, "t")
        cmd(r, "RCACHE.SET", "/k/dumped", "v", "TAGS", 1, "t")
        cmd(r, "RCACHE.SET", "/k/kept", "v", "TAGS", 1, "t")
        r.rename(key_of(r, "/k/renamed"), "elsewhere")
        assert cmd(r, "RCACHE.GET", "/k/renamed") is None
        assert r.move(key_of(r, "/k/moved"), 1)
        assert cmd(r, "RCACHE.GET", "/k/moved") is None
        assert cmd(db1, "RCACHE.GET", "/k/moved") == b"v"  # the entry lives on in db 1
        dumped_key = key_of(r, "/k/dumped")
        dump = r.dump(dumped_key)
        r.delete(dumped_key)
        assert cmd(r, "RCACHE.LIST", "/k") == [b"/k/kept"]
        r.restore(dumped_key, 0, dump)
        assert cmd(r, "RCACHE.GET", "/k/dumped") == b"v"
        assert cmd(r, "RCACHE.LIST", "/k") == [b"/k/dumped", b"/k/kept"]
        r.swapdb(0, 1)
        assert cmd(r, "RCACHE.LIST", "/k") == [b"/k/moved"]
        assert cmd(db1, "RCACHE.LIST", "/k") == [b"/k/dumped", b"/k/kept"]
        assert cmd(db1, "RCACHE.PURGETAG", "t") == 2
        assert cmd(r, "RCACHE.PURGE", "/k") == 1
        assert db1.exists("elsewhere") == 1  # swapped to db 1; not an entry: no purge touches it
        assert counters(r)["entries"] == 0
    finally:
        db1.close()


@pytest.mark.parametrize(
    "args,name",
    [(["default-ttl", "-1"], "default-ttl"), (["max-path-len", "0"], "max-path-len"),
     (["max-tags", "x"], "max-tags"), (["max-vary", "257"], "max-vary"), (["no-such-setting", "1"], "no-such-setting")],
)
def test_loadmodule_rejects_bad_settings(tmp_path: Any, args: List[str], name: str) -> None:
    import os
    import subprocess

    from rcache_server import free_port, module_path

    log = tmp_path / "redis.log"
    proc = subprocess.run(
        [os.environ.get("REDIS_SERVER", "redis-server"), "--port", str(free_port()), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path), "--logfile", str(log),
         "--loadmodule", str(module_path()), *args],
        timeout=20, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert name in log.read_text(errors="replace")


def test_eviction_keeps_the_index_exact(r: redis.Redis, raw: Raw) -> None:
    big = b"x" * (256 * 1024)
    c0 = counters(r)
    try:
        raw("CONFIG", "SET", "maxmemory-policy", "allkeys-random")
        used = int(r.info("memory")["used_memory"])
        raw("CONFIG", "SET", "maxmemory", used + 8 * 1024 * 1024)
        for i in range(80):  # ~20 MiB into ~8 MiB of room: Redis must evict
            assert cmd(r, "RCACHE.SET", f"/ev/{i:03d}", big, "TAGS", 1, "ev") == b"OK"
        c1 = counters(r)
        assert c1["index_removals_evicted"] - c0["index_removals_evicted"] > 0
        alive = [p for p in cmd(r, "RCACHE.LIST", "/ev", "COUNT", 1000)]
        assert len(alive) == r.dbsize() == c1["entries"]
        assert all(cmd(r, "RCACHE.GET", p) == big for p in alive)
        assert cmd(r, "RCACHE.PURGETAG", "ev") == len(alive)
        # noeviction: a write that needs memory is refused with OOM (deny-oom), nothing changes
        raw("CONFIG", "SET", "maxmemory-policy", "noeviction")
        raw("CONFIG", "SET", "maxmemory", 1)
        err(raw, "RCACHE.SET", "/ev/oom", "v", prefix="OOM")
        assert raw("RCACHE.GET", "/ev/oom") is None
    finally:
        raw("CONFIG", "SET", "maxmemory", 0)
        raw("CONFIG", "SET", "maxmemory-policy", "noeviction")


def test_replica_applies_sets_and_purges(redis_server: RedisServer, r: redis.Redis, raw: Raw) -> None:
    from rcache_server import running_server

    raw("CONFIG", "SET", "repl-diskless-sync-delay", 0)
    cmd(r, "RCACHE.SET", "/rep/before", "v", "TAGS", 1, "t")
    with running_server() as rep_srv:
        rep = rep_srv.client()
        try:
            rep.execute_command("REPLICAOF", "127.0.0.1", redis_server.port)
            deadline = time.monotonic() + 15
            while rep.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "replica did not sync"
                time.sleep(0.05)
            cmd(r, "RCACHE.SET", "/rep/after", "v2", "QUERY", "q")
            cmd(r, "RCACHE.SET", "/rep/other", "v3")
            r.execute_command("WAIT", 1, 5000)
            assert cmd(rep, "RCACHE.GET", "/rep/before") == b"v"
            assert cmd(rep, "RCACHE.GET", "/rep/after", "QUERY", "q") == b"v2"
            assert cmd(rep, "RCACHE.LIST", "/rep") == [b"/rep/after", b"/rep/before", b"/rep/other"]
            assert cmd(r, "RCACHE.PURGETAG", "t") == 1
            assert cmd(r, "RCACHE.PURGE", "/rep/after") == 1
            r.execute_command("WAIT", 1, 5000)
            assert cmd(rep, "RCACHE.GET", "/rep/before") is None
            assert cmd(rep, "RCACHE.GET", "/rep/after", "QUERY", "q") is None
            assert cmd(rep, "RCACHE.LIST", "/rep") == [b"/rep/other"]
            assert int(rep.info("rcache")["rcache_entries"]) == 1
            with pytest.raises(redis.ReadOnlyError):
                cmd(rep, "RCACHE.SET", "/rep/x", "v")
        finally:
            rep.close()
