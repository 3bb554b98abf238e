"""Fixtures for the rcache client and Django tests.

The redis-server handling is shared with ``tests/python`` (the language-neutral
suite): both import ``tests/python/rcache_server.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "tests" / "python"
# This checkout's package first, whatever copy of rcache is installed.
for p in (str(SHARED), str(HERE), str(HERE.parent)):
    if p in sys.path:
        sys.path.remove(p)
    sys.path.insert(0, p)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
import django  # noqa: E402

django.setup()

from rcache_server import RedisServer, r, redis_server, running_server  # noqa: E402,F401  (fixtures)

import rcache  # noqa: E402


@pytest.fixture()
def cache(r) -> rcache.RCache:  # type: ignore[no-untyped-def]
    """An RCache over a raw connection to an emptied server."""
    return rcache.RCache(r)


@pytest.fixture()
def rcache_site(redis_server: RedisServer, r, settings) -> Iterator[RedisServer]:  # type: ignore[no-untyped-def]
    """Point the Django integration at the test server (emptied) and reset view counters."""
    from testproject.testapp import views

    settings.RCACHE = {**settings.RCACHE, "URL": redis_server.url}
    views.CALLS.clear()
    yield redis_server
