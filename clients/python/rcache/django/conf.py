"""Settings and the shared connection for :mod:`rcache.django`.

Everything is read from one dict, ``settings.RCACHE``::

    RCACHE = {
        "URL": "redis://127.0.0.1:6379/0",  # or:
        # "CACHE_ALIAS": "default",         # reuse a django-redis cache's connection
        "TIMEOUT": 300,                     # default key timeout (s); None = module default-ttl
        "SOCKET_TIMEOUT": 0.25,             # seconds, per command (URL only)
        "SOCKET_CONNECT_TIMEOUT": 0.25,     # seconds (URL only)
        "IGNORE_EXCEPTIONS": True,          # fail-open: log and carry on when Redis fails
        "LOG_IGNORED_EXCEPTIONS": True,     # log a warning for each ignored failure
        "LOGGER": "rcache.django",          # logger name for those warnings
        "PATH_PREFIX": "",                  # put before every path, e.g. "{site1}" or "example.com"
        "MAX_PATH_LENGTH": 4096,            # the module's rcache.max-path-len
        "STATUS_HEADER": None,              # e.g. "X-RCache": adds HIT / MISS / BYPASS
        "ENABLED": True,                    # False: decorators pass straight through
        "CONNECTION_KWARGS": {},            # extra kwargs for redis.Redis.from_url
        "CLUSTER": False,                   # URL names a Redis Cluster node: use redis.RedisCluster
        "CIRCUIT_BREAKER_FAILURES": 3,      # consecutive failures that open the breaker
        "CIRCUIT_BREAKER_SECONDS": 5.0,     # how long an open breaker skips Redis
        "WARNING_INTERVAL": 10.0,           # at most one warning per kind per interval
        "PURGE_WAIT_REPLICAS": 0,           # after purges, WAIT for this many replicas
        "PURGE_WAIT_TIMEOUT": 0.1,          # ... for at most this many seconds
        "QUERY_IGNORE": (),                 # query parameters left out of the key (fnmatch, e.g. "utm_*")
        "QUERY_SORT": False,                # sort the query parameters in the key
        "NORMALIZE_ACCEPT_LANGUAGE": False, # key on the best of settings.LANGUAGES, not the raw header
        "MIDDLEWARE_OPTIONS": {},           # cache_path keyword arguments for the site middleware
        "LEASE_TIME": 10.0,                 # s: a miss takes a lease to refill the entry (None: no leases)
        "LEASE_WAIT": 5.0,                  # s: how long a request waits for another's render
    }

The settings are re-read (and the connection rebuilt) when ``RCACHE`` changes
through Django's ``setting_changed`` signal (``override_settings``, pytest-django's
``settings`` fixture).
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from ..client import DEFAULT_MAX_PATH_LEN, AsyncRCache, RCache, path_error
from ._guard import Breaker, WarningLimiter

DEFAULTS: Dict[str, Any] = {
    "URL": None,
    "CACHE_ALIAS": None,
    "TIMEOUT": 300,
    "SOCKET_TIMEOUT": 0.25,
    "SOCKET_CONNECT_TIMEOUT": 0.25,
    "IGNORE_EXCEPTIONS": True,
    "LOG_IGNORED_EXCEPTIONS": True,
    "LOGGER": "rcache.django",
    "PATH_PREFIX": "",
    "MAX_PATH_LENGTH": DEFAULT_MAX_PATH_LEN,
    "STATUS_HEADER": None,
    "ENABLED": True,
    "CONNECTION_KWARGS": {},
    "CLUSTER": False,
    "CIRCUIT_BREAKER_FAILURES": 3,
    "CIRCUIT_BREAKER_SECONDS": 5.0,
    "WARNING_INTERVAL": 10.0,
    "PURGE_WAIT_REPLICAS": 0,
    "PURGE_WAIT_TIMEOUT": 0.1,
    "QUERY_IGNORE": (),
    "QUERY_SORT": False,
    "NORMALIZE_ACCEPT_LANGUAGE": False,
    "MIDDLEWARE_OPTIONS": {},
    "LEASE_TIME": 10.0,
    "LEASE_WAIT": 5.0,
}


@dataclass(frozen=True)
class Settings:
    url: Optional[str]
    cache_alias: Optional[str]
    timeout: Optional[float]
    socket_timeout: Optional[float]
    socket_connect_timeout: Optional[float]
    ignore_exceptions: bool
    log_ignored_exceptions: bool
    logger: logging.Logger
    path_prefix: str
    max_path_length: int
    status_header: Optional[str]
    enabled: bool
    connection_kwargs: Dict[str, Any] = field(default_factory=dict)
    cluster: bool = False
    breaker_failures: int = 3
    breaker_seconds: float = 5.0
    warning_interval: float = 10.0
    purge_wait_replicas: int = 0
    purge_wait_timeout: float = 0.1
    query_ignore: Tuple[str, ...] = ()
    query_sort: bool = False
    normalize_accept_language: bool = False
    middleware_options: Dict[str, Any] = field(default_factory=dict)
    lease_time: Optional[float] = None
    lease_wait: Optional[float] = None


_lock = threading.Lock()
_settings: Optional[Settings] = None
_clients: Dict[bool, RCache] = {}
_breaker: Optional[Breaker] = None
_warnings: Optional[WarningLimiter] = None
_async_clients: "weakref.WeakKeyDictionary[Any, Dict[bool, AsyncRCache]]" = weakref.WeakKeyDictionary()


def get_settings() -> Settings:
    global _settings
    s = _settings
    if s is None:
        s = _settings = _load()
    return s


def _load() -> Settings:
    raw = getattr(settings, "RCACHE", None)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ImproperlyConfigured("settings.RCACHE must be a dict")
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise ImproperlyConfigured(f"settings.RCACHE: unknown key(s) {sorted(unknown)}")
    conf = {**DEFAULTS, **raw}
    if conf["URL"] and conf["CACHE_ALIAS"]:
        raise ImproperlyConfigured("settings.RCACHE: set URL or CACHE_ALIAS, not both")
    prefix = conf["PATH_PREFIX"] or ""
    if prefix:
        err = path_error(prefix + "/", int(conf["MAX_PATH_LENGTH"]))
        if err or prefix.endswith("/"):
            raise ImproperlyConfigured(f"settings.RCACHE['PATH_PREFIX'] is not usable: {err or 'ends with /'}")
    timeout = conf["TIMEOUT"]
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ImproperlyConfigured("settings.RCACHE['TIMEOUT'] must be a positive number or None")
    if (
        conf["PURGE_WAIT_REPLICAS"]
        and not conf["CACHE_ALIAS"]
        and conf["SOCKET_TIMEOUT"] is not None
        and float(conf["PURGE_WAIT_TIMEOUT"]) >= float(conf["SOCKET_TIMEOUT"])
    ):
        raise ImproperlyConfigured("settings.RCACHE['PURGE_WAIT_TIMEOUT'] must be shorter than SOCKET_TIMEOUT")
    if conf["PURGE_WAIT_REPLICAS"] and conf["CLUSTER"]:
        raise ImproperlyConfigured("settings.RCACHE: PURGE_WAIT_REPLICAS is not available with CLUSTER")
    return Settings(
        url=conf["URL"],
        cache_alias=conf["CACHE_ALIAS"],
        timeout=timeout,
        socket_timeout=conf["SOCKET_TIMEOUT"],
        socket_connect_timeout=conf["SOCKET_CONNECT_TIMEOUT"],
        ignore_exceptions=bool(conf["IGNORE_EXCEPTIONS"]),
        log_ignored_exceptions=bool(conf["LOG_IGNORED_EXCEPTIONS"]),
        logger=logging.getLogger(conf["LOGGER"]),
        path_prefix=prefix,
        max_path_length=int(conf["MAX_PATH_LENGTH"]),
        status_header=conf["STATUS_HEADER"],
        enabled=bool(conf["ENABLED"]),
        connection_kwargs=dict(conf["CONNECTION_KWARGS"] or {}),
        cluster=bool(conf["CLUSTER"]),
        breaker_failures=int(conf["CIRCUIT_BREAKER_FAILURES"]),
        breaker_seconds=float(conf["CIRCUIT_BREAKER_SECONDS"]),
        warning_interval=float(conf["WARNING_INTERVAL"]),
        purge_wait_replicas=int(conf["PURGE_WAIT_REPLICAS"]),
        purge_wait_timeout=float(conf["PURGE_WAIT_TIMEOUT"]),
        query_ignore=tuple(conf["QUERY_IGNORE"] or ()),
        query_sort=bool(conf["QUERY_SORT"]),
        normalize_accept_language=bool(conf["NORMALIZE_ACCEPT_LANGUAGE"]),
        middleware_options=dict(conf["MIDDLEWARE_OPTIONS"] or {}),
        lease_time=None if conf["LEASE_TIME"] is None else float(conf["LEASE_TIME"]),
        lease_wait=None if conf["LEASE_TIME"] is None or not conf["LEASE_WAIT"] else float(conf["LEASE_WAIT"]),
    )


def _connect(s: Settings, wait: bool) -> Any:
    if s.cache_alias:
        try:
            from django_redis import get_redis_connection
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImproperlyConfigured("RCACHE['CACHE_ALIAS'] needs django-redis installed") from exc
        return get_redis_connection(s.cache_alias)
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    url = s.url or "redis://127.0.0.1:6379/0"
    if s.cluster:
        return redis.RedisCluster.from_url(url, **_url_kwargs(s, wait))
    # Fail fast: a cache that is down must not cost each request several retries.
    return redis.Redis.from_url(url, **{**_url_kwargs(s, wait), "retry": Retry(NoBackoff(), 0)})


def _url_kwargs(s: Settings, wait: bool) -> Dict[str, Any]:
    timeout = s.socket_timeout
    if wait and timeout is not None and s.lease_wait is not None:
        timeout += s.lease_wait  # a LOOKUP ... WAIT may block that long before it answers
    return {"socket_timeout": timeout, "socket_connect_timeout": s.socket_connect_timeout, **s.connection_kwargs}


def _connect_async(s: Settings, wait: bool) -> Any:
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    url = s.url or "redis://127.0.0.1:6379/0"
    if s.cluster:
        return aredis.RedisCluster.from_url(url, **_url_kwargs(s, wait))
    return aredis.Redis.from_url(url, **{**_url_kwargs(s, wait), "retry": Retry(NoBackoff(), 0)})


def _needs_wait_client(s: Settings, wait: bool) -> bool:
    """LOOKUPs that may WAIT use their own connections, with a longer socket timeout."""
    return wait and s.lease_wait is not None and not s.cache_alias


def get_client(wait: bool = False) -> RCache:
    """The :class:`rcache.RCache` for the configured connection (created once).
    ``wait=True``: the one for ``LOOKUP ... WAIT`` (socket timeout + ``LEASE_WAIT``)."""
    s = get_settings()
    w = _needs_wait_client(s, wait)
    c = _clients.get(w)
    if c is None:
        with _lock:
            c = _clients.get(w)
            if c is None:
                c = _clients[w] = RCache(_connect(s, w))
    return c


def get_async_client(wait: bool = False) -> Optional[AsyncRCache]:
    """The :class:`rcache.AsyncRCache` (``redis.asyncio``) of the running event loop,
    or ``None`` with ``CACHE_ALIAS`` (django-redis has no asyncio connection: the
    sync client is then used in a thread)."""
    import asyncio

    s = get_settings()
    if s.cache_alias:
        return None
    w = _needs_wait_client(s, wait)
    # A redis.asyncio connection belongs to the loop that opened it.
    per_loop = _async_clients.setdefault(asyncio.get_running_loop(), {})
    c = per_loop.get(w)
    if c is None:
        c = per_loop[w] = AsyncRCache(_connect_async(s, w))
    return c


async def aclose() -> None:
    """Close the running event loop's ``redis.asyncio`` connections (e.g. at ASGI
    lifespan shutdown, or at the end of ``asyncio.run``)."""
    import asyncio

    for c in _async_clients.pop(asyncio.get_running_loop(), {}).values():
        await c.conn.aclose()


def get_breaker() -> Breaker:
    global _breaker
    b = _breaker
    if b is None:
        s = get_settings()
        with _lock:
            b = _breaker
            if b is None:
                b = _breaker = Breaker(s.breaker_failures, s.breaker_seconds)
    return b


def get_warnings() -> WarningLimiter:
    global _warnings
    w = _warnings
    if w is None:
        s = get_settings()
        with _lock:
            w = _warnings
            if w is None:
                w = _warnings = WarningLimiter(s.logger, s.warning_interval)
    return w


def reset() -> None:
    """Forget the settings, the connections and the breaker (re-read on next use)."""
    global _settings, _breaker, _warnings
    with _lock:
        old, old_settings, _settings = list(_clients.values()), _settings, None
        _clients.clear()
        _breaker = _warnings = None
        _async_clients.clear()
    # Close only connections we made; a django-redis alias' pool belongs to django-redis.
    if old_settings is None or old_settings.cache_alias:
        return
    for client in old:
        try:
            client.conn.close()
        except Exception:  # pragma: no cover - best effort
            pass


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("RCACHE", "CACHES"):
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="rcache.django.conf")
