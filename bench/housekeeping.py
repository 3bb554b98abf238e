#!/usr/bin/env python3
"""Housekeeping stalls (issue 14, item 4): what the module adds to Redis' own work.

Usage: python3 bench/housekeeping.py {full|quick|smoke} [--n N] [--module PATH] [--out FILE]

With N entry keys (1,000,000 full / 100,000 quick / 3,000 smoke), each measured as the
wall time of the one blocking command, next to plain Redis doing the same on the same data
(one RDB file, loaded by both servers):
  - MODULE LOAD into a populated server (the module indexes the keyspace), next to the
    time plain Redis takes to load that data (DEBUG RELOAD), and the MODULE LOAD of the
    floor module reading every entry key once by a scan;
  - DEBUG RELOAD (save, flush, load) with and without the module, and with the module-API
    floor of indexing a load instead (bench/floor/loadfloor.c: told of each key, reads it,
    indexes nothing), so the table separates what any such module costs from rcache's own;
  - FLUSHALL ASYNC and FLUSHALL (sync) with and without the module.
Also checks that the module's index is complete after each step (INFO rcache_entries).
Writes a markdown table to --out (default bench/HOUSEKEEPING.md; smoke: a temp file).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True

from bench import DEFAULT_MODULE, Server, log  # noqa: E402
from resp import Raw, encode  # noqa: E402

MODES = {"full": 1_000_000, "quick": 100_000, "smoke": 3_000}
FLOOR_BUILD = os.path.join(HERE, "floor", "build.sh")
VALUE = b"v" * 100


def populate(port, n):
    """N entries on /s/<i//1000>/p/<i>, every 10th with one of 100 tags."""
    raw = Raw(port, timeout=600)

    def commands():
        for i in range(n):
            path = b"/s/%d/p/%d" % (i // 1000, i)
            if i % 10 == 0:
                yield encode(b"RCACHE.SET", path, VALUE, b"TAGS", b"1", b"t%d" % (i % 100))
            else:
                yield encode(b"RCACHE.SET", path, VALUE)

    count, errors = raw.pipeline(commands(), batch=2000)
    raw.close()
    if errors or count != n:
        raise RuntimeError("populate: %d replies, errors %s" % (count, errors))


def main_thread_cpu(srv):
    cpu = srv.r.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def timed(srv, *args):
    """(wall seconds, main-thread CPU seconds) of one command. The CPU time is what
    the server's main thread spent, whatever else runs on the machine."""
    c0 = main_thread_cpu(srv)
    t0 = time.perf_counter()
    srv.r.execute_command(*args)
    wall = time.perf_counter() - t0
    return wall, main_thread_cpu(srv) - c0


def entries(srv):
    return int(srv.r.info("rcache").get("rcache_entries", -1))


def dbsize(srv):
    return int(srv.r.dbsize())


class ServerWith(Server):
    """A bench Server that loads an existing RDB and may run MODULE LOAD / DEBUG."""

    def start(self):
        # Same as Server.start, plus the RDB file name and DEBUG / MODULE commands.
        import subprocess
        import redis
        from bench import free_port
        self.port = free_port()
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir, "--logfile", "redis.log",
                "--dbfilename", "dump.rdb", "--enable-debug-command", "yes",
                "--enable-module-command", "yes"]
        if self.module:
            args += ["--loadmodule", self.module]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server %s exited:\n%s" % (self.name, self.log_tail()))
            try:
                r = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=600)
                r.ping()
                self.r = r
                return self
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                time.sleep(0.05)
        raise RuntimeError("redis-server %s did not start" % self.name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=sorted(MODES))
    ap.add_argument("--n", type=int)
    ap.add_argument("--module", default=os.environ.get("RCACHE_MODULE", DEFAULT_MODULE))
    ap.add_argument("--out")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    n = args.n or MODES[args.mode]
    reps = 1 if args.mode == "smoke" else args.reps
    out = args.out or (os.path.join(tempfile.gettempdir(), "rcache-housekeeping-smoke.md")
                       if args.mode == "smoke" else os.path.join(HERE, "HOUSEKEEPING.md"))
    work = tempfile.mkdtemp(prefix="rcache-housekeeping-")
    servers = []
    failures = []

    def check(ok, what):
        log(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    try:
        t0 = time.time()
        # One dataset, made by the module, saved once, loaded by every server below.
        maker = ServerWith("maker", work, args.module).start()
        servers.append(maker)
        populate(maker.port, n)
        maker.r.execute_command("SAVE")
        rdb = os.path.join(maker.dir, "dump.rdb")
        maker.stop()
        log("populated and saved %d entries in %.1fs" % (n, time.time() - t0))
        floor_so = os.path.join(work, "loadfloor.so")
        built = subprocess.run([FLOOR_BUILD, floor_so, "loadfloor.c"], capture_output=True, text=True)
        if built.returncode != 0:
            log("WARN the load floor module was not built (%s): not measured" % built.stderr.strip()[-200:])
            floor_so = None

        def fresh(name, module):
            srv = ServerWith(name, work, module)
            shutil.copyfile(rdb, os.path.join(srv.dir, "dump.rdb"))
            srv.start()
            servers.append(srv)
            check(dbsize(srv) == n, "%s loaded %d keys" % (name, n))
            return srv

        rows = {k: [] for k in ("module_load", "module_load_floor", "reload_plain", "reload_rcache", "reload_floor", "flush_async_plain",
                                "flush_async_rcache", "flush_plain", "flush_rcache")}
        for rep in range(reps):
            plain = fresh("plain%d" % rep, None)
            rcache = fresh("rcache%d" % rep, args.module)
            check(entries(rcache) == n, "index complete after startup load")
            rows["reload_plain"].append(timed(plain, "DEBUG", "RELOAD"))
            rows["reload_rcache"].append(timed(rcache, "DEBUG", "RELOAD"))
            check(entries(rcache) == n, "index complete after DEBUG RELOAD")
            if floor_so:
                floor = fresh("floor%d" % rep, floor_so)
                rows["reload_floor"].append(timed(floor, "DEBUG", "RELOAD"))
                check(dbsize(floor) == n, "floor: %d keys after DEBUG RELOAD" % n)
                floor.stop()
                servers.remove(floor)
                floor = fresh("floorscan%d" % rep, None)
                rows["module_load_floor"].append(timed(floor, "MODULE", "LOAD", floor_so, "scan"))
                floor.stop()
                servers.remove(floor)
            rows["module_load"].append(timed(plain, "MODULE", "LOAD", args.module))
            check(entries(plain) == n, "index complete after MODULE LOAD")
            plain.stop()
            servers.remove(plain)
            plain = fresh("plainB%d" % rep, None)
            rows["flush_async_plain"].append(timed(plain, "FLUSHALL", "ASYNC"))
            rows["flush_async_rcache"].append(timed(rcache, "FLUSHALL", "ASYNC"))
            check(entries(rcache) == 0 and dbsize(rcache) == 0, "empty after FLUSHALL ASYNC")
            for srv in (plain, rcache):
                srv.r.execute_command("DEBUG", "RELOAD", "NOSAVE")
            check(entries(rcache) == n, "index complete after reloading the file")
            rows["flush_plain"].append(timed(plain, "FLUSHALL"))
            rows["flush_rcache"].append(timed(rcache, "FLUSHALL"))
            for srv in (plain, rcache):
                srv.stop()
                servers.remove(srv)

        def m(k, cpu=False):
            xs = sorted(x[1 if cpu else 0] for x in rows[k])
            return xs[(len(xs) - 1) // 2] if xs else None

        def ms(x):
            return "%.0f ms" % (x * 1000) if x >= 0.01 else "%.2f ms" % (x * 1000)

        lines = [
            "# Housekeeping stalls with N = %s entry keys" % format(n, ","),
            "",
            "`bench/housekeeping.py %s` (lower median of %d runs). Each figure is one blocking"
            " command: the wall time the client waited, and in brackets the CPU time the server's"
            " main thread spent (INFO cpu `used_cpu_*_main_thread`), which other load on the"
            " machine does not inflate. Each row compares rcache (or, where it says so, the floor"
            " module) with plain Redis doing the same work on the same RDB file." % (args.mode, reps),
            "",
            "| operation | plain Redis | with the module | added by the module (main-thread CPU) |",
            "|---|---|---|---|",
        ]

        def both(k):
            return "%s (%s)" % (ms(m(k)), ms(m(k, True)))

        def row(name, kp, kr):
            added = m(kr, True) - m(kp, True)
            base = m(kp, True)
            lines.append("| %s | %s | %s | %s (%s) |" % (name, both(kp), both(kr), ms(added),
                                                           "%+.0f %%" % (100.0 * added / base) if base > 0.001 else "n/a"))

        row("DEBUG RELOAD (save, flush, load)", "reload_plain", "reload_rcache")
        if rows["reload_floor"]:
            row("DEBUG RELOAD with the module-API floor of indexing a load (`floor/loadfloor.c`) in rcache's place",
                "reload_plain", "reload_floor")
        lines.append("| MODULE LOAD into the populated server, next to plain Redis loading the same data (DEBUG RELOAD) | %s | %s | %s of the reload |"
                     % (both("reload_plain"), both("module_load"),
                        "%.0f %%" % (100.0 * m("module_load", True) / m("reload_plain", True))))
        if rows["module_load_floor"]:
            lines.append("| MODULE LOAD of the module-API floor (`floor/loadfloor.c scan`: reads every entry key once), next to the same | %s | %s | %s of the reload |"
                         % (both("reload_plain"), both("module_load_floor"),
                            "%.0f %%" % (100.0 * m("module_load_floor", True) / m("reload_plain", True))))
        row("FLUSHALL ASYNC", "flush_async_plain", "flush_async_rcache")
        row("FLUSHALL (sync)", "flush_plain", "flush_rcache")
        lines += ["", "Raw samples (wall s / CPU s): " + ", ".join(
            "%s=%s" % (k, ["%.4f/%.4f" % x for x in v]) for k, v in rows.items()),
                  "", "Elapsed: %.0f s." % (time.time() - t0), ""]
        md = "\n".join(lines)
        with open(out, "w") as f:
            f.write(md)
        print(md)
        log("wrote %s" % out)
    finally:
        for srv in servers:
            srv.stop()
    if failures:
        log("FAILED: %s" % failures)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
