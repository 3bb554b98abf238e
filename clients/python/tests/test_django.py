"""rcache.django against a real redis-server with the module, through Django's test client."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from typing import Iterator

import pytest
import redis
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

import rcache
import rcache.django as rdj
from rcache.httpformat import StoredResponse
from rcache_server import free_port
from testproject.testapp.models import Article, Comment
from testproject.testapp.views import CALLS

# What every page is keyed on besides its path: the active language and time zone (as cache_page).
PAGE_VARY = [(":language", "en-us"), (":timezone", "UTC")]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rcache_site")]


@pytest.fixture()
def client() -> Client:
    return Client()


# -- hits, misses, stored headers --------------------------------------------------


def test_hit_does_not_run_view_and_keeps_headers(client: Client, cache: rcache.RCache) -> None:
    a = Article.objects.create(title="Hello")
    url = f"/articles/{a.pk}/"
    r1 = client.get(url)
    assert r1.status_code == 200 and r1["X-RCache"] == "MISS"
    r2 = client.get(url)
    assert r2.status_code == 200 and r2["X-RCache"] == "HIT"
    assert CALLS["detail"] == 1
    assert r2.content == r1.content == b"<h1>Hello</h1>"
    assert r2["Content-Type"] == "text/html; charset=utf-8"
    assert r2["Content-Language"] == "en"
    assert r2["X-Custom"] == "kept"
    assert r1["ETag"] == r2["ETag"]
    # The stored value is an RCH1 record and the ETag is the MD5 of it.
    raw = cache.get(url, vary=PAGE_VARY)
    assert raw is not None and raw.startswith(b"RCH1")
    assert r1["ETag"] == '"' + hashlib.md5(raw).hexdigest() + '"'
    stored = StoredResponse.loads(raw)
    assert stored.status == 200 and stored.body == b"<h1>Hello</h1>"
    assert cache.list("/") == [url.encode()]


def test_template_response_class_view_is_cached(client: Client) -> None:
    Article.objects.create(title="One")
    r1 = client.get("/articles/")
    r2 = client.get("/articles/")
    assert r1.content == r2.content == b"<ul><li>One</li></ul>"
    assert (r1["X-RCache"], r2["X-RCache"]) == ("MISS", "HIT")
    assert CALLS["list"] == 1


def test_method_decorator_and_wrapped_as_view(client: Client) -> None:
    for url, name in (("/method-decorated/", "method_decorated"), ("/wrapped-as-view/", "wrapped_as_view")):
        assert client.get(url)["X-RCache"] == "MISS"
        assert client.get(url)["X-RCache"] == "HIT"
        assert CALLS[name] == 1


def test_query_string_is_part_of_the_key(client: Client) -> None:
    a = Article.objects.create(title="Q")
    url = f"/articles/{a.pk}/"
    client.get(url + "?page=1")
    client.get(url + "?page=2")
    assert CALLS["detail"] == 2
    assert client.get(url + "?page=1")["X-RCache"] == "HIT"
    assert client.get(url + "?page=2")["X-RCache"] == "HIT"
    assert client.get(url)["X-RCache"] == "MISS"
    assert CALLS["detail"] == 3


def test_non_200_and_non_get_are_not_cached(client: Client) -> None:
    client.get("/missing/")
    r = client.get("/missing/")
    assert r.status_code == 404 and CALLS["missing"] == 2
    client.get("/form/")
    r = client.post("/form/")
    assert r.content == b"method=POST" and CALLS["form"] == 2


def test_head_served_from_get_entry_but_not_stored(client: Client) -> None:
    a = Article.objects.create(title="H")
    url = f"/articles/{a.pk}/"
    r = client.head(url)
    assert r.status_code == 200 and r.content == b"" and CALLS["detail"] == 1
    assert client.get(url)["X-RCache"] == "MISS"  # the HEAD did not store
    r = client.head(url)
    assert r["X-RCache"] == "HIT" and r.content == b"" and CALLS["detail"] == 2


# -- conditional requests ----------------------------------------------------------


def test_if_none_match_gets_304_without_running_view(client: Client) -> None:
    a = Article.objects.create(title="E")
    url = f"/articles/{a.pk}/"
    etag = client.get(url)["ETag"]
    assert etag.startswith('"') and len(etag) == 34
    for header in (etag, "W/" + etag, f'"nope", {etag}', "*"):
        r = client.get(url, HTTP_IF_NONE_MATCH=header)
        assert r.status_code == 304, header
        assert r.content == b""
        assert r["ETag"] == etag
    assert CALLS["detail"] == 1
    r = client.get(url, HTTP_IF_NONE_MATCH='"something-else"')
    assert r.status_code == 200 and r["X-RCache"] == "HIT"
    assert CALLS["detail"] == 1


def test_304_after_purge_when_content_unchanged(client: Client) -> None:
    a = Article.objects.create(title="E")
    url = f"/articles/{a.pk}/"
    etag = client.get(url)["ETag"]
    assert rdj.purge(url) == 1
    r = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert r.status_code == 304 and CALLS["detail"] == 2  # the view ran, same bytes, same ETag


# -- purges -----------------------------------------------------------------------


def test_save_purges_path_and_subpaths(client: Client) -> None:
    a = Article.objects.create(title="Old")
    detail, comments = f"/articles/{a.pk}/", f"/articles/{a.pk}/comments/"
    client.get(detail)
    client.get(comments)
    assert client.get(detail)["X-RCache"] == "HIT"
    a.title = "New"
    a.save()
    r = client.get(detail)
    assert r["X-RCache"] == "MISS" and r.content == b"<h1>New</h1>"
    assert client.get(comments)["X-RCache"] == "MISS"  # under the article's path
    assert CALLS["detail"] == 2 and CALLS["comments"] == 2


def test_save_purges_by_tag_and_leaves_others(client: Client) -> None:
    a1 = Article.objects.create(title="A1")
    client.get("/articles/")
    client.get(f"/articles/{a1.pk}/")
    assert client.get("/articles/")["X-RCache"] == "HIT"
    Article.objects.create(title="A2")  # list page carries the "articles" tag
    r = client.get("/articles/")
    assert r["X-RCache"] == "MISS" and r.content == b"<ul><li>A1</li><li>A2</li></ul>"
    assert client.get(f"/articles/{a1.pk}/")["X-RCache"] == "HIT"  # other article untouched
    assert CALLS["list"] == 2 and CALLS["detail"] == 1


def test_delete_purges(client: Client) -> None:
    a = Article.objects.create(title="Gone")
    url = f"/articles/{a.pk}/"
    client.get(url)
    client.get("/articles/")
    a.delete()
    assert client.get(url).status_code == 404
    assert client.get("/articles/").content == b"<ul></ul>"


def test_related_model_purges_exact_path_only(client: Client) -> None:
    a = Article.objects.create(title="C")
    detail, comments = f"/articles/{a.pk}/", f"/articles/{a.pk}/comments/"
    client.get(detail)
    client.get(comments)
    Comment.objects.create(article=a, text="first!")
    assert client.get(comments).json() == {"comments": ["first!"]}
    assert client.get(detail)["X-RCache"] == "HIT"


def test_rolled_back_save_purges_nothing_and_commit_purges_once(client: Client) -> None:
    a = Article.objects.create(title="T")
    url = f"/articles/{a.pk}/"
    client.get(url)
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            a.title = "rolled back"
            a.save()
            raise RuntimeError
    assert client.get(url)["X-RCache"] == "HIT"
    with transaction.atomic():
        a.title = "committed"
        a.save()
        # still inside the transaction: nothing purged yet
        assert client.get(url)["X-RCache"] == "HIT"
    assert client.get(url).content == b"<h1>committed</h1>"


def test_purge_and_purge_tag_functions(client: Client) -> None:
    a = Article.objects.create(title="P")
    client.get(f"/articles/{a.pk}/")
    client.get(f"/articles/{a.pk}/?x=1")
    client.get(f"/articles/{a.pk}/comments/")
    client.get("/articles/")
    assert rdj.purge(f"/articles/{a.pk}/", exact=True) == 2  # both variants, not the sub-path
    assert client.get(f"/articles/{a.pk}/comments/")["X-RCache"] == "HIT"
    assert rdj.purge("/articles") == 2  # the list page and the comments page
    client.get(f"/articles/{a.pk}/")
    assert rdj.purge_tag(f"article:{a.pk}") == 1
    assert rdj.purge_tag() == 0


def test_view_added_and_callable_tags(client: Client) -> None:
    client.get("/dynamic-tags/")
    assert client.get("/dynamic-tags/")["X-RCache"] == "HIT"
    assert rdj.purge_tag("dyn:b") == 1
    assert client.get("/dynamic-tags/")["X-RCache"] == "MISS"
    client.get("/method-decorated/")
    assert rdj.purge_tag("md") == 1


# -- what is not shared ------------------------------------------------------------


def test_cookie_vary_uses_only_named_cookies(client: Client) -> None:
    c = Client()
    c.cookies["theme"] = "dark"
    c.cookies["tracking"] = "1"
    r = c.get("/theme/")
    assert r.content == b"theme=dark" and "Cookie" in r["Vary"]
    c.cookies["tracking"] = "2"  # unrelated cookie: same entry
    c.cookies["csrftoken"] = "x" * 32
    assert c.get("/theme/")["X-RCache"] == "HIT"
    c.cookies["theme"] = "light"
    r = c.get("/theme/")
    assert r.content == b"theme=light" and r["X-RCache"] == "MISS"
    r = client.get("/theme/")  # no cookie at all: its own entry
    assert r.content == b"theme=none" and r["X-RCache"] == "MISS"
    c.cookies["theme"] = "dark"
    assert c.get("/theme/").content == b"theme=dark"
    assert CALLS["theme"] == 3


def test_header_vary(client: Client) -> None:
    assert client.get("/lang/", HTTP_ACCEPT_LANGUAGE="fr").content == b"lang=fr"
    assert client.get("/lang/", HTTP_ACCEPT_LANGUAGE="de").content == b"lang=de"
    r = client.get("/lang/", HTTP_ACCEPT_LANGUAGE="fr")
    assert r.content == b"lang=fr" and r["X-RCache"] == "HIT"
    assert "Accept-Language" in r["Vary"]
    assert CALLS["lang"] == 2


def test_authenticated_responses_are_not_shared(client: Client) -> None:
    User.objects.create_user("alice", password="pw")
    alice = Client()
    alice.login(username="alice", password="pw")
    assert alice.get("/whoami/").content == b"user=alice"
    assert client.get("/whoami/").content == b"user=anonymous"  # not alice's page
    assert client.get("/whoami/")["X-RCache"] == "HIT"
    r = alice.get("/whoami/")  # nor does alice get the anonymous page
    assert r.content == b"user=alice" and r["X-RCache"] == "BYPASS auth"
    assert CALLS["whoami"] == 3


def test_authenticated_opt_in(client: Client) -> None:
    User.objects.create_user("bob", password="pw")
    bob = Client()
    bob.login(username="bob", password="pw")
    bob.get("/whoami-shared/")
    assert client.get("/whoami-shared/")["X-RCache"] == "HIT"
    assert CALLS["whoami_shared"] == 1


@pytest.mark.parametrize(
    "url, reason",
    [("/sets-cookie/", "cookie"), ("/private/", "no-store"), ("/nostore/", "no-store"), ("/csrf/", "csrf")],
)
def test_uncacheable_responses_are_not_stored(client: Client, cache: rcache.RCache, url: str, reason: str) -> None:
    assert client.get(url)["X-RCache"] == f"BYPASS {reason}"
    # The request that held the lease left a pass marker: the next ones render at once.
    assert client.get(url)["X-RCache"] == "BYPASS pass"
    assert sum(CALLS.values()) == 2
    assert cache.lookup(url, vary=PAGE_VARY).value == b"RCHP"


def test_set_cookie_opt_in_stores_without_the_cookie(client: Client) -> None:
    r1 = client.get("/sets-cookie-ok/")
    assert r1.cookies["seen"].value == "1"
    other = Client()
    r2 = other.get("/sets-cookie-ok/")
    assert r2["X-RCache"] == "HIT" and "seen" not in r2.cookies
    assert CALLS["sets_cookie_ok"] == 1


# -- paths the module would refuse --------------------------------------------------


def test_odd_paths_are_escaped_or_skipped(client: Client, cache: rcache.RCache) -> None:
    for url, expected in (
        ("/raw/a%3Fb", b"/raw/a%3Fb"),  # request.path has a literal "?"
        ("/raw/%7Bx%7D", b"/raw/%7Bx%7D"),  # braces
        ("/raw/%7B", b"/raw/%7B"),
        ("/raw/%01ctl", b"/raw/%01ctl"),
        ("/raw/caf%C3%A9", b"/raw/caf%C3%A9"),
    ):
        assert client.get(url).status_code == 200
        r = client.get(url)
        assert r.status_code == 200 and r["X-RCache"] == "HIT", url
        assert expected in cache.list("/raw"), url
    long_url = "/raw/" + "x" * 5000  # longer than rcache.max-path-len
    assert client.get(long_url)["X-RCache"] == "BYPASS path"
    assert client.get(long_url).status_code == 200
    # purge() takes URL paths as reverse() returns them
    assert rdj.purge("/raw/café") == 1
    assert rdj.purge("/raw/caf%C3%A9") == 0


# -- settings and failure handling --------------------------------------------------


def test_disabled_and_zero_timeout_pass_through(client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RCACHE = {**settings.RCACHE, "ENABLED": False}
    client.get("/lang/")
    client.get("/lang/")
    assert CALLS["lang"] == 2
    with pytest.raises(ValueError):
        rdj.cache_path(60, vary_on_headers=["Cookie"])


@pytest.fixture()
def redis_down(rcache_site, settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    settings.RCACHE = {**settings.RCACHE, "URL": f"redis://127.0.0.1:{free_port()}/0"}
    yield


@pytest.mark.usefixtures("redis_down")
def test_redis_down_does_not_break_the_site(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    a = Article.objects.create(title="Up")  # purge on commit fails open too
    with caplog.at_level(logging.WARNING, logger="rcache.django"):
        for _ in range(2):
            r = client.get(f"/articles/{a.pk}/")
            assert r.status_code == 200 and r.content == b"<h1>Up</h1>"
        a.title = "Still up"
        a.save()
        assert rdj.purge("/articles/") == 0
    assert CALLS["detail"] == 2
    assert any("continuing without the cache" in rec.getMessage() for rec in caplog.records)


@pytest.fixture()
def silent_server(rcache_site, settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """A TCP server that accepts connections and never answers: every command times out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    settings.RCACHE = {**settings.RCACHE, "URL": f"redis://127.0.0.1:{sock.getsockname()[1]}/0", "SOCKET_TIMEOUT": 0.2}
    try:
        yield
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        sock.close()


