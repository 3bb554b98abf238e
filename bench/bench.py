#!/usr/bin/env python3
"""rcache benchmark suite: native vs rcache vs SCAN purge vs Lua tag sets.

Usage: python3 bench/bench.py {full|quick|smoke} [options]   (see bench/README.md)

Every scheme gets its own freshly started redis-server (same binary, same
config, loopback only, no persistence, no maxmemory); all of them stay up
during the run so that every repetition measures the schemes back to back and
ratios are computed pair by pair.
"""
import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import random
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # keep bench/ free of __pycache__

import redis  # noqa: E402

from resp import Raw, RespError, encode  # noqa: E402
import schemes as S  # noqa: E402
import hotpath  # noqa: E402

REPO = os.path.dirname(HERE)
DEFAULT_MODULE = os.path.join(REPO, "target", "release", "librcache.so")

ENTRIES_PER_PHASE = 10
VARIANTS_PER_MATCH = (1, 2, 3, 1, 3)  # 5 match paths, 10 entries per phase
assert sum(VARIANTS_PER_MATCH) == ENTRIES_PER_PHASE

MODES = {
    # n: entries; fan: (phases per tournament, tournaments per site)
    # tag_n: entries per round of the tag-memory phase
    "full": dict(n=1_000_000, fan=(100, 100), reps=3, tp_keys=100_000,
                 n_p16=1_000_000, n_p1=200_000, tag_n=100_000, time_limit=3 * 3600),
    "quick": dict(n=100_000, fan=(100, 100), reps=3, tp_keys=10_000,
                  n_p16=80_000, n_p1=15_000, tag_n=20_000, time_limit=600),
    # issue 12's hot-path cases alone (bench/hotpath.py), native and rcache only
    "hotpath": dict(n=1_000_000, fan=(100, 100), reps=3, tp_keys=100_000,
                    n_p16=1_000_000, n_p1=200_000, time_limit=3600),
    "smoke": dict(n=3_000, fan=(10, 10), reps=2, tp_keys=500,
                  n_p16=4_000, n_p1=1_000, tag_n=2_000, time_limit=120),
}
CLIENTS = 50
# Request coalescing: this many clients miss one entry at once; the one granted the
# lease "renders" for RENDER_MS and stores, the others wait for it.
COALESCE_CLIENTS = 1000
RENDER_MS = 20
TAGS_PER_ENTRY = (0, 1, 8, 64)  # tag-memory phase; 0 is the untagged reference
TAG_POOL = 1000  # distinct tags the entries draw from
LUA_N_DIVISOR = 4
SIZES = (1024, 100)


class CheckFailed(Exception):
    pass


# ----------------------------------------------------------------- utilities
def log(*a):
    print(*a, flush=True)


def med(xs):
    return statistics.median(xs) if xs else None


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """One redis-server on 127.0.0.1:<free port>, killed by stop()."""

    def __init__(self, name, workdir, module=None, binary="redis-server"):
        self.name = name
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.module = module
        self.binary = binary
        self.proc = None
        self.port = None
        self.r = None

    def start(self):
        last = None
        for _ in range(3):
            self.port = free_port()
            args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--dir", self.dir, "--logfile", "redis.log",
                    "--protected-mode", "yes", "--maxmemory", "0",
                    "--enable-module-command", "local"]  # the hot path loads its floor module
            if self.module:
                args += ["--loadmodule", self.module]
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            deadline = time.time() + 10
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    r = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=600)
                    r.ping()
                    self.r = r
                    return self
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)
            last = self.log_tail()
            self.stop()
        raise RuntimeError("redis-server %s did not start:\n%s" % (self.name, last))

    def log_tail(self, n=15):
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def info(self, section):
        return self.r.info(section)

    def cmdstats(self):
        out = {}
        for k, v in self.r.info("commandstats").items():
            if k.startswith("cmdstat_"):
                out[k[len("cmdstat_"):]] = v
        return out

    def used_memory(self):
        return int(self.r.info("memory")["used_memory"])


def cmd_delta(before, after, name):
    a = after.get(name, {})
    b = before.get(name, {})
    return {k: a.get(k, 0) - b.get(k, 0) for k in ("calls", "usec", "failed_calls", "rejected_calls")}


