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
