"""Whole-response caching shared by ``cache_path`` and the per-site middleware.

One request goes through: ``prepare`` (the key and whether the cache may be
used at all), a read (sync or ``redis.asyncio``), ``answer`` (a response from the
entry, or ``None``), the view, and ``store_reason`` + a write.  Every decision is
pure; only the reads and writes differ between the sync and the async path.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar, Union
from urllib.parse import unquote_plus

import redis
from asgiref.sync import sync_to_async
from django.conf import settings as dj_settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotModified
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.encoding import escape_uri_path
from django.utils.http import parse_etags

from ..client import AsyncRCache, Lookup, _set_args, _variant_args, path_error
from ..httpformat import FormatError, StoredResponse, etag_of
from .conf import Settings, get_async_client, get_breaker, get_client, get_settings, get_warnings

V = TypeVar("V")
TagsArg = Union[None, Sequence[str], Callable[..., Any]]
Timeout = Union[None, int, float, _dt.timedelta]

TAGS_ATTR = "_rcache_tags"
HANDLED_ATTR = "_rcache_handled"  # set by cache_path: the site middleware leaves the request alone
SITE_ATTR = "_rcache_site_finish"  # the site middleware's Finish, from its lookup to its store

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
# RFC 9111 3.5: response directives that let a shared cache store a reply to an Authorization request.
_SHARED_OK = frozenset({"public", "s-maxage", "must-revalidate"})
# Vary names for the active language and time zone: not HTTP tokens (":"), so no header can collide.
LANGUAGE_VARY = ":language"
TIMEZONE_VARY = ":timezone"


# "Hit-for-pass": stored in place of a page whose responses cannot be cached, so the
# requests waiting on its lease wake at once and later ones skip the lease for a while.
PASS_MARKER = b"RCHP"
# Reasons that belong to the page (every render would have them), not to one request.
_PAGE_REASONS = frozenset({"status", "streaming", "no-store", "private", "cookie", "csrf", "vary", "not-a-response"})


class RedisFailed(Exception):
    """A Redis call failed (or the breaker skipped it) and fail-open swallowed it."""


# ---------------------------------------------------------------------------
# failure handling


def _failed(s: Settings, what: str, exc: BaseException) -> RedisFailed:
    if isinstance(exc, redis.ResponseError):
        opened = False  # an error reply (say, a tag the module refuses): Redis is reachable
        get_breaker().success()
    else:
        opened = get_breaker().failure()
    if s.log_ignored_exceptions:
        msg = f"rcache: {what} failed, continuing without the cache: {type(exc).__name__}: {exc}"
        if opened:
            get_warnings().warn("breaker", msg + f"; not calling Redis for {s.breaker_seconds:g}s")
        else:
            get_warnings().warn("redis", msg)
    return RedisFailed(what)


def call(what: str, fn: Callable[[], V], *, breaker: bool = True) -> V:
    """Run a Redis call; on failure log (rate-limited) and raise RedisFailed, or re-raise
    when IGNORE_EXCEPTIONS is off.  ``breaker=False`` always tries (purges)."""
    s = get_settings()
    if not s.ignore_exceptions:
        return fn()
    if breaker and not get_breaker().allow():
        raise RedisFailed(what)
    try:
        result = fn()
    except (redis.RedisError, OSError) as exc:
        raise _failed(s, what, exc) from exc
    except BaseException:
        get_breaker().success()  # not about reaching Redis; frees a probe slot
        raise
    get_breaker().success()
    return result


async def acall(what: str, fn: Callable[[], Any]) -> Any:
    """:func:`call` for a coroutine function."""
    s = get_settings()
    if not s.ignore_exceptions:
        return await fn()
    if not get_breaker().allow():
        raise RedisFailed(what)
    try:
        result = await fn()
    except (redis.RedisError, OSError, asyncio.TimeoutError) as exc:
        raise _failed(s, what, exc) from exc
    except BaseException:
        get_breaker().success()  # not about reaching Redis (e.g. cancelled); frees a probe slot
        raise
    get_breaker().success()
    return result


# ---------------------------------------------------------------------------
# options and keys


@dataclass(frozen=True)
class Options:
    timeout: Timeout = None
    vary_on_headers: Tuple[str, ...] = ()
    vary_on_cookies: Tuple[str, ...] = ()
    tags: TagsArg = None
    cache_authenticated: bool = False
    cache_authorization: bool = False
    cache_set_cookie: bool = False
    cache_private: bool = False
    statuses: Tuple[int, ...] = (200,)
    max_age: Optional[int] = None
    query_ignore: Optional[Tuple[str, ...]] = None
    query_sort: Optional[bool] = None
    normalize_accept_language: Optional[bool] = None
    stale_while_revalidate: Optional[int] = None
    stale_if_error: Optional[int] = None

    @property
    def grace(self) -> Optional[int]:
        """The entry's GRACE: long enough for both stale uses (None: the module's default)."""
        given = [g for g in (self.stale_while_revalidate, self.stale_if_error) if g is not None]
        return max(given) if given else None

    @property
    def vary_header_value(self) -> Tuple[str, ...]:
        return self.vary_on_headers + (("Cookie",) if self.vary_on_cookies else ())


@dataclass
class Plan:
    """What one request reads and writes: its entry's key and the view's extra arguments."""

    settings: Settings
    options: Options
    path: str
    query: bytes
    vary: List[Tuple[str, str]]
    ttl: Optional[float]
    args: Tuple[Any, ...] = ()
    kwargs: Dict[str, Any] = field(default_factory=dict)
    authorization: bool = False
    if_none_match: Optional[bytes] = None  # sent as IFNONEMATCH (one validator, HTTP-parsed)
    found: Optional[Lookup] = None  # what LOOKUP answered
    passed: bool = False  # the entry is a pass marker: render, do not store


def timeout_seconds(timeout: Timeout, default: Optional[float]) -> Optional[float]:
    if timeout is None:
        return default
    if isinstance(timeout, _dt.timedelta):
        return timeout.total_seconds()
    return float(timeout)


def to_entry_path(uri_path: str) -> Optional[str]:
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
    return to_entry_path(escape_uri_path(request.path))


def normalize_query(raw: bytes, ignore: Sequence[str], sort: bool) -> bytes:
    """The query string as keyed: parameters whose (decoded) name matches one of
    ``ignore`` (``fnmatch`` patterns) dropped, the rest sorted when ``sort``;
    each kept parameter's bytes are unchanged."""
    if not ignore and not sort:
        return raw
    parts = [p for p in raw.split(b"&") if p]
    if ignore:
        def name(part: bytes) -> str:
            return unquote_plus(part.split(b"=", 1)[0].decode("latin-1"))

        parts = [p for p in parts if not any(fnmatch.fnmatchcase(name(p), pat) for pat in ignore)]
    if sort:
        parts.sort()
    return b"&".join(parts)


