"""Django integration: cache whole responses in rcache, purge them by path or tag.

Public API:

* :func:`cache_path` -- view decorator, a drop-in for ``cache_page``
* :func:`purge`, :func:`purge_tag` -- invalidate by path prefix / by tag
* :func:`purge_on_save` -- purge a model instance's paths and tags after commit
* :func:`add_tags` -- let a view tag the response it is rendering
* :func:`get_client` -- the configured :class:`rcache.RCache`

Settings: one ``RCACHE`` dict, see :mod:`rcache.django.conf`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Type, TypeVar, Union
from urllib.parse import unquote

import redis
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotModified
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.encoding import escape_uri_path
from django.utils.http import parse_etags

from ..client import path_error
from ..httpformat import FormatError, StoredResponse, etag_of
from .conf import get_client, get_settings, reset

__all__ = [
    "cache_path",
    "purge",
    "purge_tag",
    "purge_on_save",
    "add_tags",
    "get_client",
    "request_path",
    "reset",
]

TagsArg = Union[None, Iterable[str], Callable[..., Optional[Iterable[str]]]]
Timeout = Union[None, int, float, _dt.timedelta]
V = TypeVar("V")

# Headers never stored: per-connection, per-response, or set by us.
_SKIP_HEADERS = frozenset(
    h.lower()
    for h in (
        "Set-Cookie", "Date", "Age", "ETag", "Content-Length", "Connection", "Keep-Alive",
        "Transfer-Encoding", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer", "Upgrade",
    )
)
# Headers kept on a 304 (RFC 9110 15.4.5, plus Last-Modified) -- as Django's own _not_modified.
_NOT_MODIFIED_HEADERS = ("Cache-Control", "Content-Location", "Date", "ETag", "Expires", "Last-Modified", "Vary")

_TAGS_ATTR = "_rcache_tags"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")  # RFC 9110 token: header and cookie names


# ---------------------------------------------------------------------------
# failure handling


class _RedisFailed(Exception):
    """Raised internally when a Redis call failed and fail-open swallowed it."""


def _call(what: str, fn: Callable[..., V], *args: Any, **kwargs: Any) -> V:
    """Run a Redis call; on failure log and raise _RedisFailed (fail-open) or re-raise."""
    s = get_settings()
    try:
        return fn(*args, **kwargs)
    except (redis.RedisError, OSError) as exc:
        if not s.ignore_exceptions:
            raise
        if s.log_ignored_exceptions:
            s.logger.warning("rcache: %s failed, continuing without the cache: %r", what, exc)
        raise _RedisFailed() from exc


# ---------------------------------------------------------------------------
# paths


def _to_entry_path(uri_path: str) -> Optional[str]:
    s = get_settings()
    p = s.path_prefix + uri_path
    if path_error(p, s.max_path_length) is not None:
        return None
    return p


def request_path(request: HttpRequest) -> Optional[str]:
    """The rcache path a request is filed under, or ``None`` if it cannot be cached.

    It is ``PATH_PREFIX`` + ``request.path`` percent-encoded the way Django's
    ``request.get_full_path()`` does (``escape_uri_path``): ``?``, braces, control
    characters, ``%`` and non-ASCII characters are always escaped, so the only
    reason for ``None`` is a path longer than ``MAX_PATH_LENGTH``.
    """
    return _to_entry_path(escape_uri_path(request.path))


def _normalize_user_path(path: str) -> str:
    """A URL path as ``reverse()`` / ``get_absolute_url()`` return it -> rcache path."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    p = _to_entry_path(escape_uri_path(unquote(path)))
    if p is None:
        raise ValueError(f"cannot purge {path!r}: not a valid rcache path")
    return p


# ---------------------------------------------------------------------------
# purging


def purge(path: str, exact: bool = False) -> int:
    """Remove every cached response under ``path`` (its sub-paths too, unless ``exact``).

    ``path`` is a URL path as ``reverse()`` or ``get_absolute_url()`` return it
    (percent-escapes are decoded and re-encoded canonically; a query string is
    ignored: every variant goes).  Returns the number of entries removed, or 0 when
    Redis failed and ``IGNORE_EXCEPTIONS`` is on (an error is logged).
    """
    p = _normalize_user_path(path)
    try:
        return int(_call(f"purge of {p!r}", lambda: get_client().purge(p, exact=exact)))
    except _RedisFailed:
        return 0