@pytest.mark.usefixtures("silent_server")
def test_redis_timeout_does_not_break_the_site(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="rcache.django"):
        r = client.get("/lang/")
    assert r.status_code == 200 and r.content == b"lang=none"
    assert time.monotonic() - start < 2.0
    assert any("Timeout" in rec.getMessage() for rec in caplog.records)


@pytest.mark.usefixtures("redis_down")
def test_fail_closed_when_configured(client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RCACHE = {**settings.RCACHE, "IGNORE_EXCEPTIONS": False}
    with pytest.raises(redis.ConnectionError):
        client.get("/lang/")


def test_django_redis_alias(client: Client, settings, rcache_site) -> None:  # type: ignore[no-untyped-def]
    import django_redis  # noqa: F401  (installed by run-tests.sh; a missing one fails)

    settings.CACHES = {
        "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": rcache_site.url},
    }
    settings.RCACHE = {"CACHE_ALIAS": "default", "STATUS_HEADER": "X-RCache"}
    client.get("/lang/")
    assert client.get("/lang/")["X-RCache"] == "HIT"
    assert rdj.purge("/lang/") == 1


def test_purge_on_save_defaults_and_disconnect(client: Client) -> None:
    from django.db.models.signals import post_save

    with pytest.raises(TypeError):
        rdj.purge_on_save(Comment)  # no get_absolute_url(): paths or tags needed
    before = len(post_save.receivers)
    disconnect = rdj.purge_on_save(Article, dispatch_uid="test-default")  # path = get_absolute_url()
    assert len(post_save.receivers) == before + 1
    disconnect()
    assert len(post_save.receivers) == before


