"""The rcache client: Python arguments mapped onto the RCACHE.* commands.

Every method sends exactly one command through ``execute_command`` of the
redis-py object it was given, so the same class works over a plain
``redis.Redis``, a ``redis.cluster.RedisCluster`` or a pipeline (in which case
the methods return the pipeline and the replies come from ``execute()``).
"""

from __future__ import annotations

import datetime as _dt
import random
from typing import (
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

Bytesish = Union[str, bytes, bytearray, memoryview]
"""A path, tag, name or value: ``str`` is sent UTF-8 encoded, bytes as given."""

TTL = Union[int, float, _dt.timedelta]
"""Seconds (``int``/``float``) or a ``timedelta``; sub-second precision uses PX."""

VaryValue = Union[Bytesish, int]
Vary = Union[
    Mapping[Bytesish, Union[VaryValue, Sequence[VaryValue]]],
    Iterable[Tuple[Bytesish, VaryValue]],
]
"""Either a mapping ``{name: value}`` (a list/tuple value adds one pair per item)
or an iterable of ``(name, value)`` pairs.  Order never matters to the module."""

Query = Union[Bytesish, Mapping[str, Any], Sequence[Tuple[str, Any]]]
"""A raw query string (``"a=1&b=2"``; one leading ``?`` is ignored by the module)
or a mapping / pair sequence, which is ``urllib.parse.urlencode``-d (``doseq``)."""

DEFAULT_MAX_PATH_LEN = 4096


def _b(value: Union[Bytesish, int]) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode("ascii")
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")


def path_error(path: Bytesish, max_len: int = DEFAULT_MAX_PATH_LEN) -> Optional[str]:
    """Why the module would refuse ``path`` as a path, or ``None`` if it is valid.

    Rules (from the command contract): 1..``max_len`` bytes, no ASCII control
    characters, no ``?``, and braces only as one non-empty hash tag ``{...}``.
    """
    p = _b(path)
    if not p:
        return "path is empty"
    if len(p) > max_len:
        return f"path is longer than {max_len} bytes"
    if any(c < 0x20 or c == 0x7F for c in p):
        return "path contains a control character"
    if b"?" in p:
        return "path contains '?' (pass the query string as query=)"
    opens, closes = p.count(b"{"), p.count(b"}")
    if opens or closes:
        if opens != 1 or closes != 1:
            return "path may contain braces only as one {hash tag}"
        i, j = p.index(b"{"), p.index(b"}")
        if j < i + 2:
            return "path hash tag must be '{' + at least one byte + '}'"
    return None


def validate_path(path: Bytesish, max_len: int = DEFAULT_MAX_PATH_LEN) -> bytes:
    """Return ``path`` as bytes, or raise ``ValueError`` if the module would refuse it."""
    err = path_error(path, max_len)
    if err is not None:
        raise ValueError(f"invalid rcache path {path!r}: {err}")
    return _b(path)


def _ttl_args(ttl: Optional[TTL]) -> List[bytes]:
    if ttl is None:
        return []
    if isinstance(ttl, bool):
        raise TypeError("ttl must be seconds or a timedelta, not bool")
    if isinstance(ttl, _dt.timedelta):
        ms = ttl // _dt.timedelta(milliseconds=1)
        if ttl % _dt.timedelta(milliseconds=1):
            raise ValueError("ttl has sub-millisecond precision")
        if ms <= 0:
            raise ValueError("ttl must be positive")
        if ms % 1000 == 0:
            return [b"EX", str(ms // 1000).encode()]
        return [b"PX", str(ms).encode()]
    if isinstance(ttl, int):
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        return [b"EX", str(ttl).encode()]
    if isinstance(ttl, float):
        ms_f = ttl * 1000.0
        if not ttl > 0 or ms_f != ms_f or ms_f == float("inf"):
            raise ValueError("ttl must be positive and finite")
        ms_i = round(ms_f)
        if ms_i < 1:
            raise ValueError("ttl must be at least one millisecond")
        if ms_i % 1000 == 0:
            return [b"EX", str(ms_i // 1000).encode()]
        return [b"PX", str(ms_i).encode()]
    raise TypeError(f"ttl must be int, float or timedelta, not {type(ttl).__name__}")


def _query_args(query: Optional[Query]) -> List[bytes]:
    if query is None:
        return []
    if isinstance(query, (str, bytes, bytearray, memoryview)):
        q = _b(query)
    else:
        from urllib.parse import urlencode

        q = urlencode(query, doseq=True).encode("ascii")
    if q in (b"", b"?"):
        return []  # the module treats these as "no query"; skip the option
    return [b"QUERY", q]


def _vary_pairs(vary: Optional[Vary]) -> List[Tuple[bytes, bytes]]:
    if vary is None:
        return []
    pairs: List[Tuple[bytes, bytes]] = []
    if isinstance(vary, Mapping):
        for name, value in vary.items():
            if isinstance(value, (list, tuple)):
                pairs.extend((_b(name), _b(v)) for v in value)
            else:
                pairs.append((_b(name), _b(value)))  # type: ignore[arg-type]
    else:
        for item in vary:
            name, value = item
            pairs.append((_b(name), _b(value)))
    return pairs


def _vary_args(vary: Optional[Vary]) -> List[bytes]:
    pairs = _vary_pairs(vary)
    if not pairs:
        return []
    args = [b"VARY", str(len(pairs)).encode()]
    for name, value in pairs:
        args += [name, value]
    return args


def _tag_args(tags: Optional[Union[Bytesish, Iterable[Bytesish]]]) -> List[bytes]:
    if tags is None:
        return []
    if isinstance(tags, (str, bytes, bytearray, memoryview)):
        tag_list = [_b(tags)]  # a single tag, not an iterable of characters
    else:
        tag_list = [_b(t) for t in tags]
    if not tag_list:
        return []
    return [b"TAGS", str(len(tag_list)).encode(), *tag_list]


def _variant_args(query: Optional[Query], vary: Optional[Vary]) -> List[bytes]:
    return _query_args(query) + _vary_args(vary)


def _ms_arg(name: str, value: Optional[float]) -> List[bytes]:
    """``LEASE``/``WAIT``: milliseconds, 1..3600000 (given in seconds here)."""
    if value is None:
        return []
    ms = round(value * 1000)
    if not 1 <= ms <= 3_600_000:
        raise ValueError(f"{name.lower()} must be between 0.001 and 3600 seconds")
    return [name.encode(), str(ms).encode()]


def _set_args(
    path: Bytesish,
    value: Bytesish,
    ttl: Optional[TTL],
    query: Optional[Query],
    vary: Optional[Vary],
    tags: Optional[Union[Bytesish, Iterable[Bytesish]]],
    grace: Optional[int],
    jitter: Optional[int],
    etag: Optional[Bytesish],
    lease: Optional[Bytesish],
) -> List[Any]:
    args: List[Any] = ["RCACHE.SET", _b(path), _b(value)]
    args += _ttl_args(ttl)
    if grace is not None:
        args += [b"GRACE", str(int(grace)).encode()]
    if jitter is not None:
        args += [b"JITTER", str(int(jitter)).encode()]
    if etag is not None:
        args += [b"ETAG", _b(etag)]
    if lease is not None:
        args += [b"LEASE", _b(lease)]
    return args + _variant_args(query, vary) + _tag_args(tags)


def _lookup_args(
    path: Bytesish,
    query: Optional[Query],
    vary: Optional[Vary],
    if_none_match: Optional[Bytesish],
    lease: Optional[float],
    wait: Optional[float],
) -> List[Any]:
    args: List[Any] = ["RCACHE.LOOKUP", _b(path), *_variant_args(query, vary)]
    if if_none_match is not None:
        args += [b"IFNONEMATCH", _b(if_none_match)]
    return args + _ms_arg("LEASE", lease) + _ms_arg("WAIT", wait)


def _purge_args(command: str, prefix: Bytesish, exact: bool) -> List[Any]:
    return [command, _b(prefix), *([b"EXACT"] if exact else [])]


def _list_args(prefix: Bytesish, count: Optional[int], after: Optional[Bytesish]) -> List[Any]:
    args: List[Any] = ["RCACHE.LIST", _b(prefix)]
    if count is not None:
        args += [b"COUNT", str(int(count)).encode()]
    if after is not None:
        args += [b"AFTER", _b(after)]
    return args


class Lookup(NamedTuple):
    """The reply of ``RCACHE.LOOKUP``.

    ``state`` is ``"FRESH"``, ``"STALE"`` or ``"MISS"``; ``value`` is ``None`` on a
    miss and when ``if_none_match`` equalled ``etag``; ``age``/``ttl`` are
    milliseconds (``ttl`` -1: fresh without a lifetime, 0: stale); ``lease`` is the
    token when this call was granted the lease to refill the entry.
    """

    state: str
    value: Optional[bytes]
    etag: Optional[bytes]
    age: Optional[int]
    ttl: Optional[int]
    lease: Optional[bytes]

    @property
    def not_modified(self) -> bool:
        return self.state != "MISS" and self.value is None


def parse_lookup(reply: Any) -> Lookup:
    """A ``RCACHE.LOOKUP`` reply (6-element array) as a :class:`Lookup`."""
    state, value, etag, age, ttl, lease = reply
    if isinstance(state, bytes):
        state = state.decode("ascii")
    return Lookup(str(state), value, etag, age, ttl, lease)


def _cluster_kwargs(conn: Any) -> Dict[str, Any]:
    """Keyless commands on a ``RedisCluster``: any one primary takes them (the module
    fans them out over the cluster); redis-py refuses them without a target."""
    get_primaries = getattr(conn, "get_primaries", None)
    if get_primaries is None or _is_pipeline(conn):
        return {}
    return {"target_nodes": random.choice(get_primaries())}


def _info_dict(raw: Mapping[str, Any]) -> Dict[str, Any]:
    return {k[len("rcache_"):] if k.startswith("rcache_") else k: v for k, v in raw.items()}


def _info_kwargs(conn: Any) -> Dict[str, Any]:
    """INFO on a ``RedisCluster``: every primary (the figures are summed)."""
    get_primaries = getattr(conn, "get_primaries", None)
    if get_primaries is None or _is_pipeline(conn):
        return {}
    return {"target_nodes": get_primaries()}


def _merge_info(raw: Mapping[str, Any], per_node: bool) -> Dict[str, Any]:
    """``INFO rcache`` as a dict without the ``rcache_`` prefix; from every primary of
    a cluster (``per_node``: redis-py's {node: fields}), counters and figures summed,
    ``purge_max_us`` the largest, ``module_version`` as any node reports it."""
    if not per_node:
        return _info_dict(raw)
    total: Dict[str, Any] = {}
    for fields in raw.values():
        for k, v in _info_dict(fields).items():
            if k == "purge_max_us":
                total[k] = max(int(total.get(k, 0)), int(v))
            elif isinstance(v, int) and k != "module_version":
                total[k] = int(total.get(k, 0)) + v
            else:
                total.setdefault(k, v)
    return total


def _is_pipeline(conn: Any) -> bool:
    return hasattr(conn, "command_stack")


def _ok(reply: Any) -> Any:
    if isinstance(reply, (bytes, str)):
        return reply in (b"OK", "OK")
    return reply  # a pipeline returns itself; the reply comes from execute()


def _const(conn: Any, value: Any) -> Any:
    return conn if _is_pipeline(conn) else value


def _ok_or_none(reply: Any) -> Any:
    """``SET ... LEASE`` replies nil when the lease no longer allows the store."""
    if reply is None:
        return False
    return _ok(reply)


class RCache:
    """Client for the rcache module over any redis-py connection.

    ``conn`` may be a ``redis.Redis``, ``redis.cluster.RedisCluster`` or a
    pipeline of either.  Values come back exactly as the connection returns
    bulk strings, so use a connection without ``decode_responses`` for bytes.

    Paths, tags, names and values accept ``str`` (sent as UTF-8) or bytes.
    Invalid arguments that the module would reject are sent anyway and come
    back as ``redis.ResponseError`` -- except for obviously malformed Python
    arguments (negative TTL, wrong types), which raise ``ValueError`` /
    ``TypeError`` before anything is sent.

    On a ``RedisCluster``, keyed commands are routed by the path (redis-py reads
    the key positions from the server's ``COMMAND`` table); the keyless
    ``purge_tag``/``soft_purge_tag`` go to one random primary, which has every primary
    do its part (as it does for a prefix without a hash tag), and ``info`` sums every
    primary's figures.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    # -- single entries -------------------------------------------------
    def set(
        self,
        path: Bytesish,
        value: Bytesish,
        ttl: Optional[TTL] = None,
        query: Optional[Query] = None,
        vary: Optional[Vary] = None,
        tags: Optional[Union[Bytesish, Iterable[Bytesish]]] = None,
        *,
        grace: Optional[int] = None,
        jitter: Optional[int] = None,
        etag: Optional[Bytesish] = None,
        lease: Optional[Bytesish] = None,
    ) -> Any:
        """``RCACHE.SET``: store ``value`` for (path, query, vary).  Returns ``True``
        (``False`` when ``lease`` no longer allows the store).

        ``ttl`` of ``None`` uses the module's ``rcache.default-ttl``; ``grace`` (s),
        ``jitter`` (%), ``etag`` and ``lease`` map to the options of the same name.
        """
        args = _set_args(path, value, ttl, query, vary, tags, grace, jitter, etag, lease)
        return _ok_or_none(self.conn.execute_command(*args))

    def get(self, path: Bytesish, query: Optional[Query] = None, vary: Optional[Vary] = None) -> Any:
        """``RCACHE.GET``: the stored value, or ``None`` when there is no fresh entry."""
        return self.conn.execute_command("RCACHE.GET", _b(path), *_variant_args(query, vary))

    def lookup(
        self,
        path: Bytesish,
        query: Optional[Query] = None,
        vary: Optional[Vary] = None,
        *,
        if_none_match: Optional[Bytesish] = None,
        lease: Optional[float] = None,
        wait: Optional[float] = None,
    ) -> Any:
        """``RCACHE.LOOKUP``: a :class:`Lookup` (state, value, etag, age, ttl, lease).

        ``lease`` and ``wait`` are seconds (sent as milliseconds).
        """
        reply = self.conn.execute_command(*_lookup_args(path, query, vary, if_none_match, lease, wait))
        return reply if _is_pipeline(self.conn) else parse_lookup(reply)

    def delete(self, path: Bytesish, query: Optional[Query] = None, vary: Optional[Vary] = None) -> Any:
        """``RCACHE.DEL``: remove one entry.  Returns 1 if it existed, else 0."""
        return self.conn.execute_command("RCACHE.DEL", _b(path), *_variant_args(query, vary))

    def key(self, path: Bytesish, query: Optional[Query] = None, vary: Optional[Vary] = None) -> Any:
        """``RCACHE.KEY``: the Redis key name that holds (or would hold) the entry."""
        return self.conn.execute_command("RCACHE.KEY", _b(path), *_variant_args(query, vary))

    # -- purges ------------------------------------------------------------
    def purge(self, prefix: Bytesish, exact: bool = False) -> Any:
        """``RCACHE.PURGE``: remove every entry under ``prefix`` (segment-wise).

        With ``exact=True`` only entries whose path is exactly ``prefix``
        (all their variants).  Returns the number of entries removed.
        """
        return self.conn.execute_command(*_purge_args("RCACHE.PURGE", prefix, exact))

    def soft_purge(self, prefix: Bytesish, exact: bool = False) -> Any:
        """``RCACHE.SOFTPURGE``: make the fresh entries under ``prefix`` stale (for
        their grace).  Returns the number of entries that were fresh."""
        return self.conn.execute_command(*_purge_args("RCACHE.SOFTPURGE", prefix, exact))

    def purge_tag(self, *tags: Bytesish) -> Any:
        """``RCACHE.PURGETAG``: remove every entry carrying any of ``tags``.

        Returns the number of entries removed (0 without any tag, and nothing is sent).
        """
        if not tags:
            return _const(self.conn, 0)
        return self.conn.execute_command("RCACHE.PURGETAG", *(_b(t) for t in tags), **_cluster_kwargs(self.conn))

    def soft_purge_tag(self, *tags: Bytesish) -> Any:
        """``RCACHE.SOFTPURGETAG``: soft-purge every entry carrying any of ``tags``."""
        if not tags:
            return _const(self.conn, 0)
        return self.conn.execute_command(
            "RCACHE.SOFTPURGETAG", *(_b(t) for t in tags), **_cluster_kwargs(self.conn)
        )

    def wait(self, replicas: int, timeout: float) -> Any:
        """``WAIT``: block until ``replicas`` replicas acknowledged this connection's
        writes, or ``timeout`` seconds passed.  Returns the number that did."""
        return self.conn.execute_command("WAIT", int(replicas), max(0, round(timeout * 1000)))

    def list(
        self,
        prefix: Bytesish = "/",
        count: Optional[int] = None,
        after: Optional[Bytesish] = None,
    ) -> Any:
        """``RCACHE.LIST``: up to ``count`` (module default 100, max 10000) distinct
        paths under ``prefix``, ascending, strictly after ``after``. The empty
        prefix ``""`` lists every path (the user needs access to every key)."""
        return self.conn.execute_command(*_list_args(prefix, count, after))

    def iter_paths(self, prefix: Bytesish = "/", page_size: int = 1000) -> Iterator[bytes]:
        """Every path under ``prefix``, paging through ``RCACHE.LIST ... AFTER``.

        Needs a connection, not a pipeline.
        """
        after: Optional[bytes] = None
        while True:
            page = self.list(prefix, count=page_size, after=after)
            for p in page:
                yield p
            if len(page) < page_size:
                return
            after = _b(page[-1])

    # -- introspection -------------------------------------------------------
    def info(self) -> Dict[str, Any]:
        """The ``INFO rcache`` section as a dict without the ``rcache_`` prefix.

        On a ``RedisCluster``, the whole cluster's: every primary's figures summed.
        """
        kwargs = _info_kwargs(self.conn)
        return _merge_info(self.conn.info("rcache", **kwargs), bool(kwargs))


class AsyncRCache:
    """The same commands over a ``redis.asyncio`` connection (``await`` each call)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def set(
        self,
        path: Bytesish,
        value: Bytesish,
        ttl: Optional[TTL] = None,
        query: Optional[Query] = None,
        vary: Optional[Vary] = None,
        tags: Optional[Union[Bytesish, Iterable[Bytesish]]] = None,
        *,
        grace: Optional[int] = None,
        jitter: Optional[int] = None,
        etag: Optional[Bytesish] = None,
        lease: Optional[Bytesish] = None,
    ) -> bool:
        args = _set_args(path, value, ttl, query, vary, tags, grace, jitter, etag, lease)
        return bool(_ok_or_none(await self.conn.execute_command(*args)))

    async def get(self, path: Bytesish, query: Optional[Query] = None, vary: Optional[Vary] = None) -> Any:
        return await self.conn.execute_command("RCACHE.GET", _b(path), *_variant_args(query, vary))

    async def lookup(
        self,
        path: Bytesish,
        query: Optional[Query] = None,
        vary: Optional[Vary] = None,
        *,
        if_none_match: Optional[Bytesish] = None,
        lease: Optional[float] = None,
        wait: Optional[float] = None,
    ) -> Lookup:
        reply = await self.conn.execute_command(*_lookup_args(path, query, vary, if_none_match, lease, wait))
        return parse_lookup(reply)

    async def delete(self, path: Bytesish, query: Optional[Query] = None, vary: Optional[Vary] = None) -> int:
        return int(await self.conn.execute_command("RCACHE.DEL", _b(path), *_variant_args(query, vary)))

    async def key(self, path: Bytesish, query: Optional[Query] = None, vary: Optional[Vary] = None) -> Any:
        return await self.conn.execute_command("RCACHE.KEY", _b(path), *_variant_args(query, vary))

    async def purge(self, prefix: Bytesish, exact: bool = False) -> int:
        return int(await self.conn.execute_command(*_purge_args("RCACHE.PURGE", prefix, exact)))

    async def soft_purge(self, prefix: Bytesish, exact: bool = False) -> int:
        return int(await self.conn.execute_command(*_purge_args("RCACHE.SOFTPURGE", prefix, exact)))

    async def purge_tag(self, *tags: Bytesish) -> int:
        return await self._tag_command("RCACHE.PURGETAG", tags)

    async def soft_purge_tag(self, *tags: Bytesish) -> int:
        return await self._tag_command("RCACHE.SOFTPURGETAG", tags)

    async def _tag_command(self, command: str, tags: Sequence[Bytesish]) -> int:
        if not tags:
            return 0
        return int(await self.conn.execute_command(command, *(_b(t) for t in tags), **_cluster_kwargs(self.conn)))

    async def wait(self, replicas: int, timeout: float) -> int:
        return int(await self.conn.execute_command("WAIT", int(replicas), max(0, round(timeout * 1000))))

    async def list(
        self, prefix: Bytesish = "/", count: Optional[int] = None, after: Optional[Bytesish] = None
    ) -> Any:
        return await self.conn.execute_command(*_list_args(prefix, count, after))

    async def info(self) -> Dict[str, Any]:
        kwargs = _info_kwargs(self.conn)
        return _merge_info(await self.conn.info("rcache", **kwargs), bool(kwargs))
