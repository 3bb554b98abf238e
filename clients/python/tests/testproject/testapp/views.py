"""Views of the test project; CALLS counts how often each one really ran."""

from collections import Counter
from datetime import timedelta

from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404
from django.template import engines
from django.template.response import TemplateResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from rcache.django import add_tags, cache_path

from .models import Article, Comment

CALLS: Counter = Counter()

LIST_TEMPLATE = engines["django"].from_string(
    "<ul>{% for a in articles %}<li>{{ a.title }}</li>{% endfor %}</ul>"
)


@cache_path(60, tags=["articles"])
class ArticleList(View):
    def get(self, request):
        CALLS["list"] += 1
        return TemplateResponse(request, LIST_TEMPLATE, {"articles": Article.objects.order_by("pk")})


@cache_path(60, tags=lambda request, pk: [f"article:{pk}"])
def article_detail(request, pk):
    CALLS["detail"] += 1
    article = get_object_or_404(Article, pk=pk)
    resp = HttpResponse(f"<h1>{article.title}</h1>", content_type="text/html; charset=utf-8")
    resp["Content-Language"] = "en"
    resp["X-Custom"] = "kept"
    return resp


@cache_path(60)
def article_comments(request, pk):
    CALLS["comments"] += 1
    texts = list(Comment.objects.filter(article_id=pk).order_by("pk").values_list("text", flat=True))
    return JsonResponse({"comments": texts})


@cache_path(60, vary_on_cookies=["theme"])
def theme(request):
    CALLS["theme"] += 1
    return HttpResponse(f"theme={request.COOKIES.get('theme', 'none')}")


@cache_path(60, vary_on_headers=["Accept-Language"])
def lang(request):
    CALLS["lang"] += 1
    return HttpResponse(f"lang={request.headers.get('Accept-Language', 'none')}")


@cache_path(60)
def whoami(request):
    CALLS["whoami"] += 1
    name = request.user.username if request.user.is_authenticated else "anonymous"
    return HttpResponse(f"user={name}")


@cache_path(60, cache_authenticated=True)
def whoami_shared(request):
    CALLS["whoami_shared"] += 1
    return HttpResponse("same for everyone")


@cache_path(60)
def sets_cookie(request):
    CALLS["sets_cookie"] += 1
    resp = HttpResponse("cookie set")
    resp.set_cookie("seen", "1")
    return resp


@cache_path(60, cache_set_cookie=True)
def sets_cookie_ok(request):
    CALLS["sets_cookie_ok"] += 1
    resp = HttpResponse("cookie set, cached anyway")
    resp.set_cookie("seen", "1")
    return resp


@cache_path(60)
@never_cache
def private(request):
    CALLS["private"] += 1
    return HttpResponse("private")


@cache_path(60)
def nostore(request):
    CALLS["nostore"] += 1
    resp = HttpResponse("no-store")
    resp["Cache-Control"] = "no-store"
    return resp


@cache_path(60)
def csrf_form(request):
    CALLS["csrf"] += 1
    return HttpResponse(f'<form><input name="csrfmiddlewaretoken" value="{get_token(request)}"></form>')


@cache_path(60)
def missing(request):
    CALLS["missing"] += 1
    return HttpResponse("not here", status=404)


@cache_path(60)
def form_view(request):
    CALLS["form"] += 1
    return HttpResponse(f"method={request.method}")


@cache_path(60)
def dynamic_tags(request):
    CALLS["dynamic_tags"] += 1
    add_tags(request, "dyn:a", "dyn:b")
    return HttpResponse("dynamic")


class MethodDecorated(View):
    @method_decorator(cache_path(60, tags=["md"]))
    def get(self, request):
        CALLS["method_decorated"] += 1
        return HttpResponse("method decorated")


class _Plain(View):
    def get(self, request):
        CALLS["wrapped_as_view"] += 1
        return HttpResponse("as_view wrapped")


wrapped_as_view = cache_path(60)(_Plain.as_view())


@cache_path(60)
def raw(request, rest):
    CALLS["raw"] += 1
    return HttpResponse(f"raw:{rest}")


@cache_path()
def default_timeout(request):
    CALLS["default_timeout"] += 1
    return HttpResponse("default timeout")


@cache_path(timedelta(minutes=2), statuses=(200, 404), max_age=30)
def gone(request):
    CALLS["gone"] += 1
    return HttpResponse("gone", status=404)


@cache_path(60, tags=["async"], vary_on_cookies=["theme"])
async def async_view(request):
    CALLS["async"] += 1
    return HttpResponse(f"async theme={request.COOKIES.get('theme', 'none')}")


class AsyncClassView(View):
    async def get(self, request):
        CALLS["async_class"] += 1
        return HttpResponse("async class")


async_class_view = cache_path(60)(AsyncClassView.as_view())


MESSAGES_TEMPLATE = engines["django"].from_string(
    "<p>page</p>{% for m in messages %}<p class=msg>{{ m }}</p>{% endfor %}"
)


@cache_path(60)
def with_messages(request):
    from django.contrib.messages import get_messages

    CALLS["with_messages"] += 1
    return TemplateResponse(request, MESSAGES_TEMPLATE, {"messages": get_messages(request)})


def add_message(request):
    from django.contrib import messages

    messages.info(request, "saved for you")
    return HttpResponse("added")


@cache_path(60, tags=["async-on-class"])
class AsyncOnClass(View):
    """Decorated on the class; reads the user (a database query under ASGI)."""

    async def get(self, request):
        CALLS["async_on_class"] += 1
        user = await request.auser()
        return HttpResponse(f"async on class, user={user.username or 'anonymous'}")