def purge_tag(*tags: str) -> int:
    """Remove every cached response carrying any of ``tags``.  Returns the count removed."""
    tags = tuple(t for t in tags if t)
    if not tags:
        return 0
    try:
        return int(_call(f"purge of tags {tags!r}", lambda: get_client().purge_tag(*tags)))
    except _RedisFailed:
        return 0


def _as_list(value: Any) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value if v is not None and v != ""]


def purge_on_save(
    model: Type[models.Model],
    paths: Union[None, Iterable[str], Callable[[Any], Any]] = None,
    tags: Union[None, Iterable[str], Callable[[Any], Any]] = None,
    *,
    exact: bool = False,
    dispatch_uid: Optional[str] = None,
) -> Callable[[], None]:
    """Purge an instance's paths and tags after each save and delete of ``model``.

    ``paths`` and ``tags`` are each a callable ``f(instance)`` returning a string, an
    iterable of strings or ``None`` -- or a fixed iterable of strings.  When both are
    omitted, the path is ``instance.get_absolute_url()``.  The purge runs on
    ``transaction.on_commit`` of the database the save used (immediately when no
    transaction is open), so a rolled-back save purges nothing and a page rendered
    right after the commit can never be re-cached from the old row.

    Returns a function that disconnects the handlers.
    """
    if paths is None and tags is None:
        if not hasattr(model, "get_absolute_url"):
            raise TypeError(f"{model.__name__} has no get_absolute_url(); pass paths= or tags=")

        def paths(instance: Any) -> Any:
            return instance.get_absolute_url()

    def resolve(spec: Any, instance: Any) -> List[str]:
        return _as_list(spec(instance) if callable(spec) else spec)

    def handler(sender: Any, instance: Any, using: str = "default", **kwargs: Any) -> None:
        if kwargs.get("raw"):  # loaddata: leave the cache alone
            return
        p_list = resolve(paths, instance)
        t_list = resolve(tags, instance)
        if not p_list and not t_list:
            return

        def run() -> None:
            # Runs after the commit: a bad path must not turn a saved row into an error page.
            for p in p_list:
                try:
                    purge(p, exact=exact)
                except ValueError as exc:
                    get_settings().logger.error("rcache: purge_on_save(%s): %s", model.__name__, exc)
            if t_list:
                purge_tag(*t_list)

        transaction.on_commit(run, using=using)

    uid = dispatch_uid or f"rcache.purge_on_save:{model._meta.label}:{id(handler)}"
    post_save.connect(handler, sender=model, weak=False, dispatch_uid=uid + ":save")
    post_delete.connect(handler, sender=model, weak=False, dispatch_uid=uid + ":delete")

    def disconnect() -> None:
        post_save.disconnect(sender=model, dispatch_uid=uid + ":save")
        post_delete.disconnect(sender=model, dispatch_uid=uid + ":delete")

    return disconnect


def add_tags(request: HttpRequest, *tags: str) -> None:
    """Tag the response being rendered for ``request`` (call from inside a cached view)."""
    current: Set[str] = request.__dict__.setdefault(_TAGS_ATTR, set())
    current.update(str(t) for t in tags if t)


# ---------------------------------------------------------------------------
# the decorator


def _is_authenticated(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and getattr(user, "is_authenticated", False))


def _sets_cookies(request: HttpRequest, response: HttpResponseBase) -> bool:
    if response.cookies:
        return True
    meta = request.META
    if meta.get("CSRF_COOKIE_NEEDS_UPDATE") or meta.get("CSRF_COOKIE_USED"):
        return True  # CsrfViewMiddleware will set the cookie; the page holds a per-user token
    session = getattr(request, "session", None)
    if session is not None and getattr(session, "modified", False):
        return True
    messages = getattr(request, "_messages", None)  # django.contrib.messages
    if messages is not None and getattr(messages, "used", False):
        try:
            if len(messages):  # the page showed someone's messages; the storage will update
                return True
        except Exception:
            return True
    return False


def _cache_control_forbids(response: HttpResponseBase) -> bool:
    cc = response.get("Cache-Control", "")
    directives = {d.strip().split("=", 1)[0].lower() for d in cc.split(",") if d.strip()}
    return bool(directives & {"private", "no-store"})


