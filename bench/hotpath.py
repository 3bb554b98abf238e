"""Hot-path benchmark (issue 12): RCACHE.GET, RCACHE.LOOKUP (hit, no lease) and
RCACHE.SET of the realistic request (with QUERY) against native GET / SET PX on keys
of the same length, in the same run, pipelined 16 and not.

Run by bench.py after the throughput phase (every mode), or alone with
`bench/run.sh hotpath` (N = 1M entries loaded, native and rcache only).

The reads are also measured through bench/floor/floor.c, loaded into the rcache server:
the same requests answered with only what the module API makes any module pay (dispatch,
the entry's key name, open, reply). Its ratio to native is the most a module can reach.
"""
import os
import subprocess
import time

import schemes as S

CLIENTS = 50
SIZE = 1024
VARIANT = 1  # QUERY lang=en&page=2: what a web framework sends for most pages
# (operation, pipeline depth, target ratio rcache ÷ native, or None: reported only)
CASES = (
    ("GET", 16, 0.95), ("LOOKUP", 16, 0.90), ("SET", 16, 0.80),
    ("GET", 1, None), ("LOOKUP", 1, None), ("SET", 1, None),
)
BASE = "/x/hot/t/0/phase/0/match/"  # + 12-digit id, like the throughput keyspace
# Repetitions (more than the other phases': on a shared 2-core machine single runs vary
# by 2x, and the medians are what the targets are judged on); smoke keeps its own.
MIN_REPS = 5


def paths(k):
    return ("%s%012d" % (BASE, i) for i in range(k))


FLOOR_BUILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor", "build.sh")


class Floor:
    """bench/floor/floor.c's commands, on the rcache server (it reads rcache's entries)."""
    name = "floor"

    def __init__(self, rcache):
        self.server = rcache.server


def load_floor(b, rcache, path):
    """Builds floor.so and loads it into the rcache server; a Floor, or None (warned)."""
    out = os.path.join(rcache.server.dir, "floor.so")
    built = subprocess.run([FLOOR_BUILD, out], capture_output=True, text=True)
    if built.returncode != 0:
        b.warn("floor module not built (%s): the module-API floor is not measured" % built.stderr.strip()[-200:])
        return None
    key = rcache.real_key(path, VARIANT)
    prefix = "rcache:{%s}" % path
    b.check(key.startswith(prefix), "floor: rcache's key %r starts with %r" % (key, prefix))
    rcache.raw.call("MODULE", "LOAD", out, key[len(prefix):], str(SIZE))
    return Floor(rcache)


def args_for(sch, op, path, value):
    """redis-benchmark arguments and the commandstats name of one request."""
    if sch.name == "floor":
        return ["FLOOR.%s" % op, path] + S.rcache_opts(VARIANT), "floor.%s" % op.lower()
    if op == "SET":
        return sch.set_args(path, VARIANT, value), sch.set_cmd_stat
    if op == "LOOKUP" and sch.name == "rcache":
        return ["RCACHE.LOOKUP", path] + S.rcache_opts(VARIANT), "rcache.lookup"
    return sch.get_args(path, VARIANT), sch.get_cmd_stat


def case_name(op, pl):
    return "%s 1KB P%d query" % (op, pl)


def run_one(b, tools, sch, op, pl, perf_dir):
    Perf, cmd_delta = tools["Perf"], tools["cmd_delta"]
    k = b.cfg["tp_keys"]
    n = b.cfg["n_p16"] if pl == 16 else b.cfg["n_p1"]
    args, stat = args_for(sch, op, BASE + "__rand_int__", b.value[SIZE].decode())
    srv = sch.server
    before = srv.cmdstats()
    hits = lambda: b.rcache_info(srv).get("rcache_hits", 0) if sch.name == "rcache" else srv.info("stats")["keyspace_hits"]
    hits0 = hits()
    cmd = [b.args.redis_benchmark, "-h", "127.0.0.1", "-p", str(srv.port), "-c", str(CLIENTS),
           "-n", str(n), "-r", str(k), "-P", str(pl), "--csv"] + args
    with Perf(perf_dir, srv.proc.pid, "hot-%s-%s-P%d" % (sch.name, op, pl)):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    d = cmd_delta(before, srv.cmdstats(), stat)
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    rps = 0.0
    if p.returncode == 0 and len(lines) >= 2:
        try:
            rps = float(lines[-1].split('","')[1].strip('"'))
        except (IndexError, ValueError):
            rps = 0.0
    what = "hotpath %s %s P%d" % (sch.name, op, pl)
    b.check(rps > 0, "%s: redis-benchmark reported throughput (rc=%d, stderr=%r)" % (what, p.returncode, p.stderr[-300:]))
    b.check(d["calls"] >= n and d["failed_calls"] == 0 and d["rejected_calls"] == 0,
            "%s: server ran %d commands without errors (calls=%d failed=%d rejected=%d)"
            % (what, n, d["calls"], d["failed_calls"], d["rejected_calls"]))
    if op != "SET":
        hits1 = hits()
        b.check(hits1 - hits0 >= 0.99 * n, "%s: reads hit (%d hits of %d)" % (what, hits1 - hits0, n))
    return rps, (d["usec"] / d["calls"] if d["calls"] else None)