def test_loaddata_style_raw_save_purges_nothing(client: Client) -> None:
    a = Article.objects.create(title="Raw")
    url = f"/articles/{a.pk}/"
    client.get(url)
    from django.db.models.signals import post_save

    post_save.send(sender=Article, instance=a, created=False, raw=True, using="default", update_fields=None)
    assert client.get(url)["X-RCache"] == "HIT"


def test_timeouts_map_to_entry_ttl(client: Client, cache: rcache.RCache, r: redis.Redis, settings) -> None:  # type: ignore[no-untyped-def]
    client.get("/lang/")  # cache_path(60)
    assert 55 < r.ttl(cache.key("/lang/", vary=PAGE_VARY)) <= 60
    settings.RCACHE = {**settings.RCACHE, "TIMEOUT": 500}
    client.get("/default-timeout/")  # cache_path(): RCACHE["TIMEOUT"]
    assert 495 < r.ttl(cache.key("/default-timeout/", vary=PAGE_VARY)) <= 500
    client.get("/gone/")  # timedelta(minutes=2)
    assert 115 < r.ttl(cache.key("/gone/", vary=PAGE_VARY)) <= 120
    settings.RCACHE = {**settings.RCACHE, "TIMEOUT": None}
    assert rdj.purge("/default-timeout/") == 1
    client.get("/default-timeout/")  # no EX: the module's rcache.default-ttl (0 = none)
    assert r.ttl(cache.key("/default-timeout/", vary=PAGE_VARY)) == -1