class AsyncDispatch(View):
    @method_decorator(cache_path(60))
    def dispatch(self, request, *args, **kwargs):
        return super().dispatch(request, *args, **kwargs)

    async def get(self, request):
        CALLS["async_dispatch"] += 1
        return HttpResponse("async dispatch")


@cache_path(60)
def date_page(request):
    """A localised date: '1 décembre 2026' in French, 'Dec. 1, 2026' in English."""
    import datetime

    from django.utils.formats import date_format
    from django.utils.translation import get_language

    CALLS["date"] += 1
    return HttpResponse(f"{get_language()}: {date_format(datetime.date(2026, 12, 1))}")


@cache_path(60, query_ignore=["utm_*", "fbclid"], query_sort=True)
def search(request):
    CALLS["search"] += 1
    return HttpResponse(f"page={request.GET.get('page', '1')} q={request.GET.get('q', '')}")


@cache_path(60, vary_on_headers=["Accept-Language"], normalize_accept_language=True)
def greeting(request):
    from django.utils.translation import get_language_from_request

    CALLS["greeting"] += 1
    return HttpResponse(f"hello in {get_language_from_request(request)}")


@cache_path(60)
def api_me(request):
    """A token API: the response depends on the Authorization header."""
    CALLS["api_me"] += 1
    return JsonResponse({"token": request.headers.get("Authorization", "")})


@cache_path(60)
def api_public(request):
    """Explicitly public (RFC 9111 3.5): may be stored even for an Authorization request."""
    CALLS["api_public"] += 1
    resp = JsonResponse({"public": True})
    resp["Cache-Control"] = "public"
    return resp


@cache_path(60, cache_authorization=True)
def api_shared(request):
    CALLS["api_shared"] += 1
    return JsonResponse({"shared": True})


@cache_path(60, tags=["slow", "articles"])
def slow(request):
    """Renders slowly (?delay= seconds) from the database; counts renders in Redis
    (RENDER_COUNTER_URL) so renders in several server processes add up."""
    import os
    import time

    import redis as _redis

    CALLS["slow"] += 1
    titles = [a.title for a in Article.objects.order_by("pk")]  # read before the wait
    time.sleep(float(request.GET.get("delay", "0")))
    url = os.environ.get("RENDER_COUNTER_URL")
    if url:
        _redis.Redis.from_url(url).incr("renders:slow")
    return HttpResponse("slow: " + ",".join(titles))


def plain(request):
    """Not decorated: cached only by the site middleware (when installed)."""
    CALLS["plain"] += 1
    return HttpResponse(f"plain {request.GET.get('x', '')}")


FRAGMENT_TEMPLATE = engines["django"].from_string(
    "{% load rcache %}<p>{{ n }}</p>"
    "{% cache 300 sidebar tags 'articles' extra_tags %}<aside>{{ n }}</aside>{% endcache %}"
)


def fragment(request):
    CALLS["fragment"] += 1
    return HttpResponse(FRAGMENT_TEMPLATE.render({"n": CALLS["fragment"], "extra_tags": ["sidebar", "x"]}))


def login_as(request, name):
    """Test-only: log the client in as ``name`` (created on first use)."""
    from django.contrib.auth import login
    from django.contrib.auth.models import User

    user, _ = User.objects.get_or_create(username=name)
    login(request, user)
    return HttpResponse(f"logged in as {name}")


def set_title(request, pk, title):
    """Test-only: save an article (purge_on_save runs), from inside a server process."""
    a = Article.objects.get(pk=pk)
    a.title = title
    a.save()
    return HttpResponse("saved")


FAIL = {"mode": ""}  # "raise" or "500": how flaky() fails


@cache_path(1, stale_if_error=60, tags=["flaky"])
def flaky(request):
    CALLS["flaky"] += 1
    if FAIL["mode"] == "raise":
        raise RuntimeError("database is down")
    if FAIL["mode"] == "500":
        return HttpResponse("oops", status=503)
    return HttpResponse(f"flaky render {CALLS['flaky']}")


def breaker_stats(request):
    """Test-only: this server process' circuit breaker counters."""
    from rcache.django.conf import get_breaker

    b = get_breaker()
    return JsonResponse({"failed": b.failed_calls, "skipped": b.skipped_calls})


@cache_path(60, tags=["slow", "articles"])
async def slow_async(request):
    """slow() for ASGI: an async view, so uvicorn runs 50 of them at once."""
    import asyncio
    import os

    import redis.asyncio as aredis

    CALLS["slow_async"] += 1
    titles = [a.title async for a in Article.objects.order_by("pk")]
    await asyncio.sleep(float(request.GET.get("delay", "0")))
    url = os.environ.get("RENDER_COUNTER_URL")
    if url:
        conn = aredis.Redis.from_url(url)
        await conn.incr("renders:slow")
        await conn.aclose()
    return HttpResponse("slow: " + ",".join(titles))


@cache_path(60)
def purged_while_rendering(request):
    """Renders, then a save elsewhere purges this page before the render is stored."""
    from rcache.django import purge

    CALLS["purged_while_rendering"] += 1
    body = f"render {CALLS['purged_while_rendering']}"
    purge(request.path)
    return HttpResponse(body)


@cache_path(60, stale_while_revalidate=60)
def swr(request):
    CALLS["swr"] += 1
    return HttpResponse(f"swr render {CALLS['swr']}")