def normalize_accept_language(value: str) -> str:
    """The language of ``settings.LANGUAGES`` that Django would pick for this
    ``Accept-Language`` (``fr`` for ``fr-FR,fr;q=0.9``), or ``LANGUAGE_CODE``."""
    from django.utils.translation import get_supported_language_variant
    from django.utils.translation.trans_real import parse_accept_lang_header

    for code, _q in parse_accept_lang_header(value):
        if code == "*":
            break
        try:
            return str(get_supported_language_variant(code))
        except LookupError:
            continue
    return str(dj_settings.LANGUAGE_CODE)


def _raw_query(request: HttpRequest) -> bytes:
    query = request.META.get("QUERY_STRING", "")
    if isinstance(query, str):
        try:
            return query.encode("latin-1")  # WSGI: raw bytes decoded as latin-1
        except UnicodeEncodeError:
            return query.encode("utf-8")
    return bytes(query)


def i18n_vary(request: HttpRequest) -> List[Tuple[str, str]]:
    """The active language (``USE_I18N``) and time zone (``USE_TZ``), as ``cache_page`` keys them."""
    out: List[Tuple[str, str]] = []
    if dj_settings.USE_I18N:
        from django.utils.translation import get_language

        out.append((LANGUAGE_VARY, str(getattr(request, "LANGUAGE_CODE", None) or get_language())))
    if dj_settings.USE_TZ:
        from django.utils.timezone import get_current_timezone_name

        out.append((TIMEZONE_VARY, get_current_timezone_name()))
    return out


