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
    }

The settings are re-read (and the connection rebuilt) when ``RCACHE`` changes
through Django's ``setting_changed`` signal (``override_settings``, pytest-django's
``settings`` fixture).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from ..client import DEFAULT_MAX_PATH_LEN, RCache, path_error

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


_lock = threading.Lock()
_settings: Optional[Settings] = None
_client: Optional[RCache] = None


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
    )


def _connect(s: Settings) -> Any:
    if s.cache_alias:
        try:
            from django_redis import get_redis_connection
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImproperlyConfigured("RCACHE['CACHE_ALIAS'] needs django-redis installed") from exc
        return get_redis_connection(s.cache_alias)
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    kwargs: Dict[str, Any] = {
        "socket_timeout": s.socket_timeout,
        "socket_connect_timeout": s.socket_connect_timeout,
        # Fail fast: a cache that is down must not cost each request several retries.
        "retry": Retry(NoBackoff(), 0),
    }
    kwargs.update(s.connection_kwargs)
    return redis.Redis.from_url(s.url or "redis://127.0.0.1:6379/0", **kwargs)


def get_client() -> RCache:
    """The :class:`rcache.RCache` for the configured connection (created once)."""
    global _client
    c = _client
    if c is None:
        with _lock:
            c = _client
            if c is None:
                c = _client = RCache(_connect(get_settings()))
    return c


def reset() -> None:
    """Forget the settings and the connection (re-read on next use)."""
    global _settings, _client
    with _lock:
        old, _client, old_settings, _settings = _client, None, _settings, None
    # Close only a connection we made; a django-redis alias' pool belongs to django-redis.
    owned = old_settings is not None and not old_settings.cache_alias
    if old is not None and owned and hasattr(old.conn, "close"):
        try:
            old.conn.close()
        except Exception:  # pragma: no cover - best effort
            pass


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("RCACHE", "CACHES"):
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="rcache.django.conf")
