"""rcache -- a small, typed Python client for the rcache Redis module.

>>> import redis, rcache
>>> cache = rcache.RCache(redis.Redis())
>>> cache.set("/articles/5", b"<html>...", ttl=300, tags=["article:5"])
>>> cache.get("/articles/5")
>>> cache.purge("/articles")          # every path under /articles
>>> cache.purge_tag("article:5")      # every entry tagged article:5

Django integration lives in :mod:`rcache.django`.
"""

from .client import (
    DEFAULT_MAX_PATH_LEN,
    AsyncRCache,
    Lookup,
    RCache,
    parse_lookup,
    path_error,
    validate_path,
)

__all__ = ["RCache", "AsyncRCache", "Lookup", "parse_lookup", "validate_path", "path_error", "DEFAULT_MAX_PATH_LEN"]
__version__ = "0.1.0"
