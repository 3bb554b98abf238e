"""Django integration: cache whole responses in rcache, purge them by path or tag.

Public API:

* :func:`cache_path` -- view decorator, a drop-in for ``cache_page``
* :func:`purge`, :func:`purge_tag` -- invalidate by path prefix / by tag
* :func:`purge_on_save` -- purge a model instance's paths and tags after commit
* :func:`add_tags` -- let a view tag the response it is rendering
* :func:`get_client` -- the configured :class:`rcache.RCache`
* :mod:`rcache.django.middleware` -- the per-site middleware pair
* :mod:`rcache.django.cache` -- a ``CACHES`` backend (low-level API, ``{% cache %}``)

Settings: one ``RCACHE`` dict, see :mod:`rcache.django.conf`.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Optional, Sequence, Set

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest

from ._pages import HANDLED_ATTR, TAGS_ATTR, Options, TagsArg, Timeout, handle_async, request_path, start_sync
from .conf import get_async_client, get_client, get_settings, reset
from .purging import purge, purge_on_save, purge_tag

__all__ = [
    "cache_path",
    "purge",
    "purge_tag",
    "purge_on_save",
    "add_tags",
    "get_client",
    "get_async_client",
    "get_settings",
    "request_path",
    "reset",
]

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")  # RFC 9110 token: header and cookie names


def add_tags(request: HttpRequest, *tags: str) -> None:
    """Tag the response being rendered for ``request`` (call from inside a cached view)."""
    current: Set[str] = request.__dict__.setdefault(TAGS_ATTR, set())
    current.update(str(t) for t in tags if t)


def make_options(
    timeout: Timeout = None,
    *,
    vary_on_headers: Sequence[str] = (),
    vary_on_cookies: Sequence[str] = (),
    tags: TagsArg = None,
    cache_authenticated: bool = False,
    cache_authorization: bool = False,
    cache_set_cookie: bool = False,
    cache_private: bool = False,
    statuses: Sequence[int] = (200,),
    max_age: Optional[int] = None,
    query_ignore: Optional[Sequence[str]] = None,
    query_sort: Optional[bool] = None,
    normalize_accept_language: Optional[bool] = None,
    stale_while_revalidate: Optional[int] = None,
    stale_if_error: Optional[int] = None,
) -> Options:
    header_names = tuple(h.strip() for h in vary_on_headers)
    for h in header_names:
        if h.lower() == "cookie":
            raise ValueError("vary_on_headers: use vary_on_cookies=(...) instead of the Cookie header")
        if not _TOKEN.match(h):
            raise ValueError(f"vary_on_headers: invalid header name {h!r}")
    for c in vary_on_cookies:
        if not _TOKEN.match(c):
            raise ValueError(f"vary_on_cookies: invalid cookie name {c!r}")
    return Options(
        timeout=timeout,
        vary_on_headers=header_names,
        vary_on_cookies=tuple(vary_on_cookies),
        tags=tags,
        cache_authenticated=cache_authenticated,
        cache_authorization=cache_authorization,
        cache_set_cookie=cache_set_cookie,
        cache_private=cache_private,
        statuses=tuple(statuses),
        max_age=max_age,
        query_ignore=None if query_ignore is None else tuple(query_ignore),
        query_sort=query_sort,
        normalize_accept_language=normalize_accept_language,
        stale_while_revalidate=stale_while_revalidate,
        stale_if_error=stale_if_error,
    )


def _is_async_view(view: Any) -> bool:
    if iscoroutinefunction(view):
        return True
    # method_decorator hands us a partial of the bound method: async if its view class is.
    owner = getattr(getattr(view, "func", None), "__self__", None)
    return owner is not None and bool(getattr(type(owner), "view_is_async", False))


def cache_path(timeout: Timeout = None, **kwargs: Any) -> Callable[[Any], Any]:
    """Cache a view's successful GET responses in rcache, under the request path.

    * ``timeout`` -- seconds (``int``/``float``/``timedelta``); ``None`` uses
      ``RCACHE['TIMEOUT']``; 0 or less disables caching (as ``cache_page(0)``).
    * ``vary_on_headers`` -- request header names the response depends on.
    * ``vary_on_cookies`` -- cookie *names* the response depends on; only those cookies'
      values split the cache, never the whole ``Cookie`` header.
    * ``tags`` -- an iterable of tags, or ``f(request, *args, **kwargs)`` returning one;
      the view can add more with :func:`add_tags`.
    * ``cache_authenticated`` / ``cache_authorization`` / ``cache_set_cookie`` /
      ``cache_private`` -- opt in to caching responses for logged-in users (shared by
      everyone!), for requests with an ``Authorization`` header (also shared),
      responses that set cookies (stored without their cookies), and
      ``Cache-Control: private/no-store``.
    * ``statuses`` -- response statuses that are stored (default only 200).
    * ``max_age`` -- if given, add ``Cache-Control: max-age`` for browsers/proxies.
    * ``query_ignore`` / ``query_sort`` / ``normalize_accept_language`` -- override the
      ``RCACHE`` settings of the same name for this view.
    * ``stale_while_revalidate`` -- seconds after its timeout during which a stale page
      is served while one request re-renders it (RFC 5861).
    * ``stale_if_error`` -- seconds after its timeout during which a stale page is
      served when the view raises or answers 5xx (RFC 5861).  The entry is kept
      stale (``GRACE``) for the longer of the two.

    The active language (``USE_I18N``) and time zone (``USE_TZ``) are always part of
    the key, as for ``cache_page``.  Works on function views, ``View.as_view()``
    results, with ``method_decorator`` and directly on a class-based view class,
    sync or async (async views talk to Redis through ``redis.asyncio``).
    """
    options = make_options(timeout, **kwargs)

    def decorator(view: Any) -> Any:
        if isinstance(view, type):
            from django.utils.decorators import method_decorator

            return method_decorator(decorator, name="dispatch")(view)

        if _is_async_view(view):
            # An async class-based view's dispatch is a plain function returning a
            # coroutine: answer with a coroutine too.
            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kw: Any) -> Any:
                request.__dict__[HANDLED_ATTR] = True
                return await handle_async(options, request, args, kw, lambda: view(request, *args, **kw))

            return async_wrapper

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kw: Any) -> Any:
            request.__dict__[HANDLED_ATTR] = True
            response, finish = start_sync(options, request, args, kw)
            if response is not None:
                return response
            try:
                result = view(request, *args, **kw)
            except Exception as exc:
                stale = finish.error(exc)
                if stale is None:
                    raise
                return stale
            return finish(result)

        return wrapper

    return decorator