def _etag_matches(request: HttpRequest, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    etags = parse_etags(header)
    if etags == ["*"]:
        return True
    bare = etag.removeprefix("W/")
    return any(e.removeprefix("W/") == bare for e in etags)


def _not_modified(response: HttpResponseBase) -> HttpResponseNotModified:
    new = HttpResponseNotModified()
    for h in _NOT_MODIFIED_HEADERS:
        if h in response:
            new.headers[h] = response.headers[h]
    return new


def _timeout_seconds(timeout: Timeout, default: Optional[float]) -> Optional[float]:
    if timeout is None:
        return default
    if isinstance(timeout, _dt.timedelta):
        return timeout.total_seconds()
    return float(timeout)


def cache_path(
    timeout: Timeout = None,
    *,
    vary_on_headers: Sequence[str] = (),
    vary_on_cookies: Sequence[str] = (),
    tags: TagsArg = None,
    cache_authenticated: bool = False,
    cache_set_cookie: bool = False,
    cache_private: bool = False,
    statuses: Sequence[int] = (200,),
    max_age: Optional[int] = None,
) -> Callable[[Any], Any]:
    """Cache a view's successful GET responses in rcache, under the request path.

    * ``timeout`` -- seconds (``int``/``float``/``timedelta``); ``None`` uses
      ``RCACHE['TIMEOUT']``; 0 or less disables caching (as ``cache_page(0)``).
    * ``vary_on_headers`` -- request header names the response depends on.
    * ``vary_on_cookies`` -- cookie *names* the response depends on; only those cookies'
      values split the cache, never the whole ``Cookie`` header.
    * ``tags`` -- an iterable of tags, or ``f(request, *args, **kwargs)`` returning one;
      the view can add more with :func:`add_tags`.
    * ``cache_authenticated`` / ``cache_set_cookie`` / ``cache_private`` -- opt in to
      caching responses for logged-in users (shared by everyone!), responses that set
      cookies (stored without their cookies), and ``Cache-Control: private/no-store``.
    * ``statuses`` -- response statuses that are stored (default only 200).
    * ``max_age`` -- if given, add ``Cache-Control: max-age`` for browsers/proxies
      (by default nothing: a purge cannot reach copies outside Redis).

    Works on function views, ``View.as_view()`` results, with ``method_decorator`` and
    directly on a class-based view class (its ``dispatch`` is wrapped).

    Query strings are part of the key as sent.  HEAD requests are answered from the
    entry a GET stored; a HEAD miss runs the view without storing.  Every response
    that came through the cache carries ``ETag: "<md5 of the stored value>"`` and a
    request whose ``If-None-Match`` matches it gets a 304 without running the view.
    """
    header_names = tuple(h.strip() for h in vary_on_headers)
    for h in header_names:
        if h.lower() == "cookie":
            raise ValueError("vary_on_headers: use vary_on_cookies=(...) instead of the Cookie header")
        if not _TOKEN.match(h):
            raise ValueError(f"vary_on_headers: invalid header name {h!r}")
    cookie_names = tuple(vary_on_cookies)
    for c in cookie_names:
        if not _TOKEN.match(c):
            raise ValueError(f"vary_on_cookies: invalid cookie name {c!r}")
    vary_header_value = header_names + (("Cookie",) if cookie_names else ())
    allowed_vary = {h.lower() for h in vary_header_value}
    statuses = tuple(statuses)

    def decorator(view: Any) -> Any:
        if isinstance(view, type):
            from django.utils.decorators import method_decorator

            return method_decorator(decorator, name="dispatch")(view)

        def before(request: HttpRequest, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[bool, Any]:
            """Before the view: ``(True, response)`` to answer from the cache, else
            ``(False, finish)`` where ``finish(view_response)`` stores and returns it."""
            s = get_settings()
            ttl = _timeout_seconds(timeout, s.timeout)
            if (
                not s.enabled
                or request.method not in ("GET", "HEAD")
                or (ttl is not None and ttl <= 0)
            ):
                return False, _identity

            def bypass(response: Any) -> Any:
                if s.status_header and isinstance(response, HttpResponseBase):
                    response.headers.setdefault(s.status_header, "BYPASS")
                return response

            path = request_path(request)
            if path is None or (not cache_authenticated and _is_authenticated(request)):
                return False, bypass

            query = request.META.get("QUERY_STRING", "")
            if isinstance(query, str):
                try:
                    query_b = query.encode("latin-1")  # WSGI: raw bytes decoded as latin-1
                except UnicodeEncodeError:
                    query_b = query.encode("utf-8")
            else:
                query_b = bytes(query)
            vary: List[Tuple[str, str]] = []
            for h in header_names:
                v = request.headers.get(h)
                if v is not None:
                    vary.append((h.lower(), v))
            for c in cookie_names:
                cv = request.COOKIES.get(c)
                if cv is not None:
                    vary.append(("cookie", f"{c}={cv}"))

            try:
                value = _call(f"get of {path!r}", lambda: get_client().get(path, query=query_b, vary=vary))
            except _RedisFailed:
                return False, bypass  # do not try to store either

            if value is not None:
                try:
                    stored = StoredResponse.loads(bytes(value))
                except FormatError:
                    s.logger.warning("rcache: ignoring an unreadable entry at %r", path)
                else:
                    etag = etag_of(bytes(value))
                    resp = HttpResponse(stored.body, status=stored.status, reason=stored.reason)
                    del resp.headers["Content-Type"]
                    for k, v in stored.headers:
                        resp.headers[k] = v
                    resp.headers["ETag"] = etag
                    if s.status_header:
                        resp.headers[s.status_header] = "HIT"
                    if _etag_matches(request, etag):
                        return True, _with_status(_not_modified(resp), s.status_header, "HIT")
                    return True, resp

            if request.method != "GET":
                return False, bypass  # HEAD: answered from a GET's entry, never stored

            def store(response: Any) -> Any:
                if (
                    not isinstance(response, HttpResponseBase)
                    or response.streaming
                    or response.status_code not in statuses
                    or (not cache_private and _cache_control_forbids(response))
                    or (not cache_set_cookie and _sets_cookies(request, response))
                    or (not cache_authenticated and _is_authenticated(request))
                ):
                    return bypass(response)
                if vary_header_value:
                    patch_vary_headers(response, vary_header_value)
                if max_age is not None:
                    patch_cache_control(response, max_age=max_age)
                response_vary = {
                    v.strip().lower() for v in response.get("Vary", "").split(",") if v.strip()
                }
                if not response_vary <= allowed_vary:
                    # The view says it depends on something the cache key does not hold.
                    return bypass(response)
                headers = [
                    (k, v)
                    for k, v in response.items()
                    if k.lower() not in _SKIP_HEADERS and (not s.status_header or k.lower() != s.status_header.lower())
                ]
                value = StoredResponse(
                    status=response.status_code,
                    headers=headers,
                    body=response.content,
                    reason=response.reason_phrase if _custom_reason(response) else None,
                ).dumps()
                tag_list: Set[str] = set(request.__dict__.get(_TAGS_ATTR, ()))
                if tags is not None:
                    tag_list.update(_as_list(tags(request, *args, **kwargs) if callable(tags) else tags))
                ex = ttl if ttl is None or ttl != int(ttl) else int(ttl)
                try:
                    _call(
                        f"set of {path!r}",
                        lambda: get_client().set(
                            path, value, ttl=ex, query=query_b, vary=vary, tags=sorted(tag_list) or None
                        ),
                    )
                except _RedisFailed:
                    return bypass(response)
                etag = etag_of(value)
                response.headers["ETag"] = etag
                if s.status_header:
                    response.headers[s.status_header] = "MISS"
                if _etag_matches(request, etag):
                    return _with_status(_not_modified(response), s.status_header, "MISS")
                return response

            def finish(response: Any) -> Any:
                if hasattr(response, "add_post_render_callback") and not getattr(response, "is_rendered", True):
                    response.add_post_render_callback(store)  # TemplateResponse: store once rendered
                    return response
                return store(response)

            return False, finish

        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                # Redis and request.user are synchronous: run them in a thread, as Django does.
                answered, result = await sync_to_async(before)(request, args, kwargs)
                if answered:
                    return result
                response = await view(request, *args, **kwargs)
                return await sync_to_async(result)(response)

            return async_wrapper

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            answered, result = before(request, args, kwargs)
            if answered:
                return result
            return result(view(request, *args, **kwargs))

        return wrapper

    return decorator


def _identity(response: Any) -> Any:
    return response


def _with_status(response: HttpResponseBase, header: Optional[str], value: str) -> HttpResponseBase:
    if header:
        response.headers[header] = value
    return response


def _custom_reason(response: HttpResponseBase) -> bool:
    from http import HTTPStatus

    try:
        return bool(response.reason_phrase != HTTPStatus(response.status_code).phrase)
    except ValueError:
        return True

