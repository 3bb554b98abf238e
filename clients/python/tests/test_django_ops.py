"""Operations: the circuit breaker, rate-limited warnings, batched purges, WAIT,
``manage.py rcache`` and the admin action."""

from __future__ import annotations

import io
import logging
import time
from typing import Dict, Iterator

import pytest
import redis
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import transaction
from django.test import Client

import rcache
import rcache.django as rdj
from rcache_server import RedisServer, running_server
from rcache.django.conf import get_breaker
from testproject.testapp.models import Article, Comment
from testproject.testapp.views import CALLS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rcache_site")]


# -- fail-open that stays fast -----------------------------------------------------


@pytest.fixture()
def hung_redis(settings) -> Iterator[RedisServer]:  # type: ignore[no-untyped-def]
    """A real redis-server with the module, stopped with SIGSTOP: connections are
    accepted by the kernel, every command times out."""
    with running_server() as server:
        settings.RCACHE = {
            **settings.RCACHE,
            "URL": server.url,
            "SOCKET_TIMEOUT": 0.2,
            "CIRCUIT_BREAKER_FAILURES": 2,
            "CIRCUIT_BREAKER_SECONDS": 1.0,
            "WARNING_INTERVAL": 60,
        }
        server.process.send_signal(__import__("signal").SIGSTOP)
        try:
            yield server
        finally:
            server.process.send_signal(__import__("signal").SIGCONT)