def prepare(
    options: Options, request: HttpRequest, args: Tuple[Any, ...], kwargs: Dict[str, Any], authenticated: bool
) -> Union[None, str, Plan]:
    """``None``: the cache is not involved (disabled, not GET/HEAD, timeout 0);
    a string: bypass, for that reason; else the request's :class:`Plan`."""
    s = get_settings()
    ttl = timeout_seconds(options.timeout, s.timeout)
    if not s.enabled or request.method not in ("GET", "HEAD") or (ttl is not None and ttl <= 0):
        return None
    path = request_path(request)
    if path is None:
        return "path"
    if authenticated and not options.cache_authenticated:
        return "auth"
    ignore = s.query_ignore if options.query_ignore is None else options.query_ignore
    sort = s.query_sort if options.query_sort is None else options.query_sort
    norm_lang = s.normalize_accept_language if options.normalize_accept_language is None else options.normalize_accept_language
    vary = i18n_vary(request)
    for h in options.vary_on_headers:
        v = request.headers.get(h)
        if v is not None:
            if norm_lang and h.lower() == "accept-language":
                v = normalize_accept_language(v)
            vary.append((h.lower(), v))
    for c in options.vary_on_cookies:
        cv = request.COOKIES.get(c)
        if cv is not None:
            vary.append(("cookie", f"{c}={cv}"))
    return Plan(
        settings=s,
        options=options,
        path=path,
        query=normalize_query(_raw_query(request), ignore, sort),
        vary=vary,
        ttl=ttl,
        args=args,
        kwargs=kwargs,
        authorization="HTTP_AUTHORIZATION" in request.META and not options.cache_authorization,
        if_none_match=_single_validator(request),
    )


def _single_validator(request: HttpRequest) -> Optional[bytes]:
    """The one entity tag of If-None-Match, unquoted, for LOOKUP's byte comparison
    (weak comparison, as RFC 9110 asks for If-None-Match); None for "*" or a list
    (compared here after the read)."""
    header = request.headers.get("If-None-Match")
    etags = parse_etags(header) if header else []
    if len(etags) != 1 or etags[0] == "*":
        return None
    tag = etags[0].removeprefix("W/")
    return tag[1:-1].encode("latin-1", "replace") if len(tag) >= 2 and tag[0] == tag[-1] == '"' else None


# ---------------------------------------------------------------------------
# decisions


def _lazy_user(request: HttpRequest) -> bool:
    """``request.user`` is a lazy object (AuthenticationMiddleware's) not evaluated yet."""
    from django.utils.functional import SimpleLazyObject, empty

    user = getattr(request, "user", None)
    return isinstance(user, SimpleLazyObject) and getattr(user, "_wrapped", None) is empty


def is_authenticated(request: HttpRequest) -> bool:
    if _lazy_user(request) and hasattr(request, "session"):
        # Look without evaluating request.user and without marking the session read:
        # caching is decided on it, the page does not depend on it.  If the view reads
        # the user, SessionMiddleware still adds "Vary: Cookie" as usual.
        from django.contrib.auth import get_user

        accessed = request.session.accessed
        result = bool(get_user(request).is_authenticated)
        request.session.accessed = accessed
        return result
    user = getattr(request, "user", None)
    return bool(user is not None and getattr(user, "is_authenticated", False))


