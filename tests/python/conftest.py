"""Fixtures for the language-neutral suite: a redis-server with the module (see rcache_server.py)."""

from rcache_server import r, redis_server, running_server  # noqa: F401