# ------------------------------------------------------------------ workload
class Workload:
    """N entries on /s/<sid>/t/<tid>/phase/<pid>/match/<mid>, 1-3 variants per path."""

    def __init__(self, n, phases_per_t, ts_per_site):
        if n % ENTRIES_PER_PHASE:
            raise ValueError("N must be a multiple of %d" % ENTRIES_PER_PHASE)
        self.n = n
        self.n_phases = n // ENTRIES_PER_PHASE
        self.ppt = phases_per_t
        self.tps = ts_per_site
        self.levels = []  # (M, level name, phases per unit)
        for name, unit in (("phase", 1), ("tournament", phases_per_t),
                           ("site", phases_per_t * ts_per_site)):
            if self.n_phases >= unit:
                self.levels.append((unit * ENTRIES_PER_PHASE, name, unit))
        # The whole cache: every site is under /s.
        if self.n_phases > self.levels[-1][2]:
            self.levels.append((self.n, "all", self.n_phases))

    def phase_prefix(self, g):
        per_site = self.ppt * self.tps
        return "/s/%d/t/%d/phase/%d" % (g // per_site, (g // self.ppt) % self.tps, g % self.ppt)

    def entries(self, g0, g1):
        for g in range(g0, g1):
            base = self.phase_prefix(g)
            for m, nv in enumerate(VARIANTS_PER_MATCH):
                path = "%s/match/%d" % (base, g * 5 + m)
                for v in range(nv):
                    yield path, v

    def target(self, unit, rep):
        """Prefix covering exactly `unit` phases, different for each rep."""
        n_units = self.n_phases // unit
        u = (rep * 7919 + 3) % n_units
        g0 = u * unit
        g1 = g0 + unit
        parts = self.phase_prefix(g0).split("/")  # ['', 's', sid, 't', tid, 'phase', pid]
        if unit == 1:
            prefix = "/".join(parts)
        elif unit == self.ppt:
            prefix = "/".join(parts[:5])
        elif unit == self.n_phases:
            prefix = "/s"
        else:
            prefix = "/".join(parts[:3])
        return prefix, g0, g1

    def neighbour(self, g0, g1):
        """A phase index outside [g0, g1) (None if the target is everything)."""
        if g1 < self.n_phases:
            return g1
        if g0 > 0:
            return g0 - 1
        return None


TP_PATH = "/x/tp%d/t/0/phase/0/match/"  # throughput keyspace: + 12-digit id; outside /s, the whole-cache purge
PROBE_PATH = "/probe/0"


def tp_paths(size, k):
    base = TP_PATH % size
    return ("%s%012d" % (base, i) for i in range(k))


# ------------------------------------------------------------------ prober
def _probe_loop(conn, ready, stop):
    """Child process: on ('run', port, cmd, max_s) issue cmd in a tight loop
    until `stop` is set, then send back (starts, latencies, errors, misses, busy):
    `busy` counts BUSY replies (a script ran past busy-reply-threshold), the other
    errors are in `errors`."""
    raws = {}
    pc = time.perf_counter_ns
    while True:
        msg = conn.recv()
        if msg[0] == "quit":
            break
        _, port, cmd, max_s = msg
        try:
            raw = raws.get(port)
            if raw is None:
                raw = raws[port] = Raw(port)
            st = array("q")
            lat = array("q")
            errors = misses = busy = 0
            raw.call_raw(cmd)
            end = pc() + int(max_s * 1e9)
            ready.set()
            while not stop.is_set():
                t0 = pc()
                r = raw.call_raw(cmd)
                t1 = pc()
                st.append(t0)
                lat.append(t1 - t0)
                if r is None:
                    misses += 1
                elif isinstance(r, RespError):
                    if str(r).startswith("BUSY"):
                        busy += 1
                    else:
                        errors += 1
                if t1 > end:
                    break
            conn.send((st.tobytes(), lat.tobytes(), errors, misses, busy, None))
        except Exception as e:  # reported to the parent
            ready.set()
            conn.send((b"", b"", 0, 0, 0, repr(e)))
    for raw in raws.values():
        raw.close()


def add_sample(schemes, name, sample):
    """Appends one purge's figures to `name`'s lists in `schemes`."""
    s = schemes.setdefault(name, {k: [] for k in sample})
    for k, v in sample.items():
        s[k].append(v)


def summarise_purges(M, schemes):
    """Each scheme's times against rcache's, pair by pair, and one log line."""
    rc = schemes.get("rcache")
    for name, s in schemes.items():
        if name != "rcache" and rc:
            s["wall_ratio_vs_rcache"] = [a / b if b else None for a, b in zip(s["wall_ms"], rc["wall_ms"])]
            s["busy_ratio_vs_rcache"] = [a / b if b else None for a, b in zip(s["busy_ms"], rc["busy_ms"])]
    log("  M=%-7d %s" % (M, "  ".join("%s reply %.3f ms done %.1f ms busy %.3f ms stall max %.3f ms" % (
        n, med(s["wall_ms"]), med(s["done_ms"]), med(s["busy_ms"]), med(s["stall_max_ms"]))
        for n, s in schemes.items())))


class Prober:
    """A second process issuing GETs in a tight loop, recording each latency.

    The process is long-lived (forked once) so that fork/copy-on-write costs
    do not show up as latency; each window() runs one measuring loop."""

    def __init__(self):
        ctx = mp.get_context("fork")
        self.ready = ctx.Event()
        self.stop_ev = ctx.Event()
        self.conn, child = ctx.Pipe()
        self.p = ctx.Process(target=_probe_loop, args=(child, self.ready, self.stop_ev), daemon=True)
        self.p.start()

    def begin(self, port, cmd, max_s=60):
        self.stop_ev.clear()
        self.ready.clear()
        self.conn.send(("run", port, cmd, max_s))
        if not self.ready.wait(10):
            raise RuntimeError("prober did not start")

    def end(self):
        self.stop_ev.set()
        if not self.conn.poll(70):
            raise RuntimeError("prober did not stop")
        st, lat, errors, misses, busy, err = self.conn.recv()
        if err:
            raise RuntimeError("prober failed: " + err)
        a, b = array("q"), array("q")
        a.frombytes(st)
        b.frombytes(lat)
        return a, b, errors, misses, busy

    def close(self):
        try:
            if self.p.is_alive():
                self.stop_ev.set()
                self.conn.send(("quit",))
                self.p.join(5)
        finally:
            if self.p.is_alive():
                self.p.kill()
                self.p.join(5)


class Perf:
    """Optional `perf record -g` of a server process (bench.py --perf DIR)."""

    def __init__(self, outdir, pid, tag):
        self.outdir, self.pid, self.tag = outdir, pid, tag
        self.p = None

    def __enter__(self):
        if not self.outdir:
            return self
        os.makedirs(self.outdir, exist_ok=True)
        self.data = os.path.join(self.outdir, self.tag + ".data")
        cg = ["--call-graph", os.environ["PERF_CALL_GRAPH"]] if os.environ.get("PERF_CALL_GRAPH") else ["-g"]
        self.p = subprocess.Popen(["perf", "record", "-F", "4999"] + cg + ["-p", str(self.pid), "-o", self.data],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        if not self.p:
            return
        self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
        txt = os.path.join(self.outdir, self.tag + ".txt")
        with open(txt, "w") as fh:
            subprocess.run(["perf", "report", "-i", self.data, "--stdio", "--no-children",
                            "--percent-limit", "1", "-g", "none"], stdout=fh, stderr=subprocess.DEVNULL, timeout=300)
        log("  perf profile: " + txt)


# ------------------------------------------------------------------ runner
class Bench:
    def __init__(self, args):
        self.args = args
        self.mode = args.mode
        cfg = dict(MODES[args.mode])
        for k in ("n", "reps", "tp_keys"):
            if getattr(args, k, None):
                cfg[k] = getattr(args, k)
        self.cfg = cfg
        self.wl = Workload(cfg["n"], *cfg["fan"])
        self.value = {sz: self._value(sz) for sz in SIZES}
        self.failures = []
        self.warnings = []
        self.servers = {}
        self.schemes = {}
        self.res = {"mode": self.mode, "cfg": {k: v for k, v in cfg.items()},
                    "throughput": {}, "purge": {}, "memory": {}, "checks": []}
        self.t_start = time.time()
        self._profiled = {}
        self._quiet_s = {}

    @staticmethod
    def _value(size):
        rnd = random.Random(size)
        alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        return bytes(rnd.choice(alphabet) for _ in range(size))

    # -- checks
    def check(self, ok, what):
        self.res["checks"].append((bool(ok), what))
        if not ok:
            self.failures.append(what)
            log("  CHECK FAILED: " + what)
            if self.mode == "smoke" and not self.args.keep_going:
                raise CheckFailed(what)
        return ok

    def warn(self, what):
        self.warnings.append(what)
        log("  WARNING: " + what)

    # -- setup
    def start(self, names, module, workdir):
        for name in names:
            srv = Server(name, workdir, module=module if name == "rcache" else None,
                         binary=self.args.redis_server)
            srv.start()
            self.servers[name] = srv
            sch = S.ALL[name](srv)
            sch.connect()
            self.schemes[name] = sch
            log("  started %-6s redis-server on 127.0.0.1:%d" % (name, srv.port))

    def stop(self):
        for sch in self.schemes.values():
            try:
                sch.close()
            except Exception:
                pass
        for srv in self.servers.values():
            srv.stop()

    def load(self, sch, entries, size, what):
        value = self.value[size]
        t0 = time.time()
        n, errors = sch.raw.pipeline(sch.load_cmd(p, v, value) for p, v in entries)
        self.check(not errors, "%s: load %s without errors (first: %s)" % (sch.name, what, errors[:1]))
        return n, time.time() - t0

    # -- phase 1: load + memory
    def phase_load(self):
        wl = self.wl
        n = wl.n
        log("\n== load: N=%d entries (%d paths, 1 KB values) per scheme" % (n, wl.n_phases * 5))
        for name, sch in self.schemes.items():
            srv = sch.server
            m0 = srv.used_memory()
            idx0 = self.rcache_info(srv).get("rcache_index_bytes") if name == "rcache" else None
            cnt, dt = self.load(sch, wl.entries(0, wl.n_phases), 1024, "N entries")
            m1 = srv.used_memory()
            mem = {"used_memory_delta": m1 - m0, "per_entry": (m1 - m0) / n, "load_s": dt}
            dbsize = srv.r.dbsize()
            if name == "rcache":
                info = self.rcache_info(srv)
                ent = info.get("rcache_entries")
                self.check(ent == n, "rcache: INFO rcache_entries == N after load (got %r)" % ent)
                ib = info.get("rcache_index_bytes")
                if ib is None:
                    self.warn("INFO rcache has no rcache_index_bytes field: index bytes/entry is n/a")
                    mem["index_bytes"] = None
                else:
                    mem["index_bytes"] = ib
                    mem["index_bytes_base"] = idx0 or 0
                    mem["index_per_entry"] = (ib - (idx0 or 0)) / n
                self.check(dbsize == n, "rcache: DBSIZE == N after load (got %d)" % dbsize)
            elif name == "lua":
                self.check(dbsize > n, "lua: DBSIZE > N after load (entries + tag sets; got %d)" % dbsize)
                mem["tag_sets"] = dbsize - n
            else:
                self.check(dbsize == n, "%s: DBSIZE == N after load (got %d)" % (name, dbsize))
            self.res["memory"][name] = mem
            log("  %-6s loaded %d in %.1fs (%.0f/s), used_memory +%.1f MB = %.0f B/entry%s" % (
                name, cnt, dt, cnt / dt if dt else 0, (m1 - m0) / 1e6, mem["per_entry"],
                (", index %.1f B/entry" % mem["index_per_entry"]) if mem.get("index_per_entry") is not None else ""))
        nat = self.res["memory"].get("native")
        if nat:
            for name, mem in self.res["memory"].items():
                mem["over_native_per_entry"] = mem["per_entry"] - nat["per_entry"]
        # sample reads: each scheme serves what it stored
        for name, sch in self.schemes.items():
            for (p, v) in [next(wl.entries(0, 1)), next(wl.entries(wl.n_phases - 1, wl.n_phases))]:
                self.check(sch.is_live(p, v), "%s: entry %s v%d readable after load" % (name, p, v))
        if "rcache" in self.schemes:
            self.check_key_names()

    # -- phase 4: what tags cost
    def phase_tag_memory(self):
        """Bytes per (entry, tag) pair: tag_n entries of 100 B with k tags each (drawn from
        TAG_POOL), against the same entries untagged, from INFO rcache_index_bytes (what
        the allocator holds for the module) and from used_memory; each round is purged."""
        sch = self.schemes["rcache"]
        srv = sch.server
        n = self.cfg["tag_n"]
        value = self.value[100]
        log("\n== tag memory: %d entries of 100 B per round, tags drawn from %d" % (n, TAG_POOL))
        rounds = {}
        # An unmeasured untagged round first: the keyspace's own tables grow to size
        # there, not in the first measured round.
        for k in (None,) + TAGS_PER_ENTRY:
            prefix = "/tagmem/%s" % ("warmup" if k is None else k)

            def cmds():
                for i in range(n):
                    tags = ["tag:%d" % ((i * 7 + t * 13) % TAG_POOL) for t in range(k or 0)]
                    yield encode("RCACHE.SET", "%s/%d" % (prefix, i), value, *((["TAGS", str(k)] + tags) if k else []))
            i0, m0 = self.rcache_info(srv).get("rcache_index_bytes", 0), srv.used_memory()
            _, errors = sch.raw.pipeline(cmds())
            i1, m1 = self.rcache_info(srv).get("rcache_index_bytes", 0), srv.used_memory()
            self.check(not errors, "rcache: tag-memory load with %s tags/entry without errors (first: %s)" % (k, errors[:1]))
            removed = srv.r.execute_command("RCACHE.PURGE", prefix)
            self.check(removed == n, "rcache: tag-memory round %s purged %d entries (got %r)" % (k, n, removed))
            # Otherwise the next round's figures net out this round's background frees.
            self.wait_purged(srv)
            if k is not None:
                rounds[k] = {"index_bytes": i1 - i0, "used_memory": m1 - m0}
        base = rounds[0]
        for k, r in rounds.items():
            r["index_per_entry"] = r["index_bytes"] / n
            if k:
                r["index_per_pair"] = (r["index_bytes"] - base["index_bytes"]) / (n * k)
                r["used_per_pair"] = (r["used_memory"] - base["used_memory"]) / (n * k)
            log("  %2d tags/entry: index %.1f B/entry%s" % (k, r["index_per_entry"], (
                ", %.1f B per (entry, tag) pair over untagged (used_memory: %.1f)" % (r["index_per_pair"], r["used_per_pair"])) if k else ""))
        hi, lo = max(TAGS_PER_ENTRY), sorted(TAGS_PER_ENTRY)[-2]
        marginal = (rounds[hi]["index_bytes"] - rounds[lo]["index_bytes"]) / (n * (hi - lo))
        log("  one more pair (%d vs %d tags/entry): %.1f B" % (hi, lo, marginal))
        self.check(marginal > 0, "rcache: tags cost index memory (marginal %.1f B/pair)" % marginal)
        self.res["tag_memory"] = {"n": n, "pool": TAG_POOL, "rounds": {str(k): r for k, r in rounds.items()},
                                  "marginal_per_pair": marginal, "marginal_between": [lo, hi]}

    def wait_purged(self, srv):
        """Until rcache's background purges are done (INFO rcache_purge_pending 0).
        Polls at 1 ms, backing off to 20 ms: an INFO every 2 ms for seconds competed with
        the server and the prober for the 2 cores and showed up in the stall figures."""
        pause = 0.001
        while int(self.rcache_info(srv).get("rcache_purge_pending", 0)) > 0:
            time.sleep(pause)
            pause = min(0.02, pause * 1.5)

    def rcache_info(self, srv):
        try:
            return srv.r.info("rcache")
        except redis.exceptions.ResponseError:
            return {}

    def check_key_names(self):
        """Native keys must have the same length as rcache's real keys."""
        rc = self.schemes["rcache"]
        nat = S.Native(None)
        rows = []
        for path in ("/s/1/t/2/phase/3/match/4", (TP_PATH % 1024) + "000000000001"):
            for v in (0, 1, 2):
                real = rc.real_key(path, v)
                mine = nat.key(path, v)
                rows.append((path, v, real, len(real), len(mine)))
                if len(real) != len(mine):
                    self.warn("RCACHE.KEY %s v%d = %r (len %d) but native key len %d: key lengths differ"
                              % (path, v, real, len(real), len(mine)))
        p, v = next(self.wl.entries(0, 1))
        real = rc.real_key(p, v)
        self.check(rc.server.r.exists(real) == 1, "rcache: RCACHE.KEY %s names an existing key (%r)" % (p, real))
        self.check(real.startswith("rcache:") and p in real, "rcache: key %r starts with rcache: and contains the path" % real)
        self.res["key_names"] = rows

    # -- phase 2: throughput
    def throughput_cases(self):
        cases = []
        for size in SIZES:
            for pl in (16, 1):
                for op in ("GET", "SET"):
                    cases.append((op, size, pl, 0))
        cases.append(("GET", 1024, 16, 2))
        cases.append(("SET", 1024, 16, 2))
        return cases

    def phase_throughput(self):
        k = self.cfg["tp_keys"]
        names = [n for n in ("native", "rcache", "lua") if n in self.schemes]
        log("\n== throughput: redis-benchmark -c %d, keyspace %d random keys, %d reps" % (CLIENTS, k, self.cfg["reps"]))
        for name in names:
            sch = self.schemes[name]
            for size in SIZES:
                variants = (0, 2) if (size == 1024 and name != "lua") else (0,)
                for v in variants:
                    self.load(sch, ((p, v) for p in tp_paths(size, k)), size, "throughput keys %dB v%d" % (size, v))
        cases = self.throughput_cases()
        out = {}
        for rep in range(self.cfg["reps"]):
            for case in cases:
                op, size, pl, v = case
                cname = "%s %s %s%s" % (op, "1KB" if size == 1024 else "%dB" % size,
                                        "P16" if pl == 16 else "P1", " query+vary" if v else "")
                order = [n for n in names if not (op == "GET" and n == "lua") and not (n == "lua" and v)]
                if rep % 2:
                    order.reverse()
                row = out.setdefault(cname, {"op": op, "size": size, "pipeline": pl, "variant": v, "rps": {}, "usec_per_call": {}})
                for name in order:
                    rps, upc = self.run_redis_benchmark(self.schemes[name], op, size, pl, v)
                    row["rps"].setdefault(name, []).append(rps)
                    row["usec_per_call"].setdefault(name, []).append(upc)
            log("  rep %d done (%.0fs elapsed)" % (rep + 1, time.time() - self.t_start))
        for cname, row in out.items():
            row["ratio"] = {}
            nat = row["rps"].get("native")
            for name, xs in row["rps"].items():
                if name != "native" and nat:
                    row["ratio"][name] = [a / b for a, b in zip(xs, nat)]
            log("  %-26s %s" % (cname, "  ".join(
                "%s %.0f/s" % (n, med(xs)) for n, xs in row["rps"].items()) + "  " + "  ".join(
                "%s/native %.3f" % (n, med(xs)) for n, xs in row["ratio"].items())))
        self.res["throughput"] = out

    def run_redis_benchmark(self, sch, op, size, pl, v):
        k = self.cfg["tp_keys"]
        path = (TP_PATH % size) + "__rand_int__"
        args = sch.get_args(path, v) if op == "GET" else sch.set_args(path, v, self.value[size].decode())
        n = self.cfg["n_p16"] if pl == 16 else self.cfg["n_p1"]
        if sch.name == "lua":
            n = max(1000, n // LUA_N_DIVISOR)  # ~5x slower: keep each run about as long
        srv = sch.server
        stat = sch.get_cmd_stat if op == "GET" else sch.set_cmd_stat
        before = srv.cmdstats()
        ks0 = srv.info("stats") if op == "GET" else None
        rc0 = self.rcache_info(srv) if (op == "GET" and sch.name == "rcache") else None
        cmd = [self.args.redis_benchmark, "-h", "127.0.0.1", "-p", str(srv.port), "-c", str(CLIENTS),
               "-n", str(n), "-r", str(k), "-P", str(pl), "--csv"] + args
        prof = self.args.perf if (self.args.perf and pl == 16 and size == 1024 and v == 0
                                  and sch.name in ("rcache", "native") and not self._profiled.get((sch.name, op))) else None
        if prof:
            self._profiled[(sch.name, op)] = True
        with Perf(prof, srv.proc.pid, "%s-%s" % (sch.name, op)):
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        after = srv.cmdstats()
        d = cmd_delta(before, after, stat)
        rps = 0.0
        lines = [l for l in p.stdout.splitlines() if l.strip()]
        if p.returncode == 0 and len(lines) >= 2:
            try:
                rps = float(lines[-1].split('","')[1].strip('"'))
            except (IndexError, ValueError):
                rps = 0.0
        what = "%s %s %dB P%d v%d" % (sch.name, op, size, pl, v)
        self.check(rps > 0, "%s: redis-benchmark reported throughput (rc=%d, stderr=%r)" % (what, p.returncode, p.stderr[-300:]))
        self.check(d["calls"] >= n and d["failed_calls"] == 0 and d["rejected_calls"] == 0,
                   "%s: server ran %d commands without errors (calls=%d failed=%d rejected=%d)"
                   % (what, n, d["calls"], d["failed_calls"], d["rejected_calls"]))
        if op == "GET":
            if sch.name == "rcache":
                rc1 = self.rcache_info(srv)
                hits = rc1.get("rcache_hits", 0) - (rc0 or {}).get("rcache_hits", 0)
            else:
                hits = srv.info("stats")["keyspace_hits"] - ks0["keyspace_hits"]
            self.check(hits >= 0.99 * n, "%s: GETs hit (%d hits of %d)" % (what, hits, n))
        upc = d["usec"] / d["calls"] if d["calls"] else None
        return rps, upc

    # -- phase 3: purge
    def phase_purge(self):
        names = [n for n in ("rcache", "lua", "scan") if n in self.schemes]
        log("\n== purge: M in %s, %d reps, concurrent GET prober" % ([m for m, _, _ in self.wl.levels], self.cfg["reps"]))
        for name in names:
            self.load(self.schemes[name], [(PROBE_PATH, 0)], 1024, "probe entry")
            # warm the prober's connection to this server
            self.prober.begin(self.servers[name].port, self.schemes[name].get_cmd(PROBE_PATH, 0))
            time.sleep(0.02)
            self.prober.end()
        out = {}
        for (M, level, unit) in self.wl.levels:
            row = out.setdefault(str(M), {"level": level, "prefixes": [], "schemes": {}})
            for rep in range(self.cfg["reps"]):
                prefix, g0, g1 = self.wl.target(unit, rep)
                row["prefixes"].append(prefix)
                order = names[rep % len(names):] + names[:rep % len(names)]
                for name in order:
                    add_sample(row["schemes"], name, self.purge_once(self.schemes[name], prefix, g0, g1, M))
            summarise_purges(M, row["schemes"])
        self.res["purge"] = out

    def phase_purge_tag(self):
        """PURGETAG of a tag that one site's entries carry (M of the largest level below
        the whole cache), next to the Lua scheme's purge of that site's set: its tag sets
        are sets of keys, so purging a tag is the same operation. SCAN has no tags."""
        names = [n for n in ("rcache", "lua") if n in self.schemes]
        M, level, unit = [lv for lv in self.wl.levels if lv[1] != "all"][-1]
        log("\n== purge by tag: M=%d (one %s's entries), %d reps" % (M, level, self.cfg["reps"]))
        out = {"M": M, "level": level, "tags": [], "schemes": {}}
        for rep in range(self.cfg["reps"]):
            prefix, g0, g1 = self.wl.target(unit, rep)
            tag = "site:" + prefix.split("/")[2]
            out["tags"].append(tag)
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                sch = self.schemes[name]
                if name == "rcache":
                    value = self.value[1024]
                    _, errors = sch.raw.pipeline(encode(*(sch.set_args(p, v, value) + ["TAGS", "1", tag]))
                                                 for p, v in self.wl.entries(g0, g1))
                    self.check(not errors, "rcache: tagging %s's entries without errors (first: %s)" % (prefix, errors[:1]))
                add_sample(out["schemes"], name, self.purge_once(sch, prefix, g0, g1, M, tag=tag))
        summarise_purges(M, out["schemes"])
        self.res["purge_tag"] = out

    def purge_once(self, sch, prefix, g0, g1, M, tag=None):
        """One purge of `prefix` (or of `tag`, which exactly the entries under it carry)
        with the GET prober running; checks it removed exactly those, and refills them."""
        srv = sch.server
        wl = self.wl
        before = srv.cmdstats()
        rinfo0 = self.rcache_info(srv) if sch.name == "rcache" else None
        probe_cmd = sch.get_cmd(PROBE_PATH, 0)
        pr = self.prober
        prof = self.args.perf if (self.args.perf and not self._profiled.get((sch.name, M))) else None
        if prof:
            self._profiled[(sch.name, M)] = True
        perf = Perf(prof, srv.proc.pid, "%s-purge-%d" % (sch.name, M))
        perf.__enter__()
        # The same prober first runs without a purge for as long as rcache's last drain
        # of this size took: the longest GET of that quiet window is the machine's own,
        # the yardstick for the stalls measured while the purge drains.
        quiet_key = (tag is not None, M)
        quiet_s = self._quiet_s.get(quiet_key, 0.03) if sch.name == "rcache" else 0.03
        pr.begin(srv.port, probe_cmd)
        try:
            time.sleep(quiet_s)
            t0 = time.perf_counter_ns()
            removed = sch.purge_tagged(tag, prefix) if tag else sch.purge(prefix)
            t1 = time.perf_counter_ns()
            # rcache replies once the entries are hidden and removes big ones in the
            # background: the prober keeps measuring stalls until that is done too.
            t_done = t1
            if sch.name == "rcache":
                self.wait_purged(srv)
                t_done = time.perf_counter_ns()
                self._quiet_s[quiet_key] = max(0.03, (t_done - t0) / 1e9)
            time.sleep(0.01)
        finally:
            st, lat, perr, pmiss, pbusy = pr.end()
            perf.__exit__(None, None, None)
        after = srv.cmdstats()
        busy_us = sum(cmd_delta(before, after, c)["usec"] for c in sch.purge_cmds)
        fails = sum(cmd_delta(before, after, c)["failed_calls"] for c in sch.purge_cmds)
        during = [l for s, l in zip(st, lat) if s < t_done and s + l > t0]
        idle = [l for s, l in zip(st, lat) if s + l < t0]
        what = "%s %s (M=%d)" % (sch.name, "PURGETAG %s" % tag if tag else "PURGE %s" % prefix, M)
        self.check(removed == M, "%s: removed %r entries" % (what, removed))
        self.check(fails == 0, "%s: no failed purge commands" % what)
        # A script that runs past busy-reply-threshold (5 s) makes Redis answer BUSY to
        # everyone: what the Lua scheme does to a site on a slow machine, not a fault
        # of the benchmark. rcache runs no script, so for it any error is one.
        self.check(len(st) > 0 and perr == 0 and pmiss == 0 and (pbusy == 0 or sch.name != "rcache"),
                   "%s: concurrent prober got %d replies, %d errors, %d BUSY, %d misses" % (what, len(st), perr, pbusy, pmiss))
        if pbusy:
            self.warn("%s: the concurrent GETs got %d BUSY replies (its script ran past busy-reply-threshold)" % (what, pbusy))
        # covered entries really are gone, a neighbour is untouched
        ents = list(wl.entries(g0, g1))
        sample = [ents[0], ents[-1], ents[len(ents) // 2]]
        self.check(not any(sch.is_live(p, v) for p, v in sample), "%s: covered entries are gone" % what)
        nb = wl.neighbour(g0, g1)
        if nb is not None:
            p, v = next(wl.entries(nb, nb + 1))
            self.check(sch.is_live(p, v), "%s: neighbour %s still readable" % (what, p))
        self.check(sch.is_live(PROBE_PATH, 0), "%s: probe entry still readable" % what)
        if sch.name == "rcache":
            rinfo1 = self.rcache_info(srv)
            if "rcache_entries" in rinfo1:
                self.check(rinfo0["rcache_entries"] - rinfo1["rcache_entries"] == M,
                           "%s: rcache_entries dropped by M (%d -> %d)" % (what, rinfo0["rcache_entries"], rinfo1["rcache_entries"]))
        # refill so N stays constant for the next measurement
        self.load(sch, iter(ents), 1024, "refill %s" % prefix)
        return {
            "removed": removed,
            "wall_ms": (t1 - t0) / 1e6,
            "done_ms": (t_done - t0) / 1e6,
            "busy_ms": busy_us / 1e3,
            "stall_max_ms": (max(during) / 1e6) if during else None,
            "stall_p99_ms": (pct(during, 99) / 1e6) if during else None,
            "stall_samples": len(during),
            "idle_p99_ms": (pct(idle, 99) / 1e6) if idle else None,
            "idle_max_ms": (max(idle) / 1e6) if idle else None,
            "idle_window_ms": quiet_s * 1e3,
        }

    # -- phase 4: request coalescing (leases)
    def phase_coalescing(self):
        if "rcache" not in self.schemes:
            return
        srv, n = self.servers["rcache"], COALESCE_CLIENTS
        log("\n== coalescing: %d concurrent LOOKUP LEASE WAIT misses on one entry, %d reps" % (n, self.cfg["reps"]))
        out = {"clients": n, "render_ms": RENDER_MS, "renders": [], "waits": [], "served": [],
               "last_answer_after_set_ms": [], "median_answer_after_set_ms": []}
        conns = [Raw(srv.port, timeout=30) for _ in range(n)]
        ctl = Raw(srv.port)
        try:
            for rep in range(self.cfg["reps"]):
                r = self.coalesce_once(srv, conns, ctl, "/coalesce/%d" % rep)
                for k, v in r.items():
                    out[k].append(v)
                log("  rep %d: %d origin render(s), %d waited, %d served by the one SET, last answered %.1f ms after it"
                    % (rep, r["renders"], r["waits"], r["served"], r["last_answer_after_set_ms"]))
        finally:
            for c in conns + [ctl]:
                c.close()
        self.res["coalescing"] = out

    def coalesce_once(self, srv, conns, ctl, path):
        """All clients send LOOKUP … LEASE WAIT at once; a client answered MISS renders
        (the lease holder then stores with its token); FRESH answers came from the store."""
        before = self.rcache_info(srv)
        lookup = encode("RCACHE.LOOKUP", path, "LEASE", 10000, "WAIT", 10000)
        for c in conns:
            c.sock.sendall(lookup)
        sel = selectors.DefaultSelector()
        for i, c in enumerate(conns):
            sel.register(c.sock, selectors.EVENT_READ, i)
        renders, answered_after_set, set_at = 0, [], None
        pending = len(conns)
        while pending:
            events = sel.select(timeout=20)
            if not self.check(events, "coalescing %s: every client answered (%d still waiting)" % (path, pending)):
                break
            for key, _ in events:
                sel.unregister(key.fileobj)
                pending -= 1
                reply = conns[key.data].read_reply()
                if not self.check(isinstance(reply, list) and len(reply) == 6, "coalescing %s: LOOKUP reply %r" % (path, reply)):
                    continue
                if reply[0] == "FRESH":
                    if set_at is not None:
                        answered_after_set.append((time.perf_counter() - set_at) * 1e3)
                    continue
                renders += 1  # a MISS: this client goes to the origin
                if reply[5] is not None:
                    time.sleep(RENDER_MS / 1e3)
                    set_at = time.perf_counter()
                    self.check(ctl.call("RCACHE.SET", path, self.value[1024], "EX", 3600, "LEASE", reply[5]) == "OK",
                               "coalescing %s: the lease holder's SET stored" % path)
        sel.close()
        after = self.rcache_info(srv)
        delta = lambda f: after.get("rcache_" + f, 0) - before.get("rcache_" + f, 0)  # noqa: E731
        self.check(delta("leases_granted") == renders, "coalescing %s: leases granted (%d) = origin renders (%d)"
                   % (path, delta("leases_granted"), renders))
        self.check(delta("lease_waits_served") == delta("lease_waits"), "coalescing %s: every waiter served by the SET" % path)
        answered_after_set.sort()
        return {
            "renders": renders,
            "waits": delta("lease_waits"),
            "served": delta("lease_waits_served"),
            "last_answer_after_set_ms": answered_after_set[-1] if answered_after_set else None,
            "median_answer_after_set_ms": med(answered_after_set) if answered_after_set else None,
        }

    # -- driver
    def run(self):
        module = self.args.module
        names = [n for n in self.args.schemes.split(",") if n]
        if "rcache" in names and not os.path.exists(module):
            if self.args.allow_missing_module:
                self.warn("module %s not found: rcache not measured" % module)
                names.remove("rcache")
            else:
                raise RuntimeError("module %s not found (build it with `cargo build --release`, "
                                   "or pass --allow-missing-module)" % module)
        self.res["env"] = env_info(self.args, module if "rcache" in names else None)
        workdir = tempfile.mkdtemp(prefix="rcache-bench-")
        try:
            if "rcache" in names:
                # a private copy: a rebuild during the run cannot change what is measured
                copy = os.path.join(workdir, os.path.basename(module))
                shutil.copy2(module, copy)
                module = copy
            log("rcache bench, mode=%s N=%d reps=%d schemes=%s" % (self.mode, self.wl.n, self.cfg["reps"], ",".join(names)))
            self.prober = Prober()  # forked early, while this process is small
            self.start(names, module, workdir)
            self.phase_load()
            if self.mode != "hotpath":
                self.phase_throughput()
            hotpath.phase(self, {"log": log, "Perf": Perf, "cmd_delta": cmd_delta})
            if self.mode != "hotpath":
                self.phase_purge()
                self.phase_purge_tag()
                self.phase_coalescing()
                if "rcache" in self.schemes:
                    self.phase_tag_memory()
            for name, srv in self.servers.items():
                self.check(srv.alive(), "%s: redis-server still running at the end" % name)
        finally:
            if getattr(self, "prober", None):
                self.prober.close()
            for name, srv in self.servers.items():
                if not srv.alive() and srv.proc is not None:
                    log("server %s died; log tail:\n%s" % (name, srv.log_tail()))
            self.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        self.res["elapsed_s"] = time.time() - self.t_start
        self.res["env"]["loadavg_end"] = loadavg()
        self.res["failures"] = self.failures
        self.res["warnings"] = self.warnings


def read_analysis():
    """bench/ANALYSIS.md (hand-written notes on missed targets), without its title."""
    ana = os.path.join(HERE, "ANALYSIS.md")
    if not os.path.exists(ana):
        return None
    with open(ana) as fh:
        return "\n".join(l for l in fh.read().splitlines() if not l.startswith("# "))


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def env_info(args, module):
    def sh(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    e = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "redis": sh(args.redis_server, "--version"),
        "cpu": "%s, %d cores" % (cpu, os.cpu_count() or 0),
        "python": platform.python_version(),
        "commit": sh("git", "-C", REPO, "rev-parse", "--short", "HEAD") or "(uncommitted)",
        "loadavg_start": loadavg(),
    }
    if module:
        st = os.stat(module)
        e["module"] = "%s (built %s)" % (os.path.relpath(module, REPO),
                                          datetime.datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M"))
    return e


# ------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=sorted(MODES))
    ap.add_argument("--module", default=os.environ.get("RCACHE_MODULE", DEFAULT_MODULE))
    ap.add_argument("--schemes", help="default: native,rcache,scan,lua (hotpath: native,rcache)")
    ap.add_argument("--allow-missing-module", action="store_true",
                    help="measure the other schemes when the module is not built")
    ap.add_argument("--n", type=int, help="override N")
    ap.add_argument("--reps", type=int, help="override repetitions")
    ap.add_argument("--tp-keys", dest="tp_keys", type=int, help="override throughput keyspace")
    ap.add_argument("--out", help="markdown output (default: bench/RESULTS.md; smoke: a temp file)")
    ap.add_argument("--json", help="raw results JSON (default: next to --out)")
    ap.add_argument("--perf", metavar="DIR", help="perf-record the servers (first P16 1KB GET/SET run, first purge of each M) into DIR")
    ap.add_argument("--keep-going", action="store_true", help="smoke: do not stop at the first failed check")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    ap.add_argument("--redis-benchmark", default=shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark")
    ap.add_argument("--render-only", metavar="JSON", help="re-render the markdown from a results.json, run nothing")
    args = ap.parse_args(argv)
    if args.schemes is None:
        args.schemes = "native,rcache" if args.mode == "hotpath" else "native,rcache,scan,lua"

    import report  # noqa: local module

    if args.render_only:
        with open(args.render_only) as fh:
            res = json.load(fh)
        res["analysis"] = read_analysis() if res.get("mode") != "smoke" else None
        out = args.out or os.path.join(HERE, "RESULTS.md")
        with open(out, "w") as fh:
            fh.write(report.render(res))
        log("wrote " + out)
        return 0

    def on_alarm(signum, frame):
        raise TimeoutError("benchmark exceeded its time limit of %ds" % MODES[args.mode]["time_limit"])

    def on_term(signum, frame):
        raise SystemExit(143)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(MODES[args.mode]["time_limit"])

    b = Bench(args)
    status = 0
    try:
        b.run()
    except CheckFailed as e:
        status = 1
        log("\nFAILED: " + str(e))
    except Exception as e:
        status = 2
        traceback.print_exc()
        b.failures.append("error: %r" % e)
        log("\nERROR: %r" % e)
    finally:
        signal.alarm(0)
    b.res["failures"] = b.failures
    b.res["warnings"] = b.warnings
    b.res.setdefault("elapsed_s", time.time() - b.t_start)

    if args.out:
        out = args.out
    elif args.mode in ("smoke", "hotpath"):
        out = os.path.join(tempfile.gettempdir(), "rcache-bench-" + args.mode, "RESULTS.md")
    else:
        out = os.path.join(HERE, "RESULTS.md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    js = args.json or os.path.join(os.path.dirname(os.path.abspath(out)), "results.json")
    if args.mode != "smoke":
        b.res["analysis"] = read_analysis()
    if status != 2 or b.res.get("memory"):
        md = report.render(b.res)
        with open(out, "w") as f:
            f.write(md)
        with open(js, "w") as f:
            json.dump(b.res, f, indent=1, default=str)
        print("\n" + md)
        log("wrote %s and %s" % (out, js))
    if b.failures and status == 0:
        status = 1
    n_ok = sum(1 for ok, _ in b.res["checks"] if ok)
    n_bad = sum(1 for ok, _ in b.res["checks"] if not ok)
    log("checks: %d passed, %d failed; elapsed %.1fs" % (n_ok, n_bad, b.res["elapsed_s"]))
    if args.mode == "smoke" and b.res["elapsed_s"] > 60:
        log("WARNING: smoke took %.1fs (budget 60s)" % b.res["elapsed_s"])
    return status


if __name__ == "__main__":
    sys.exit(main())
