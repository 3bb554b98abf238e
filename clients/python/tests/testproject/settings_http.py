"""The test project as a real site: served by gunicorn / uvicorn in tests/test_http.py.

A SQLite file shared by the server processes, LocaleMiddleware, and the rcache
settings from the environment (RCACHE_TEST_URL, RCACHE_TEST_OPTIONS as JSON)."""

import json
import os

from .settings import *  # noqa: F401,F403
from .settings import MIDDLEWARE, RCACHE

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["RCACHE_TEST_DB"]}}
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
MIDDLEWARE = [
    *MIDDLEWARE[:1],
    "django.middleware.locale.LocaleMiddleware",
    *MIDDLEWARE[1:],
]
RCACHE = {**RCACHE, "URL": os.environ["RCACHE_TEST_URL"], **json.loads(os.environ.get("RCACHE_TEST_OPTIONS", "{}"))}
LOGGING_CONFIG = "logging.config.dictConfig"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"rcache.django": {"handlers": ["stderr"], "level": "WARNING"}},
}