def test_statuses_and_max_age(client: Client) -> None:
    r1 = client.get("/gone/")
    r2 = client.get("/gone/")
    assert (r1.status_code, r2.status_code) == (404, 404)
    assert r2["X-RCache"] == "HIT" and r2.content == b"gone"
    assert "max-age=30" in r2["Cache-Control"]
    assert CALLS["gone"] == 1


def test_async_views(client: Client) -> None:
    from asgiref.sync import iscoroutinefunction

    from testproject.testapp import views

    assert iscoroutinefunction(views.async_view) and iscoroutinefunction(views.async_class_view)
    client.cookies["theme"] = "dark"
    assert client.get("/async/").content == b"async theme=dark"
    r = client.get("/async/")
    assert r["X-RCache"] == "HIT" and r.content == b"async theme=dark"
    assert client.get("/async/", HTTP_IF_NONE_MATCH=r["ETag"]).status_code == 304
    assert client.get("/async-class/")["X-RCache"] == "MISS"
    assert client.get("/async-class/")["X-RCache"] == "HIT"
    assert CALLS["async"] == 1 and CALLS["async_class"] == 1
    assert rdj.purge_tag("async") == 1


def test_async_views_under_asgi() -> None:
    import asyncio

    from django.test import AsyncClient

    async def run() -> list:
        from rcache.django.conf import aclose

        c = AsyncClient()
        try:
            return [await c.get("/async/"), await c.get("/async/"), await c.get("/lang/"), await c.get("/lang/")]
        finally:
            await aclose()

    r1, r2, r3, r4 = asyncio.run(run())
    assert (r1["X-RCache"], r2["X-RCache"], r3["X-RCache"], r4["X-RCache"]) == ("MISS", "HIT", "MISS", "HIT")
    assert r2.content == b"async theme=none"
    assert CALLS["async"] == 1 and CALLS["lang"] == 1


def test_pages_showing_flash_messages_are_not_shared(client: Client) -> None:
    alice = Client()
    alice.get("/messages/add/")
    r = alice.get("/messages/")
    assert b"saved for you" in r.content and r["X-RCache"] == "BYPASS messages"
    r = client.get("/messages/")  # nobody else ever sees alice's message
    assert b"saved for you" not in r.content and r["X-RCache"] == "MISS"
    assert client.get("/messages/")["X-RCache"] == "HIT"
    assert b"saved for you" not in alice.get("/messages/").content  # shown once, as usual


def test_server_without_the_module_fails_open(client: Client, settings, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from rcache_server import running_server

    with running_server(load_module=False) as plain:
        settings.RCACHE = {**settings.RCACHE, "URL": plain.url}
        with caplog.at_level(logging.WARNING, logger="rcache.django"):
            for _ in range(5):
                assert client.get("/lang/").content == b"lang=none"
        assert CALLS["lang"] == 5
        assert any("unknown command" in rec.getMessage() for rec in caplog.records)
        # Error replies mean Redis answers: they never open the circuit breaker.
        from rcache.django.conf import get_breaker

        assert not get_breaker().is_open and get_breaker().skipped_calls == 0