async def ais_authenticated(request: HttpRequest) -> bool:
    """:func:`is_authenticated` without touching the database from the event loop."""
    if not _lazy_user(request):
        return is_authenticated(request)  # no user, or already evaluated: no I/O
    if not hasattr(request, "session"):
        return bool(await sync_to_async(is_authenticated)(request))
    from django.contrib.auth import aget_user

    accessed = request.session.accessed
    user = await aget_user(request)
    request.session.accessed = accessed
    return bool(user.is_authenticated)


def _cookie_reason(request: HttpRequest, response: HttpResponseBase) -> Optional[str]:
    meta = request.META
    if meta.get("CSRF_COOKIE_NEEDS_UPDATE") or meta.get("CSRF_COOKIE_USED"):
        return "csrf"  # CsrfViewMiddleware will set the cookie; the page holds a per-user token
    if response.cookies:
        return "cookie"
    session = getattr(request, "session", None)
    if session is not None and getattr(session, "modified", False):
        return "session"
    messages = getattr(request, "_messages", None)  # django.contrib.messages
    if messages is not None and getattr(messages, "used", False):
        try:
            if len(messages):  # the page showed someone's messages; the storage will update
                return "messages"
        except Exception:
            return "messages"
    return None


def _directives(response: Union[HttpResponseBase, StoredResponse]) -> Set[str]:
    if isinstance(response, StoredResponse):
        cc = ", ".join(v for k, v in response.headers if k.lower() == "cache-control")
    else:
        cc = response.get("Cache-Control", "")
    return {d.strip().split("=", 1)[0].lower() for d in cc.split(",") if d.strip()}


def store_reason(plan: Plan, request: HttpRequest, response: Any, authenticated: bool) -> Optional[str]:
    """Why the view's response must not be stored, or ``None`` to store it."""
    o = plan.options
    if not isinstance(response, HttpResponseBase):
        return "not-a-response"
    if response.streaming:
        return "streaming"
    if response.status_code not in o.statuses:
        return "status"
    directives = _directives(response)
    if not o.cache_private and directives & {"private", "no-store"}:
        return "no-store" if "no-store" in directives else "private"
    if plan.authorization and not directives & _SHARED_OK:
        return "authorization"
    if not o.cache_set_cookie:
        reason = _cookie_reason(request, response)
        if reason:
            return reason
    if authenticated and not o.cache_authenticated:
        return "auth"
    return None


def bypass(response: Any, reason: str) -> Any:
    header = get_settings().status_header
    if header and isinstance(response, HttpResponseBase):
        response.headers[header] = f"BYPASS {reason}"
    return response


def _with_status(response: HttpResponseBase, header: Optional[str], value: str) -> HttpResponseBase:
    if header:
        response.headers[header] = value
    return response


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


def _http_etag(etag: bytes) -> str:
    return '"' + etag.decode("latin-1") + '"'


def _entry_response(plan: Plan, request: HttpRequest, found: Lookup, label: str) -> Optional[HttpResponseBase]:
    """The stored response of a LOOKUP that returned a value (``None`` if unreadable or
    not for this request)."""
    s = plan.settings
    value = bytes(found.value or b"")
    try:
        stored = StoredResponse.loads(value)
    except FormatError:
        s.logger.warning("rcache: ignoring an unreadable entry at %r", plan.path)
        return None
    if plan.authorization and not _directives(stored) & _SHARED_OK:
        return None  # RFC 9111 3.5: not for a request with Authorization
    resp = HttpResponse(stored.body, status=stored.status, reason=stored.reason)
    del resp.headers["Content-Type"]
    for k, v in stored.headers:
        resp.headers[k] = v
    resp.headers["ETag"] = _http_etag(found.etag) if found.etag else etag_of(value)
    if s.status_header:
        resp.headers[s.status_header] = label
    if _etag_matches(request, resp.headers["ETag"]):
        return _with_status(_not_modified(resp), s.status_header, label)
    return resp


