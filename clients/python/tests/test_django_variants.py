"""What a page is keyed on: language, time zone, normalised query and Accept-Language;
and what must never be shared (RFC 9111 3.5 Authorization)."""

from __future__ import annotations

import pytest
from django.test import Client

from testproject.testapp.views import CALLS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rcache_site")]


@pytest.fixture()
def locale_middleware(settings) -> None:  # type: ignore[no-untyped-def]
    mw = list(settings.MIDDLEWARE)
    mw.insert(mw.index("django.contrib.sessions.middleware.SessionMiddleware") + 1, "django.middleware.locale.LocaleMiddleware")
    settings.MIDDLEWARE = mw


@pytest.mark.usefixtures("locale_middleware")
def test_each_language_gets_its_own_page() -> None:
    expected = {"fr": "fr: 1 décembre 2026", "en": "en: Dec. 1, 2026", "de": "de: 1. Dezember 2026"}
    for round_ in ("MISS", "HIT"):
        for lang, body in expected.items():
            r = Client(HTTP_ACCEPT_LANGUAGE=lang).get("/date/")
            assert r.content.decode() == body, (round_, lang)
            assert r["Content-Language"] == lang and r["X-RCache"] == round_
    assert CALLS["date"] == 3


def test_time_zone_is_part_of_the_key(settings) -> None:  # type: ignore[no-untyped-def]
    from django.utils import timezone

    c = Client()
    assert c.get("/date/")["X-RCache"] == "MISS"
    with timezone.override("Europe/Paris"):
        assert c.get("/date/")["X-RCache"] == "MISS"
    assert c.get("/date/")["X-RCache"] == "HIT"
    assert CALLS["date"] == 2


def test_query_normalisation_is_opt_in() -> None:
    c = Client()
    assert c.get("/search/?page=2&q=x")["X-RCache"] == "MISS"
    for url in ("/search/?q=x&page=2", "/search/?page=2&utm_source=news&q=x&fbclid=1", "/search/?utm_medium=a&q=x&page=2"):
        r = c.get(url)
        assert r["X-RCache"] == "HIT" and r.content == b"page=2 q=x", url
    assert c.get("/search/?page=3&q=x").content == b"page=3 q=x"
    assert CALLS["search"] == 2
    # Not opted in: every query string is its own entry.
    c.get("/lang/?a=1&b=2")
    assert c.get("/lang/?b=2&a=1")["X-RCache"] == "MISS"


def test_accept_language_normalisation_is_opt_in() -> None:
    for header in ("fr", "fr-FR,fr;q=0.9", "fr-CA, en;q=0.5", "xx, fr;q=0.8"):
        r = Client(HTTP_ACCEPT_LANGUAGE=header).get("/greeting/")
        assert r.content == b"hello in fr", header
    assert CALLS["greeting"] == 1
    assert Client(HTTP_ACCEPT_LANGUAGE="de-AT").get("/greeting/").content == b"hello in de"
    assert CALLS["greeting"] == 2
    # /lang/ varies on the raw header: fr and fr-FR are separate entries there.
    Client(HTTP_ACCEPT_LANGUAGE="fr").get("/lang/")
    assert Client(HTTP_ACCEPT_LANGUAGE="fr-FR").get("/lang/")["X-RCache"] == "MISS"


def test_authorization_requests_are_neither_served_nor_stored() -> None:
    anon = Client()
    assert anon.get("/api/me/").json() == {"token": ""}  # stored for anonymous requests
    alice = Client(HTTP_AUTHORIZATION="Token alice")
    r = alice.get("/api/me/")
    assert r.json() == {"token": "Token alice"} and r["X-RCache"] == "BYPASS authorization"
    r = Client(HTTP_AUTHORIZATION="Token bob").get("/api/me/")
    assert r.json() == {"token": "Token bob"}  # never alice's, never the anonymous page
    assert anon.get("/api/me/")["X-RCache"] == "HIT"
    assert anon.get("/api/me/").json() == {"token": ""}
    assert CALLS["api_me"] == 3


def test_explicitly_public_or_opted_in_responses_are_shared() -> None:
    alice = Client(HTTP_AUTHORIZATION="Token alice")
    assert alice.get("/api/public/")["X-RCache"] == "MISS"  # Cache-Control: public
    assert Client(HTTP_AUTHORIZATION="Token bob").get("/api/public/")["X-RCache"] == "HIT"
    assert Client().get("/api/public/")["X-RCache"] == "HIT"
    assert alice.get("/api/shared/")["X-RCache"] == "MISS"  # cache_authorization=True
    assert Client(HTTP_AUTHORIZATION="Token bob").get("/api/shared/")["X-RCache"] == "HIT"
    assert CALLS["api_public"] == 1 and CALLS["api_shared"] == 1
