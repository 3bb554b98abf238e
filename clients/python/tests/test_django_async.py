"""Async views: cached in every decoration form, through redis.asyncio, never a 500."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from django.contrib.auth.models import User
from django.test import AsyncClient, Client

import rcache.django._pages as pages
from rcache.django.conf import aclose
from testproject.testapp.views import CALLS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rcache_site")]

ASYNC_URLS = {"/async-on-class/": "async_on_class", "/async-dispatch/": "async_dispatch", "/async-class/": "async_class"}


@pytest.fixture()
def no_sync_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Async views must talk to Redis through redis.asyncio, not the sync client in a thread."""

    def refuse() -> Any:
        raise AssertionError("the sync client was used by an async view")

    monkeypatch.setattr(pages, "get_client", refuse)


@pytest.mark.usefixtures("no_sync_redis")
def test_async_class_views_are_cached_under_asgi() -> None:
    async def run() -> List[Any]:
        c = AsyncClient()
        try:
            return [await c.get(url) for url in ASYNC_URLS for _ in range(2)]
        finally:
            await aclose()

    responses = asyncio.run(run())
    for i, url in enumerate(ASYNC_URLS):
        miss, hit = responses[2 * i], responses[2 * i + 1]
        assert (miss.status_code, hit.status_code) == (200, 200), url
        assert (miss["X-RCache"], hit["X-RCache"]) == ("MISS", "HIT"), url
        assert miss.content == hit.content
    assert all(CALLS[name] == 1 for name in ASYNC_URLS.values()), CALLS


def test_async_class_views_are_cached_under_wsgi() -> None:
    c = Client()
    for url, name in ASYNC_URLS.items():
        assert c.get(url)["X-RCache"] == "MISS"
        assert c.get(url)["X-RCache"] == "HIT"
        assert CALLS[name] == 1


@pytest.mark.usefixtures("no_sync_redis")
def test_logged_in_user_gets_their_page_not_a_500() -> None:
    user = User.objects.create_user("carol", password="pw")

    async def run() -> List[Any]:
        c = AsyncClient()
        await c.aforce_login(user)
        anon = AsyncClient()
        try:
            return [await c.get("/async-on-class/"), await anon.get("/async-on-class/"), await c.get("/async-on-class/")]
        finally:
            await aclose()

    mine, anon, mine_again = asyncio.run(run())
    assert mine.status_code == 200 and mine.content == b"async on class, user=carol"
    assert mine["X-RCache"] == "BYPASS auth"
    assert anon.content == b"async on class, user=anonymous" and anon["X-RCache"] == "MISS"
    assert mine_again.content == b"async on class, user=carol"