def _bodiless_not_modified(plan: Plan, etag: bytes, label: str) -> HttpResponseBase:
    """A 304 from the module's ETag alone (the body was not fetched): the validators and
    the Vary/Cache-Control this view's options put on its responses."""
    resp = HttpResponseNotModified()
    resp.headers["ETag"] = _http_etag(etag)
    o = plan.options
    vary = o.vary_header_value + (("Accept-Language",) if dj_settings.USE_I18N else ())
    if vary:
        patch_vary_headers(resp, vary)
    if o.max_age is not None:
        patch_cache_control(resp, max_age=o.max_age)
    return _with_status(resp, plan.settings.status_header, label)


def _stale_for(plan: Plan, found: Lookup) -> float:
    """Seconds since the entry went stale (its fresh lifetime is the view's timeout)."""
    return max(0.0, (found.age or 0) / 1000 - (plan.ttl or 0))


def answer(plan: Plan, request: HttpRequest, found: Lookup) -> Optional[HttpResponseBase]:
    """The response for a request whose entry was looked up, or ``None`` to run the view."""
    plan.found = found
    if found.value == PASS_MARKER:
        plan.passed = True
        return None
    swr = plan.options.stale_while_revalidate
    leases = plan.settings.lease_time is not None
    if found.state == "FRESH":
        label = "HIT"
    elif found.state == "STALE" and leases and found.lease is None and swr is not None and _stale_for(plan, found) <= swr:
        # Another request holds the lease and re-renders: this one gets the stale copy now.
        # (Without leases nobody would be re-rendering, so every request renders.)
        label = "STALE"
    else:
        return None
    if found.value is None and found.etag is not None:  # IFNONEMATCH matched
        return _bodiless_not_modified(plan, found.etag, label)
    return _entry_response(plan, request, found, label)


def stale_fallback(plan: Plan, request: HttpRequest, failure: str) -> Optional[HttpResponseBase]:
    """RFC 5861 stale-if-error: the stale copy, when the view failed within the window."""
    found, sie = plan.found, plan.options.stale_if_error
    if found is None or found.state != "STALE" or sie is None or found.value is None or _stale_for(plan, found) > sie:
        return None
    plan.settings.logger.warning("rcache: %s at %r, serving the stale copy", failure, plan.path)
    return _entry_response(plan, request, found, "STALE")


@dataclass
class Write:
    """A response to store: the RCH1 value, its ETag and tags, and the lease it refills under."""

    value: bytes
    etag: str
    tags: List[str]
    ttl: Optional[float]
    grace: Optional[int]
    lease: Optional[bytes]

    def args(self, plan: Plan) -> Dict[str, Any]:
        return {
            "ttl": self.ttl, "query": plan.query, "vary": plan.vary, "tags": self.tags or None,
            "grace": self.grace, "etag": self.etag, "lease": self.lease,
        }


def prepare_write(plan: Plan, request: HttpRequest, response: HttpResponseBase) -> Union[str, Write]:
    """Patch ``Vary``/``Cache-Control`` and serialise; a string is a bypass reason."""
    o = plan.options
    s = plan.settings
    lease = plan.found.lease if plan.found is not None else None
    if s.lease_time is not None and lease is None:
        # Another request holds the lease (our WAIT ran out): only the holder's render,
        # guarded against purges since it was granted, may be stored.
        return "lease"
    if o.vary_header_value:
        patch_vary_headers(response, o.vary_header_value)
    if o.max_age is not None:
        patch_cache_control(response, max_age=o.max_age)
    response_vary = {v.strip().lower() for v in response.get("Vary", "").split(",") if v.strip()}
    # Accept-Language: LocaleMiddleware's, for the language that is in the key.
    keyed = {h.lower() for h in o.vary_header_value} | ({"accept-language"} if dj_settings.USE_I18N else set())
    if not response_vary <= keyed:
        return "vary"  # the view says it depends on something the key does not hold
    status_header = (s.status_header or "").lower()
    headers = [(k, v) for k, v in response.items() if k.lower() not in _SKIP_HEADERS and k.lower() != status_header]
    value = StoredResponse(
        status=response.status_code,
        headers=headers,
        body=getattr(response, "content", b""),
        reason=response.reason_phrase if _custom_reason(response) else None,
    ).dumps()
    tag_list: Set[str] = set(request.__dict__.get(TAGS_ATTR, ()))
    if o.tags is not None:
        tag_list.update(as_list(o.tags(request, *plan.args, **plan.kwargs) if callable(o.tags) else o.tags))
    ttl = plan.ttl if plan.ttl is None or plan.ttl != int(plan.ttl) else int(plan.ttl)
    etag = etag_of(value)[1:-1]
    return Write(value=value, etag=etag, tags=sorted(tag_list), ttl=ttl, grace=o.grace, lease=lease)