def phase(b, tools):
    """Measures every case on the native and rcache servers of Bench `b`; results in
    b.res["hotpath"]. `tools`: bench.py's log, Perf and cmd_delta (bench.py runs as __main__)."""
    log = tools["log"]
    if not all(n in b.schemes for n in ("native", "rcache")):
        return
    k = b.cfg["tp_keys"]
    reps = b.cfg["reps"] if b.mode == "smoke" else max(b.cfg["reps"], MIN_REPS)
    log("\n== hot path: GET / LOOKUP / SET with QUERY, 1 KB, %d keys, %d reps" % (k, reps))
    for name in ("native", "rcache"):
        b.load(b.schemes[name], ((p, VARIANT) for p in paths(k)), SIZE, "hot-path keys")
    schemes = dict(b.schemes)
    floor = load_floor(b, b.schemes["rcache"], next(paths(1)))
    if floor:
        schemes["floor"] = floor
    profiled = set()
    out = {}
    for rep in range(reps):
        for op, pl, target in CASES:
            row = out.setdefault(case_name(op, pl), {"op": op, "pipeline": pl, "target": target,
                                                     "rps": {}, "usec_per_call": {}})
            order = ["native", "rcache"] + (["floor"] if floor and op != "SET" else [])
            for name in (order if rep % 2 == 0 else order[::-1]):
                perf_dir = None
                if b.args.perf and pl == 16 and (name, op) not in profiled:
                    profiled.add((name, op))
                    perf_dir = b.args.perf
                rps, upc = run_one(b, tools, schemes[name], op, pl, perf_dir)
                row["rps"].setdefault(name, []).append(rps)
                row["usec_per_call"].setdefault(name, []).append(upc)
        log("  hot path rep %d done (%.0fs elapsed)" % (rep + 1, time.time() - b.t_start))
    for cname, row in out.items():
        row["ratio"] = [r / n for r, n in zip(row["rps"]["rcache"], row["rps"]["native"])]
        if "floor" in row["rps"]:
            row["floor_ratio"] = [r / n for r, n in zip(row["rps"]["floor"], row["rps"]["native"])]
        log("  %-22s native %.0f/s  rcache %.0f/s  ratio %.3f (floor %s)  µs/call %.2f / %.2f" % (
            cname, _med(row["rps"]["native"]), _med(row["rps"]["rcache"]), _med(row["ratio"]),
            "%.3f" % _med(row["floor_ratio"]) if "floor_ratio" in row else "-",
            _med(row["usec_per_call"]["native"]) or 0, _med(row["usec_per_call"]["rcache"]) or 0))
    b.res["hotpath"] = out


def _med(xs):
    import statistics
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def targets(res):
    """[(target, measured, status)] rows for the report's Targets table."""
    from report import mm
    out = []
    for cname, row in res.get("hotpath", {}).items():
        if row.get("target") is None:
            continue
        native = "native SET PX" if row["op"] == "SET" else "native GET"
        m = _med(row["ratio"])
        status = "n/a" if m is None else ("MET" if m >= row["target"] else "MISSED")
        measured = mm(row["ratio"])
        if row.get("floor_ratio"):
            measured += "; module-API floor %s" % mm(row["floor_ratio"])
        out.append(("RCACHE.%s ≥ %.2f × %s (P16, 1 KB, QUERY)" % (row["op"], row["target"], native), measured, status))
    return out


def render(res):
    """The report's hot-path section (markdown), or '' when it was not measured."""
    from report import f, kops, mm, table
    hp = res.get("hotpath")
    if not hp:
        return ""
    rows = []
    for cname, row in hp.items():
        native = "SET PX" if row["op"] == "SET" else "GET"
        floor_upc = f(_med(row["usec_per_call"].get("floor", [])), "%.2f")
        rows.append([cname, native, kops(row["rps"]["native"]), kops(row["rps"]["rcache"]), mm(row["ratio"]),
                     mm(row["floor_ratio"]) if row.get("floor_ratio") else "—",
                     "%s / %s / %s" % (f(_med(row["usec_per_call"]["native"]), "%.2f"),
                                       f(_med(row["usec_per_call"]["rcache"]), "%.2f"), floor_upc)])
    return "\n".join([
        "## Hot path (issue 12: GET, LOOKUP, SET with QUERY)\n",
        "`RCACHE.GET|LOOKUP|SET path QUERY lang=en&page=2` (1 KB values) against native `GET` / `SET … PX` "
        "on keys of the same length, redis-benchmark with 50 clients, schemes alternating, ratio pair by pair; "
        "server µs/call from INFO commandstats. The floor (`bench/floor/floor.c`, loaded into the rcache "
        "server) answers the same read requests doing only what the module API makes any module pay: "
        "dispatch, the entry's key name, open, reply; no parsing, checks or digests. Its ratio is the "
        "most a module can reach with these requests.\n",
        table(["case", "native command", "native ops/s", "rcache ops/s", "rcache ÷ native", "floor ÷ native",
               "server µs/call (native / rcache / floor)"], rows),
        "",
    ])
