"""A Django ``CACHES`` backend that keeps the low-level cache and ``{% cache %}``
fragments in rcache, where they can be tagged and purged by tag::

    CACHES = {
        "default": {
            "BACKEND": "rcache.django.cache.RCacheBackend",
            "LOCATION": "redis://127.0.0.1:6379/0",
            "OPTIONS": {"PATH_PREFIX": "django-cache", "IGNORE_EXCEPTIONS": False},
        }
    }

    cache.set("sidebar", html, 300, tags=["articles"])
    cache.purge_tag("articles")

Each key is one entry at path ``PATH_PREFIX + "/" + quote(key)`` (the key as
``make_key`` builds it, percent-encoded into one path segment); ``clear()`` purges
``PATH_PREFIX``.  Values are pickled, except ``int`` which is stored as its decimal
digits.  ``add`` is atomic (a script); ``incr``/``decr``/``touch`` are a read and a
write (not atomic), as in Django's ``BaseCache``.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any, Dict, Iterable, List, Optional
from urllib.parse import quote

import redis
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from ..client import DEFAULT_MAX_PATH_LEN, RCache, _set_args

# SET only when no fresh entry is there (KEYS[1] = the path; ARGV = RCACHE.SET's arguments after it).
_ADD_SCRIPT = """
if redis.call('RCACHE.GET', KEYS[1]) then return 0 end
redis.call('RCACHE.SET', KEYS[1], unpack(ARGV))
return 1
"""


class RCacheBackend(BaseCache):
    def __init__(self, location: str, params: Dict[str, Any]) -> None:
        super().__init__(params)
        options = params.get("OPTIONS", {}) or {}
        self._url = location or "redis://127.0.0.1:6379/0"
        self._prefix: str = options.get("PATH_PREFIX", "django-cache")
        self._ignore_exceptions = bool(options.get("IGNORE_EXCEPTIONS", False))
        self._max_path = int(options.get("MAX_PATH_LENGTH", DEFAULT_MAX_PATH_LEN))
        self._conn_kwargs: Dict[str, Any] = dict(options.get("CONNECTION_KWARGS", {}))
        self._client: Optional[RCache] = None

    # -- plumbing ---------------------------------------------------------------
    @property
    def client(self) -> RCache:
        if self._client is None:
            self._client = RCache(redis.Redis.from_url(self._url, **self._conn_kwargs))
        return self._client

    def validate_key(self, key: str) -> None:
        """Any key works (it is percent-encoded into the path): no memcached warnings."""

    def _path(self, key: Any, version: Optional[int]) -> str:
        segment = quote(self.make_and_validate_key(key, version=version), safe="")
        path = f"{self._prefix}/{segment}"
        if len(path.encode()) > self._max_path:  # very long keys: a digest keeps them distinct
            path = f"{self._prefix}/#md5-{hashlib.md5(segment.encode()).hexdigest()}"
        return path

    def _ttl(self, timeout: Any) -> Optional[float]:
        """Seconds, ``None`` for no expiry, or 0 for "expire at once"."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return max(0.0, float(timeout))

    def _guard(self, fn: Any, default: Any) -> Any:
        try:
            return fn()
        except (redis.RedisError, OSError):
            if self._ignore_exceptions:
                return default
            raise

    @staticmethod
    def _dumps(value: Any) -> bytes:
        if type(value) is int:
            return str(value).encode()
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def _loads(data: bytes) -> Any:
        if data[:1] == b"\x80":  # a pickle (protocol >= 2)
            return pickle.loads(data)
        return int(data)

    # -- the cache API ---------------------------------------------------------------
    def get(self, key: Any, default: Any = None, version: Optional[int] = None) -> Any:
        path = self._path(key, version)
        data = self._guard(lambda: self.client.get(path), None)
        return default if data is None else self._loads(data)

    def set(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: Optional[int] = None,
        tags: Optional[Iterable[str]] = None,
    ) -> None:
        path = self._path(key, version)
        ttl = self._ttl(timeout)
        if ttl == 0:
            self._guard(lambda: self.client.delete(path), 0)
            return
        data = self._dumps(value)
        self._guard(lambda: self.client.set(path, data, ttl=ttl, tags=list(tags or ()) or None), None)

    def add(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: Optional[int] = None,
        tags: Optional[Iterable[str]] = None,
    ) -> bool:
        path = self._path(key, version)
        ttl = self._ttl(timeout)
        if ttl == 0:
            return False
        args = _set_args(path, self._dumps(value), ttl, None, None, list(tags or ()) or None, None, None, None, None)
        conn = self.client.conn
        return bool(self._guard(lambda: conn.eval(_ADD_SCRIPT, 1, path, *args[2:]), 0))

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: Optional[int] = None) -> bool:
        value = self.get(key, self, version)
        if value is self:
            return False
        self.set(key, value, timeout, version)
        return True

    def delete(self, key: Any, version: Optional[int] = None) -> bool:
        path = self._path(key, version)
        return bool(self._guard(lambda: self.client.delete(path), 0))

    def has_key(self, key: Any, version: Optional[int] = None) -> bool:
        path = self._path(key, version)
        return self._guard(lambda: self.client.get(path), None) is not None

    def get_many(self, keys: Iterable[Any], version: Optional[int] = None) -> Dict[Any, Any]:
        keys = list(keys)
        paths = [self._path(k, version) for k in keys]

        def run() -> List[Any]:
            pipe = self.client.conn.pipeline(transaction=False)
            batch = RCache(pipe)
            for p in paths:
                batch.get(p)
            result: List[Any] = pipe.execute()
            return result

        values = self._guard(run, [None] * len(keys))
        return {k: self._loads(v) for k, v in zip(keys, values) if v is not None}

    def set_many(
        self,
        data: Dict[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: Optional[int] = None,
        tags: Optional[Iterable[str]] = None,
    ) -> List[Any]:
        ttl = self._ttl(timeout)
        tag_list = list(tags or ()) or None
        items = [(self._path(k, version), v) for k, v in data.items()]

        def run() -> List[Any]:
            pipe = self.client.conn.pipeline(transaction=False)
            batch = RCache(pipe)
            for p, v in items:
                if ttl == 0:
                    batch.delete(p)
                else:
                    batch.set(p, self._dumps(v), ttl=ttl, tags=tag_list)
            pipe.execute()
            return []

        return list(self._guard(run, list(data)))

    def delete_many(self, keys: Iterable[Any], version: Optional[int] = None) -> None:
        paths = [self._path(k, version) for k in keys]

        def run() -> None:
            pipe = self.client.conn.pipeline(transaction=False)
            batch = RCache(pipe)
            for p in paths:
                batch.delete(p)
            pipe.execute()

        self._guard(run, None)

    def clear(self) -> None:
        self._guard(lambda: self.client.purge(self._prefix), 0)

    def purge_tag(self, *tags: str) -> int:
        """Remove every entry carrying any of ``tags`` (fragments and pages alike)."""
        return int(self._guard(lambda: self.client.purge_tag(*tags), 0))

    def close(self, **kwargs: Any) -> None:
        """Connections are pooled per backend instance and reused across requests."""