def stored(plan: Plan, request: HttpRequest, response: HttpResponseBase, w: Write, ok: bool) -> HttpResponseBase:
    """The view's response after its entry was written (``ok``) or refused by its lease."""
    if not ok:
        bypass(response, "invalidated")  # a purge since the lease: the render may be stale
        return response
    header = plan.settings.status_header
    etag = '"' + w.etag + '"'
    response.headers["ETag"] = etag
    if header:
        response.headers[header] = "MISS"
    if _etag_matches(request, etag):
        return _with_status(_not_modified(response), header, "MISS")
    return response


def as_list(value: Any) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value if v is not None and v != ""]


def _custom_reason(response: HttpResponseBase) -> bool:
    from http import HTTPStatus

    try:
        return bool(response.reason_phrase != HTTPStatus(response.status_code).phrase)
    except ValueError:
        return True


def _unrendered(response: Any) -> bool:
    return hasattr(response, "add_post_render_callback") and not getattr(response, "is_rendered", True)


def _lookup_kwargs(plan: Plan, request: HttpRequest, wait: bool) -> Dict[str, Any]:
    s = plan.settings
    refill = request.method == "GET" and s.lease_time is not None  # a HEAD never stores
    return {
        "query": plan.query,
        "vary": plan.vary,
        "if_none_match": plan.if_none_match,
        "lease": s.lease_time if refill else None,
        "wait": s.lease_wait if refill and wait else None,
    }


def _must_wait(plan: Plan, request: HttpRequest, found: Lookup) -> bool:
    """A miss whose lease another request holds: ask again, waiting for its render.
    (Only then: a LOOKUP that may WAIT needs the long socket timeout, and a hung Redis
    must cost the short one.)"""
    return found.state == "MISS" and found.lease is None and _lookup_kwargs(plan, request, True)["wait"] is not None


def _failed_view(plan: Plan, request: HttpRequest, response: Any) -> Optional[HttpResponseBase]:
    if isinstance(response, HttpResponseBase) and response.status_code >= 500:
        return stale_fallback(plan, request, f"the view answered {response.status_code}")
    return None


# ---------------------------------------------------------------------------
# the sync and async paths


def _inherit(request: HttpRequest, plan: Plan) -> Optional[Lookup]:
    """The site middleware already looked this request up under the same key: take its
    answer, and the lease that came with it, instead of a second LOOKUP (which would
    wait on our own lease)."""
    site = request.__dict__.get(SITE_ATTR)
    other = site.plan if isinstance(site, Finish) else None
    if other is None or other.found is None:
        return None
    if (other.path, other.query, sorted(other.vary)) != (plan.path, plan.query, sorted(plan.vary)):
        return None
    found, other.found = other.found, None
    return found


