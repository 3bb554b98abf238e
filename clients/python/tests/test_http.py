"""The test project under real servers -- gunicorn (WSGI) and uvicorn (ASGI) -- on
loopback, driven over HTTP: language variants, async class views, a hung Redis."""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from rcache_server import RedisServer, _die_with_parent, _stop, free_port, running_server

HERE = Path(__file__).resolve().parent


@dataclass
class Response:
    status: int
    headers: Dict[str, str]
    body: bytes
    seconds: float


@dataclass
class Site:
    kind: str
    base: str
    process: subprocess.Popen  # type: ignore[type-arg]
    log: Path

    def get(self, path: str, headers: Optional[Dict[str, str]] = None, opener: Any = None) -> Response:
        req = urllib.request.Request(self.base + path, headers=headers or {})
        start = time.monotonic()
        try:
            with (opener or urllib.request.build_opener()).open(req, timeout=30) as resp:
                body, status, hdrs = resp.read(), resp.status, resp.headers
        except urllib.error.HTTPError as exc:
            body, status, hdrs = exc.read(), exc.code, exc.headers
        return Response(status, {k.lower(): v for k, v in hdrs.items()}, body, time.monotonic() - start)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _env(db: Path, redis_url: str, options: Dict[str, Any]) -> Dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings_http",
        "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
        "RCACHE_TEST_DB": str(db),
        "RCACHE_TEST_URL": redis_url,
        "RCACHE_TEST_OPTIONS": json.dumps(options),
        "RENDER_COUNTER_URL": redis_url,
    }