def test_hung_redis_costs_one_timeout_per_interval(hung_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    client = Client()
    breaker = get_breaker()
    start = time.monotonic()
    requests = 0
    with caplog.at_level(logging.WARNING, logger="rcache.django"):
        while time.monotonic() - start < 2.5:
            r = client.get("/lang/")
            assert r.status_code == 200 and r.content == b"lang=none"
            requests += 1
    # 2 failures open the breaker; then one probe per 1 s interval (the loop runs 2.5 s):
    # at most 2 + 3 calls wait for the timeout -- never one per request.
    assert 2 <= breaker.failed_calls <= 2 + 3, breaker.failed_calls
    assert breaker.skipped_calls == requests - breaker.failed_calls
    assert requests > 3 * breaker.failed_calls
    assert CALLS["lang"] == requests  # every request was answered by the view
    warnings = [rec.getMessage() for rec in caplog.records]
    # One warning per kind and interval, with the exception's message.
    assert len(warnings) == 2, warnings
    assert "TimeoutError: Timeout reading from socket" in warnings[0]
    assert "not calling Redis for 1s" in warnings[1]


def test_breaker_closes_when_redis_is_back(settings, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    settings.RCACHE = {**settings.RCACHE, "CIRCUIT_BREAKER_FAILURES": 1, "CIRCUIT_BREAKER_SECONDS": 0.3}
    breaker = get_breaker()
    breaker.failure()
    assert Client().get("/lang/")["X-RCache"] == "BYPASS error"  # skipped, no round trip
    time.sleep(0.35)
    assert Client().get("/lang/")["X-RCache"] == "MISS"  # the probe succeeded
    assert Client().get("/lang/")["X-RCache"] == "HIT"
    assert not breaker.is_open


def test_purges_are_not_skipped_by_an_open_breaker(settings) -> None:  # type: ignore[no-untyped-def]
    settings.RCACHE = {**settings.RCACHE, "CIRCUIT_BREAKER_FAILURES": 1, "CIRCUIT_BREAKER_SECONDS": 60}
    Client().get("/lang/")
    get_breaker().failure()
    assert rdj.purge("/lang/") == 1


# -- batched purges ------------------------------------------------------------------


def _commands(r: redis.Redis) -> Dict[str, int]:
    return {k: v["calls"] for k, v in r.info("commandstats").items()}


def test_one_transaction_sends_its_purges_once(r: redis.Redis) -> None:
    a = Article.objects.create(title="parent")
    Comment.objects.bulk_create(Comment(article=a, text=str(i)) for i in range(40))
    client = Client()
    pk = a.pk
    client.get(f"/articles/{pk}/")
    client.get(f"/articles/{pk}/comments/")
    before = _commands(r)
    a.delete()  # 40 comments cascade: 41 post_delete signals in one transaction
    after = _commands(r)
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    # The article's path (prefix), the comments' path (exact, deduplicated) and one
    # PURGETAG with both of the article's tags.
    assert calls.get("cmdstat_rcache.purge") == 2, calls
    assert calls.get("cmdstat_rcache.purgetag") == 1, calls
    assert client.get(f"/articles/{pk}/comments/").json() == {"comments": []}


def test_rolled_back_batch_is_not_reused(client: Client) -> None:
    a = Article.objects.create(title="T")
    url = f"/articles/{a.pk}/"
    client.get(url)
    with pytest.raises(RuntimeError), transaction.atomic():
        a.save()
        raise RuntimeError
    assert client.get(url)["X-RCache"] == "HIT"
    with transaction.atomic():
        Article.objects.filter(pk=a.pk).update(title="new")
        a.refresh_from_db()
        a.save()
    assert client.get(url).content == b"<h1>new</h1>"


def test_soft_purges(client: Client, cache: rcache.RCache) -> None:
    client.get("/lang/")
    client.get("/dynamic-tags/")
    assert rdj.purge("/lang/", soft=True) == 1
    assert rdj.purge_tag("dyn:a", soft=True) == 1
    assert client.get("/lang/")["X-RCache"] == "MISS"
    assert client.get("/dynamic-tags/")["X-RCache"] == "MISS"


def test_purge_waits_for_replicas(settings, redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    settings.RCACHE = {**settings.RCACHE, "PURGE_WAIT_REPLICAS": 1, "PURGE_WAIT_TIMEOUT": 0.3}
    with running_server() as replica_server:
        replica = replica_server.client(socket_timeout=10)
        redis_server.client().config_set("repl-diskless-sync-delay", 0)  # sync now, not in 5 s
        replica.replicaof("127.0.0.1", redis_server.port)
        deadline = time.monotonic() + 10
        while replica.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "replica did not sync"
            time.sleep(0.05)
        Client().get("/lang/")
        key_args = ["RCACHE.GET", "/lang/", "VARY", "2", ":language", "en-us", ":timezone", "UTC"]
        deadline = time.monotonic() + 10
        while replica.execute_command(*key_args) is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with caplog.at_level(logging.WARNING, logger="rcache.django"):
            assert rdj.purge("/lang/") == 1
            # WAIT returned: the replica has applied the purge, no polling needed.
            assert replica.execute_command(*key_args) is None
            replica.replicaof("NO", "ONE")
            assert rdj.purge("/lang/") == 0
        assert [rec.getMessage() for rec in caplog.records] == [
            "rcache: purge acknowledged by 0 of 1 replica(s) within 0.3s"
        ]


# -- manage.py rcache and the admin action --------------------------------------------


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("rcache", *args, stdout=out)
    return out.getvalue()


def test_manage_py_rcache(client: Client) -> None:
    a = Article.objects.create(title="M")
    client.get(f"/articles/{a.pk}/")
    client.get(f"/articles/{a.pk}/comments/")
    client.get("/lang/")
    assert _run("list") == f"/articles/{a.pk}/\n/articles/{a.pk}/comments/\n/lang/\n"
    assert _run("list", "/articles", "--count", "1") == f"/articles/{a.pk}/\n"
    assert "entries: 3" in _run("stats").splitlines()
    assert _run("purge", f"/articles/{a.pk}/", "--exact") == "1 entries purged\n"
    assert _run("purge-tag", "nothing", "--soft") == "0 entries made stale\n"  # needs SOFTPURGETAG
    assert _run("purge", "/") == "2 entries purged\n"


def test_manage_py_rcache_reports_redis_errors(settings) -> None:  # type: ignore[no-untyped-def]
    from django.core.management import CommandError

    from rcache_server import free_port

    settings.RCACHE = {**settings.RCACHE, "URL": f"redis://127.0.0.1:{free_port()}/0"}
    with pytest.raises(CommandError, match="ConnectionError"):
        _run("purge", "/")


def test_admin_purge_cached_pages_action(client: Client) -> None:
    User.objects.create_superuser("admin", password="pw")
    a = Article.objects.create(title="Adm")
    client.get(f"/articles/{a.pk}/")
    client.get("/articles/")
    admin = Client()
    admin.login(username="admin", password="pw")
    r = admin.post(
        "/admin/testapp/article/",
        {"action": "purge_cached_pages", "_selected_action": [a.pk]},
        follow=True,
    )
    assert r.status_code == 200 and b"Purged 2 cached page(s)." in r.content
    assert client.get(f"/articles/{a.pk}/")["X-RCache"] == "MISS"
    assert client.get("/articles/")["X-RCache"] == "MISS"  # tagged "articles"


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"PURGE_WAIT_REPLICAS": 1, "PURGE_WAIT_TIMEOUT": 1.0, "SOCKET_TIMEOUT": 0.5}, "shorter than SOCKET_TIMEOUT"),
        ({"PURGE_WAIT_REPLICAS": 1, "CLUSTER": True}, "not available with CLUSTER"),
        ({"NO_SUCH_SETTING": 1}, "unknown key"),
    ],
)
def test_bad_settings_are_refused(settings, extra: Dict[str, object], message: str) -> None:  # type: ignore[no-untyped-def]
    from django.core.exceptions import ImproperlyConfigured

    settings.RCACHE = {**settings.RCACHE, **extra}
    with pytest.raises(ImproperlyConfigured, match=message):
        rdj.get_settings()
