"""Per-site caching: the rcache pair in place of Django's ``UpdateCacheMiddleware`` /
``FetchFromCacheMiddleware``.  Pages are keyed and stored exactly as ``cache_path``
does (so ``purge``/``purge_tag``/``purge_on_save`` reach them), with
``RCACHE["TIMEOUT"]`` and ``RCACHE["MIDDLEWARE_OPTIONS"]`` (``cache_path``'s keyword
arguments)::

    MIDDLEWARE = [
        "rcache.django.middleware.UpdateCacheMiddleware",     # first
        ...
        "rcache.django.middleware.FetchFromCacheMiddleware",  # last
    ]

A view decorated with ``cache_path`` is left to the decorator (stored once, with
its own options; when both key the request alike, the decorator takes over the
middleware's lookup and lease).  Under ASGI, Django runs these two in a thread (they are sync).
"""

from __future__ import annotations

from typing import Optional, Tuple

from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

from ._pages import HANDLED_ATTR, SITE_ATTR, Finish, Options, start_sync
from .conf import Settings, get_settings

_cached: Optional[Tuple[Settings, Options]] = None


def _site_options() -> Options:
    """The options for the current settings (rebuilt when ``RCACHE`` changes)."""
    global _cached
    from . import make_options

    s = get_settings()
    if _cached is None or _cached[0] is not s:
        _cached = (s, make_options(None, **s.middleware_options))
    return _cached[1]


class FetchFromCacheMiddleware(MiddlewareMixin):
    """Last in ``MIDDLEWARE``: answer from the cache, or remember how to store the response."""

    def process_request(self, request: HttpRequest) -> Optional[HttpResponseBase]:
        response, finish = start_sync(_site_options(), request, (), {})
        if response is not None:
            return response
        setattr(request, SITE_ATTR, finish)
        return None


class UpdateCacheMiddleware(MiddlewareMixin):
    """First in ``MIDDLEWARE``: store the response once every other middleware has run."""

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        finish: Optional[Finish] = request.__dict__.pop(SITE_ATTR, None)
        if finish is None:
            return response
        if request.__dict__.get(HANDLED_ATTR):
            finish.abandon()  # a cache_path view stored it, with its own options
            return response
        result: HttpResponseBase = finish(response)
        return result