@contextlib.contextmanager
def serving(kind: str, db: Path, redis_url: str, options: Optional[Dict[str, Any]] = None, env: Optional[Dict[str, str]] = None) -> Iterator[Site]:
    port = free_port()
    if kind == "gunicorn":
        cmd = [sys.executable, "-m", "gunicorn", "testproject.wsgi:application", "-b", f"127.0.0.1:{port}",
               "-k", "gthread", "--threads", "8", "-w", "1", "--timeout", "120"]
    elif kind == "gunicorn-sync":  # 3 processes, one request at a time each
        cmd = [sys.executable, "-m", "gunicorn", "testproject.wsgi:application", "-b", f"127.0.0.1:{port}",
               "-k", "sync", "-w", "3", "--timeout", "120"]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "testproject.asgi:application", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    log = Path(tempfile.mkstemp(prefix=f"rcache-{kind}-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=HERE, env={**_env(db, redis_url, options or {}), **(env or {})},
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    site = Site(kind, f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                site.get("/login-as/probe/")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{kind} did not start:\n{site.log_text()[-3000:]}", pytrace=False)
                time.sleep(0.1)
        yield site
    finally:
        _stop(proc)
        log.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def db() -> Iterator[Path]:
    """A SQLite file with the project's tables, shared by the server processes."""
    with tempfile.TemporaryDirectory(prefix="rcache-http-") as d:
        path = Path(d) / "db.sqlite3"
        subprocess.run([sys.executable, "-m", "django", "migrate", "--run-syncdb", "-v", "0"], cwd=HERE,
                       env=_env(path, "redis://127.0.0.1:1/0", {}), check=True)
        yield path


LEASES = {"LEASE_TIME": 10, "LEASE_WAIT": 5, "SOCKET_TIMEOUT": 1}


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def site(request: pytest.FixtureRequest, db: Path, redis_server: RedisServer) -> Iterator[Site]:
    with serving(request.param, db, redis_server.url, LEASES) as s:
        yield s


def article(db: Path, title: str) -> int:
    with sqlite3.connect(db) as conn:
        cur = conn.execute("INSERT INTO testapp_article (title) VALUES (?)", (title,))
        return int(cur.lastrowid or 0)


def parallel(n: int, fn: Any) -> List[Any]:
    results: List[Any] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# -- variants -----------------------------------------------------------------------


def test_each_language_gets_its_own_page(site: Site, r: Any) -> None:
    expected = {"fr": "fr: 1 décembre 2026", "en": "en: Dec. 1, 2026", "de": "de: 1. Dezember 2026"}
    for state in ("MISS", "HIT"):
        for lang, body in expected.items():
            resp = site.get("/date/", {"Accept-Language": lang})
            assert resp.body.decode() == body, (site.kind, state, lang)
            assert resp.headers["content-language"] == lang
            assert resp.headers["x-rcache"] == state
    # fr and fr-FR,fr;q=0.9 are the same French page.
    resp = site.get("/date/", {"Accept-Language": "fr-FR,fr;q=0.9"})
    assert resp.body.decode() == expected["fr"] and resp.headers["x-rcache"] == "HIT"


# -- async class views ------------------------------------------------------------------


def test_async_class_views(site: Site, r: Any) -> None:
    for url in ("/async-on-class/", "/async-dispatch/", "/async-class/"):
        first, second = site.get(url), site.get(url)
        assert (first.status, second.status) == (200, 200), url
        assert (first.headers["x-rcache"], second.headers["x-rcache"]) == ("MISS", "HIT"), url
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    assert site.get("/login-as/carol/", opener=opener).status == 200
    mine = site.get("/async-on-class/", opener=opener)
    assert mine.status == 200 and mine.body == b"async on class, user=carol"
    assert mine.headers["x-rcache"] == "BYPASS auth"
    assert site.get("/async-on-class/").body == b"async on class, user=anonymous"


# -- leases: one render per miss, never a stale refill -------------------------------------


def _slow_url(site: Site) -> str:
    # uvicorn runs sync views one at a time (Django's thread_sensitive executor): the
    # async view is the one 50 concurrent requests can all reach at once there.
    return "/slow-async/" if site.kind == "uvicorn" else "/slow/"


def test_fifty_concurrent_misses_render_once(site: Site, db: Path, r: Any) -> None:
    article(db, "stampede")
    url = _slow_url(site) + "?delay=1"
    responses = parallel(50, lambda i: site.get(url))
    assert {resp.status for resp in responses} == {200}
    assert len({resp.body for resp in responses}) == 1
    assert int(r.get("renders:slow") or 0) == 1, [resp.headers.get("x-rcache") for resp in responses]
    states = sorted(resp.headers["x-rcache"] for resp in responses)
    assert states.count("MISS") == 1 and states.count("HIT") == 49


def test_misses_in_several_processes_render_once(db: Path, redis_server: RedisServer, r: Any) -> None:
    with serving("gunicorn-sync", db, redis_server.url, LEASES) as s:
        responses = parallel(12, lambda i: s.get("/slow/?delay=1"))
    assert {resp.status for resp in responses} == {200}
    assert int(r.get("renders:slow") or 0) == 1, [resp.headers.get("x-rcache") for resp in responses]


def test_a_save_during_a_render_is_never_overwritten_by_it(site: Site, db: Path, r: Any) -> None:
    pk = article(db, "old")
    url = _slow_url(site) + "?delay=1.5"
    started = time.monotonic()
    holder: List[Response] = []
    t = threading.Thread(target=lambda: holder.append(site.get(url)))
    t.start()
    time.sleep(0.5)  # the render has read the old title and is still working
    assert site.get(f"/set-title/{pk}/new/").body == b"saved"  # purge_on_save purges the "articles" tag
    t.join(30)
    assert time.monotonic() - started >= 1.5
    assert b"old" in holder[0].body and holder[0].headers["x-rcache"] == "BYPASS invalidated"
    after = site.get(url)
    assert b"new" in after.body and b"old" not in after.body, after.body
    assert after.headers["x-rcache"] == "MISS"


# -- a hung Redis -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_hung_redis_costs_one_timeout_per_interval(kind: str, db: Path) -> None:
    options = {"SOCKET_TIMEOUT": 0.25, "CIRCUIT_BREAKER_FAILURES": 3, "CIRCUIT_BREAKER_SECONDS": 1.0, "WARNING_INTERVAL": 60}
    with running_server() as redis_srv, serving(kind, db, redis_srv.url, options) as s:
        url = "/async/" if kind == "uvicorn" else "/lang/"
        assert s.get(url).headers["x-rcache"] == "MISS"
        assert s.get(url).headers["x-rcache"] == "HIT"
        before = json.loads(s.get("/breaker/").body)
        redis_srv.process.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()

            def hammer(i: int) -> List[Tuple[int, float]]:
                out = []
                while time.monotonic() - start < 3.0:
                    resp = s.get(url)
                    out.append((resp.status, resp.seconds))
                return out

            results = [x for per_thread in parallel(4, hammer) for x in per_thread]
            after = json.loads(s.get("/breaker/").body)
        finally:
            redis_srv.process.send_signal(signal.SIGCONT)
        assert all(status == 200 for status, _ in results)
        # Redis calls that waited for the 0.25 s timeout: before the breaker opens, the 4
        # requests in flight plus at most 2 more (sent by a client whose request failed
        # before the 3rd failure opened it), then one probe per 1 s interval (3 s).
        # Without the breaker every request would be one.
        failed = after["failed"] - before["failed"]
        assert 3 <= failed <= 4 + 2 + 3, (failed, len(results))
        assert after["skipped"] - before["skipped"] >= len(results) - failed - 4
        warnings = [line for line in s.log_text().splitlines() if line.startswith("rcache:")]
        assert 1 <= len(warnings) <= 2, warnings
        assert "TimeoutError: Timeout reading from" in warnings[0]  # the exception's message is kept
        # Redis is back: within an interval the breaker's probe succeeds and pages are cached again.
        deadline = time.monotonic() + 5
        while s.get(url).headers.get("x-rcache") != "HIT":
            assert time.monotonic() < deadline, "the breaker never closed"
            time.sleep(0.1)
