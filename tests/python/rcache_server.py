"""Start a throw-away ``redis-server`` with the rcache module loaded.

Shared by both Python test trees (``tests/python`` and ``clients/python/tests``):
each ``conftest.py`` imports the fixtures defined here, so there is exactly one
copy of the server-handling code.  Only the standard library and redis-py are used.

Environment:

* ``REDIS_SERVER``  -- the server binary (default ``redis-server``)
* ``RCACHE_MODULE`` -- the module to load
  (default ``/work/main/target/release/librcache.so``, i.e. ``target/release`` of
  this repository)

A missing module is a test *failure*, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pytest
import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODULE = REPO_ROOT / "target" / "release" / "librcache.so"


def module_path() -> Path:
    return Path(os.environ.get("RCACHE_MODULE") or DEFAULT_MODULE)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free and valid too."""
    import random

    for _ in range(100):
        port = random.randint(20000, 55000)
        try:
            for p in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class RedisServer:
    """A running redis-server process with the module loaded."""

    port: int
    process: subprocess.Popen
    workdir: Path
    module: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)  # type: ignore[arg-type]

    def log(self) -> str:
        try:
            return (self.workdir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: have the kernel SIGTERM the server if the test process dies without cleanup."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextlib.contextmanager
def running_server(
    module_args: Sequence[str] = (),
    timeout: float = 10.0,
    load_module: bool = True,
    server_args: Sequence[str] = (),
) -> Iterator[RedisServer]:
    """Run redis-server with the module on a free loopback port; always stop it.

    ``load_module=False`` starts a plain redis-server (to test clients against a server
    without the module); ``server_args`` are added to the server's command line (e.g.
    ``--cluster-enabled yes``)."""
    module = module_path()
    if load_module and not module.is_file():
        pytest.fail(
            f"rcache module not found at {module} (build it with `cargo build --release` "
            "or set RCACHE_MODULE)",
            pytrace=False,
        )
    server_bin = os.environ.get("REDIS_SERVER", "redis-server")
    if shutil.which(server_bin) is None and not Path(server_bin).is_file():
        pytest.fail(f"redis-server binary not found: {server_bin!r} (set REDIS_SERVER)", pytrace=False)

    workdir = Path(tempfile.mkdtemp(prefix="rcache-test-"))
    proc: Optional[subprocess.Popen] = None
    try:
        last_error: Optional[BaseException] = None
        for _attempt in range(3):  # a free port can be taken between probe and bind
            port = free_cluster_port() if "--cluster-enabled" in server_args else free_port()
            cmd = [
                server_bin,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(workdir),
                "--logfile", str(workdir / "redis.log"),
                *server_args,  # before --loadmodule: what follows it are the module's arguments
            ]
            if load_module:
                cmd += ["--loadmodule", str(module), *module_args]
            proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            server = RedisServer(port=port, process=proc, workdir=workdir, module=module)
            deadline = time.monotonic() + timeout
            conn = server.client(socket_timeout=1, socket_connect_timeout=1)
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if conn.ping():
                        break
                except redis.RedisError as exc:
                    last_error = exc
                    time.sleep(0.05)
            else:
                conn.close()
                log = server.log()
                _stop(proc)
                proc = None
                if "Address already in use" in log:
                    continue
                pytest.fail(
                    f"redis-server with {module} did not start ({last_error!r}); log:\n{log[-4000:]}",
                    pytrace=False,
                )
            conn.close()
            yield server
            return
        pytest.fail(f"could not find a free port for redis-server ({last_error!r})", pytrace=False)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server with the module for the whole test session."""
    with running_server() as server:
        yield server


@pytest.fixture()
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A raw redis-py connection (bytes replies) to an emptied server."""
    conn = redis_server.client(socket_timeout=10)
    conn.flushall()
    try:
        yield conn
    finally:
        conn.close()