class Finish:
    """After the view: store its response (a TemplateResponse once rendered), or fall back
    to the stale copy when the view failed (stale-if-error)."""

    def __init__(self, plan: Optional[Plan], request: HttpRequest, reason: Optional[str] = None) -> None:
        self.plan, self.request, self.reason = plan, request, reason

    def __call__(self, response: Any) -> Any:
        if self.reason is not None:
            return bypass(response, self.reason)
        plan = self.plan
        if plan is None:
            return response
        stale = _failed_view(plan, self.request, response)
        if stale is not None:
            return stale
        if _unrendered(response):
            response.add_post_render_callback(lambda r: _write_sync(plan, self.request, r))
            return response
        return _write_sync(plan, self.request, response)

    def abandon(self) -> None:
        """Someone else stores this response (a ``cache_path`` view under the site
        middleware): end a lease we still hold on a miss."""
        if self.plan is not None:
            _settle_sync(self.plan, "abandoned")

    def error(self, exc: Exception) -> Optional[HttpResponseBase]:
        """The stale copy to answer with instead of raising ``exc``, if there is one."""
        if self.plan is None or self.reason is not None:
            return None
        stale = stale_fallback(self.plan, self.request, f"the view raised {type(exc).__name__}: {exc}")
        if stale is None:
            _settle_sync(self.plan, "exception")
        return stale


def _settlement(plan: Plan, reason: str) -> Optional[List[Any]]:
    """The command that settles a lease we hold on a miss when we do not store: SET of
    the pass marker with the lease (waiters wake now, later requests skip the lease for
    LEASE_TIME) for a reason of the page, DEL (the next request takes the lease) for a
    reason of this request -- or ``None`` (no lease held, or a stale entry, which nobody
    waits on)."""
    found = plan.found
    if found is None or found.lease is None or found.state != "MISS":
        return None
    if reason in _PAGE_REASONS:
        return _set_args(
            plan.path, PASS_MARKER, plan.settings.lease_time, plan.query, plan.vary, None, None, None, None, found.lease
        )
    return ["RCACHE.DEL", plan.path, *_variant_args(plan.query, plan.vary)]


def _settle_sync(plan: Plan, reason: str) -> None:
    command = _settlement(plan, reason)
    if command is not None:
        try:
            call(f"settling the lease of {plan.path!r}", lambda: get_client().conn.execute_command(*command))
        except RedisFailed:
            pass  # the lease runs out by itself


def _bypass_settled(plan: Plan, response: Any, reason: str) -> Any:
    _settle_sync(plan, reason)
    return bypass(response, reason)


def _write_sync(plan: Plan, request: HttpRequest, response: Any) -> Any:
    if plan.passed:
        return bypass(response, "pass")
    reason = store_reason(plan, request, response, is_authenticated(request))
    if reason:
        return _bypass_settled(plan, response, reason)
    w = prepare_write(plan, request, response)
    if isinstance(w, str):
        return _bypass_settled(plan, response, w)
    try:
        ok = call(f"set of {plan.path!r}", lambda: get_client().set(plan.path, w.value, **w.args(plan)))
    except RedisFailed:
        return bypass(response, "error")
    return stored(plan, request, response, w, bool(ok))


def start_sync(
    options: Options, request: HttpRequest, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Tuple[Optional[HttpResponseBase], Finish]:
    """Before the view: ``(response, _)`` to answer now, else ``(None, finish)``."""
    authenticated = not options.cache_authenticated and is_authenticated(request)
    plan = prepare(options, request, args, kwargs, authenticated)
    if plan is None or isinstance(plan, str):
        return None, Finish(None, request, plan)
    p = plan
    try:
        found = _inherit(request, p) or call(f"lookup of {p.path!r}", lambda: _read_sync(p, request))
    except RedisFailed:
        return None, Finish(None, request, "error")
    resp = answer(p, request, found)
    if resp is not None:
        return resp, Finish(None, request)
    if request.method != "GET":
        return None, Finish(None, request, "head")  # HEAD: answered from a GET's entry, never stored
    return None, Finish(p, request)


async def handle_async(
    options: Options, request: HttpRequest, args: Tuple[Any, ...], kwargs: Dict[str, Any], view: Callable[[], Any]
) -> Any:
    """The whole request for an async view: lookup, view, store -- Redis through ``redis.asyncio``."""
    authenticated = not options.cache_authenticated and await ais_authenticated(request)
    plan = prepare(options, request, args, kwargs, authenticated)
    if plan is None:
        return await _await(view())
    if isinstance(plan, str):
        return bypass(await _await(view()), plan)
    p = plan
    writer = None if _own_loop(request) else get_async_client()
    waiting = None if _own_loop(request) else get_async_client(wait=True)
    try:
        inherited = _inherit(request, p)
        if inherited is not None:
            found = inherited
        elif writer is None or waiting is None:
            found = await acall(f"lookup of {p.path!r}", lambda: _sync(request, _read_sync, p, request))
        else:
            found = await acall(f"lookup of {p.path!r}", lambda: _aread(writer, waiting, p, request))
    except RedisFailed:
        return bypass(await _await(view()), "error")
    resp = answer(p, request, found)
    if resp is not None:
        return resp
    if request.method != "GET":
        return bypass(await _await(view()), "head")

    async def settle(reason: str) -> None:
        command = _settlement(p, reason)
        if command is None:
            return
        if writer is None:
            return await _sync(request, _settle_sync, p, reason)
        try:
            await acall(f"settling the lease of {p.path!r}", lambda: writer.conn.execute_command(*command))
        except RedisFailed:
            pass  # the lease runs out by itself

    try:
        response = await _await(view())
    except Exception as exc:
        stale = stale_fallback(p, request, f"the view raised {type(exc).__name__}: {exc}")
        if stale is None:
            await settle("exception")
            raise
        return stale
    stale = _failed_view(p, request, response)
    if stale is not None:
        return stale
    if _unrendered(response):
        response.add_post_render_callback(lambda r: _write_sync(p, request, r))  # runs in Django's render thread
        return response
    if p.passed:
        return bypass(response, "pass")
    authenticated = not options.cache_authenticated and await ais_authenticated(request)
    reason = store_reason(p, request, response, authenticated)
    w = reason if reason is not None else prepare_write(p, request, response)
    if isinstance(w, str):
        await settle(w)
        return bypass(response, w)

    async def write() -> Any:
        if writer is None:
            return await _sync(request, get_client().set, p.path, w.value, **w.args(p))
        return await writer.set(p.path, w.value, **w.args(p))

    try:
        ok = await acall(f"set of {p.path!r}", write)
    except RedisFailed:
        return bypass(response, "error")
    return stored(p, request, response, w, bool(ok))


def _read_sync(plan: Plan, request: HttpRequest) -> Lookup:
    found: Lookup = get_client().lookup(plan.path, **_lookup_kwargs(plan, request, False))
    if _must_wait(plan, request, found):
        found = get_client(wait=True).lookup(plan.path, **_lookup_kwargs(plan, request, True))
    return found


async def _aread(client: AsyncRCache, waiting: AsyncRCache, plan: Plan, request: HttpRequest) -> Lookup:
    found = await client.lookup(plan.path, **_lookup_kwargs(plan, request, False))
    if _must_wait(plan, request, found):
        found = await waiting.lookup(plan.path, **_lookup_kwargs(plan, request, True))
    return found


def _own_loop(request: HttpRequest) -> bool:
    """Under a WSGI server Django runs an async view in an event loop of its own: nothing
    else runs on it, so the sync client (pooled connections) serves it directly --
    a redis.asyncio connection would be opened, and abandoned, per request."""
    return "wsgi.version" in request.META


async def _sync(request: HttpRequest, fn: Callable[..., V], *args: Any, **kwargs: Any) -> V:
    """Call the sync client: directly on a request's own loop, else in a thread (CACHE_ALIAS)."""
    if _own_loop(request):
        return fn(*args, **kwargs)
    return await sync_to_async(fn)(*args, **kwargs)


async def _await(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result
