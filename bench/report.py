"""Renders the benchmark results (dict from bench.py) as bench/RESULTS.md."""
import statistics

import hotpath

NA = "n/a"


def med(xs):
    xs = [x for x in (xs or []) if x is not None]
    return statistics.median(xs) if xs else None


def rng(xs):
    xs = [x for x in (xs or []) if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def f(x, fmt="%.3f"):
    return NA if x is None else fmt % x


def mm(xs, fmt="%.3f"):
    """median (min-max)"""
    m = med(xs)
    if m is None:
        return NA
    lo, hi = rng(xs)
    if len([x for x in xs if x is not None]) == 1:
        return fmt % m
    return "%s (%s–%s)" % (fmt % m, fmt % lo, fmt % hi)


def kops(xs):
    m = med(xs)
    return NA if m is None else "%.0fk" % (m / 1e3)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def targets(res):
    """[(target, measured, status)] ; status in MET / MISSED / n/a."""
    tp = res.get("throughput", {})
    pu = res.get("purge", {})
    mem = res.get("memory", {})
    n = res["cfg"]["n"]
    full_n = n >= 1_000_000
    note_n = "" if full_n else " (N=%d, not 1M)" % n
    out = []

    def st(ok):
        return NA if ok is None else ("MET" if ok else "MISSED")

    g = tp.get("GET 1KB P16", {}).get("ratio", {}).get("rcache")
    m = med(g)
    out.append(("RCACHE.GET ≥ 0.90 × native GET (P16, 1 KB)", mm(g), st(None if m is None else m >= 0.90)))
    s = tp.get("SET 1KB P16", {}).get("ratio", {}).get("rcache")
    m = med(s)
    out.append(("RCACHE.SET ≥ 0.75 × native SET PX (P16, 1 KB)", mm(s), st(None if m is None else m >= 0.75)))

    p1k = pu.get("1000", {}).get("schemes", {})
    rc = p1k.get("rcache", {})
    w = med(rc.get("wall_ms"))
    out.append(("RCACHE.PURGE M=1,000 ≤ 1.5 ms" + note_n, mm(rc.get("wall_ms")) + " ms wall, " +
                mm(rc.get("busy_ms")) + " ms busy", st(None if w is None else w <= 1.5)))
    lr = p1k.get("lua", {}).get("wall_ratio_vs_rcache")
    m = med(lr)
    out.append(("RCACHE.PURGE M=1,000 ≥ 3 × faster than Lua tag sets" + note_n, mm(lr, "%.2f") + " ×",
                st(None if m is None else m >= 3)))
    for M, level in sorted(((int(m), v) for m, v in pu.items())):
        r = level.get("schemes", {}).get("rcache", {})
        w, stall_ms = med(r.get("wall_ms")), med(r.get("stall_max_ms"))
        out.append(("RCACHE.PURGE M=%s: reply ≤ 2 ms and longest GET stall ≤ 2 ms" % format(M, ",") + note_n,
                    "%s ms reply, %s ms stall (idle: %s ms)" % (mm(r.get("wall_ms"), "%.2f"), mm(r.get("stall_max_ms"), "%.2f"),
                                                                    mm(r.get("idle_max_ms"), "%.2f")),
                    st(None if w is None or stall_ms is None else (w <= 2 and stall_ms <= 2))))
    pt = res.get("purge_tag")
    if pt:
        r = pt["schemes"].get("rcache", {})
        w, stall_ms = med(r.get("wall_ms")), med(r.get("stall_max_ms"))
        out.append(("RCACHE.PURGETAG of a %s-entry tag: reply ≤ 2 ms and longest GET stall ≤ 2 ms" % format(pt["M"], ",") + note_n,
                    "%s ms reply, %s ms stall (idle: %s ms)" % (mm(r.get("wall_ms"), "%.2f"), mm(r.get("stall_max_ms"), "%.2f"),
                                                                    mm(r.get("idle_max_ms"), "%.2f")),
                    st(None if w is None or stall_ms is None else (w <= 2 and stall_ms <= 2))))
    rc100 = pu.get("100000", {}).get("schemes", {}).get("rcache", {})
    w = med(rc100.get("wall_ms"))
    out.append(("RCACHE.PURGE M=100,000 ≤ 150 ms" + note_n, mm(rc100.get("wall_ms"), "%.1f") + " ms wall",
                st(None if w is None else w <= 150)))
    co = res.get("coalescing")
    if co:
        worst = max((x for x in co["renders"] if x is not None), default=None)
        out.append(("origin renders per %s concurrent LOOKUP LEASE WAIT misses on one entry = 1" % format(co["clients"], ","),
                    mm(co["renders"], "%d"), st(None if worst is None else worst == 1)))
    ipe = mem.get("rcache", {}).get("index_per_entry")
    out.append(("index ≤ 100 B/entry at N=1M" + note_n, f(ipe, "%.1f") + " B/entry (INFO rcache_index_bytes / N)",
                st(None if ipe is None else ipe <= 100)))
    tm = res.get("tag_memory")
    if tm:
        lo, hi = tm["marginal_between"]
        out.append(("(entry, tag) pair ≤ 24 B beyond the tag's bytes: a further pair",
                    "%s B per pair (%d vs %d tags/entry)" % (f(tm["marginal_per_pair"], "%.1f"), hi, lo),
                    st(tm["marginal_per_pair"] <= 24)))
        lone = tm["rounds"].get("1", {}).get("index_per_pair")
        out.append(("(entry, tag) pair ≤ 24 B beyond the tag's bytes: an entry's only tag (with the record naming its key)",
                    "%s B" % f(lone, "%.1f"), st(None if lone is None else lone <= 24)))
    return out


def headline(res):
    tp = res.get("throughput", {})
    pu = res.get("purge", {})
    mem = res.get("memory", {})
    rows = []
    labels = {"GET 1KB P16": "GET, 1 KB, pipelined 16", "SET 1KB P16": "SET PX, 1 KB, pipelined 16",
              "GET 1KB P1": "GET, 1 KB, not pipelined", "SET 1KB P1": "SET PX, 1 KB, not pipelined"}
    for c, label in labels.items():
        r = tp.get(c)
        if not r:
            continue

        def cell(name):
            if name not in r["rps"]:
                return NA
            return "%s/s (%s×)" % (kops(r["rps"][name]), f(med(r["ratio"].get(name)), "%.2f"))
        rows.append([label + " (50 clients)", kops(r["rps"].get("native")) + "/s", cell("rcache"),
                     "= native" if c.startswith("GET") else cell("lua"), "= native"])
    rows_of = [("PURGE of M=%s entries" % format(int(M), ","), pu[M]["schemes"]) for M in sorted(pu, key=int)]
    pt = res.get("purge_tag")
    if pt:
        rows_of.append(("PURGETAG of a tag on %s entries" % format(pt["M"], ","), pt["schemes"]))
    for what, s in rows_of:

        def wall(name, fmt):
            x = s.get(name)
            if not x:
                return NA
            out = "%s ms" % f(med(x.get("wall_ms")), "%.2f" if med(x.get("wall_ms")) < 100 else "%.0f")
            if name != "rcache" and "rcache" in s:
                out += " (%s× rcache)" % f(med(x.get("wall_ratio_vs_rcache")), fmt)
            return out

        def stall(name):
            x = s.get(name)
            return "%s ms" % f(med(x.get("stall_max_ms")), "%.2f") if x else NA
        rows.append(["%s: wall time" % what, "—",
                     wall("rcache", ""), wall("lua", "%.1f"), wall("scan", "%.0f")])
        rows.append(["… longest stall seen by concurrent GETs (until the removal is done)", "—", stall("rcache"), stall("lua"), stall("scan")])
        done = s.get("rcache", {}).get("done_ms")
        if done:
            rows.append(["… until rcache's background removal is done (purge_pending 0)", "—",
                         "%s ms" % f(med(done), "%.1f"), "—", "—"])
    if mem:
        rows.append(["memory per entry (used_memory Δ / N)",
                     *[f(mem.get(n, {}).get("per_entry"), "%.0f") + " B" for n in ("native", "rcache", "lua", "scan")]])
        rows.append(["index bytes per entry", "0",
                     f(mem.get("rcache", {}).get("index_per_entry"), "%.0f") + " B",
                     "≈ " + f(mem.get("lua", {}).get("over_native_per_entry"), "%.0f") + " B", "0"])
    return table(["N = %s entries, 1 KB values" % format(res["cfg"]["n"], ","), "native", "rcache", "Lua tag sets",
                  "SCAN purge"], rows)


def render(res):
    env = res.get("env", {})
    cfg = res["cfg"]
    L = []
    L.append("# rcache benchmark results\n")
    L.append("Written by `bench/run.sh %s` — do not edit by hand. How and what is measured: "
             "[bench/README.md](README.md).\n" % res["mode"])
    L.append(table(["", ""], [
        ["mode", "%s: N=%s entries, %d repetitions, throughput keyspace %s keys" % (
            res["mode"], format(cfg["n"], ","), cfg["reps"], format(cfg["tp_keys"], ","))],
        ["date", env.get("date", NA)], ["redis", env.get("redis", NA)], ["CPU", env.get("cpu", NA)],
        ["module", env.get("module", "not measured")], ["commit", env.get("commit", NA)],
        ["run time", "%.0f s" % res.get("elapsed_s", 0)],
        ["load average (1/5/15 min) at start / end", "%s / %s" % (env.get("loadavg_start", NA), env.get("loadavg_end", NA))],
    ]))
    L.append("")
    if res.get("failures"):
        L.append("**%d check(s) FAILED** — numbers below are incomplete:\n" % len(res["failures"]))
        L += ["- " + x for x in res["failures"][:20]]
        L.append("")
    if res.get("warnings"):
        L.append("Warnings:\n")
        L += ["- " + x for x in res["warnings"]]
        L.append("")

    L.append("## Targets\n")
    L.append("Values are median (min–max) over the repetitions; ratios are computed pair by pair "
             "(repetition i of one scheme against repetition i of the other) and then summarised.\n")
    L.append(table(["target", "measured", "status"], targets(res) + hotpath.targets(res)))
    L.append("")
    L.append("## Headline\n")
    L.append(headline(res))
    L.append("")

    tp = res.get("throughput", {})
    if tp:
        L.append("## Throughput (redis-benchmark, 50 clients)\n")
        L.append("ops/s medians; ratio = scheme ÷ native, pair by pair; server µs/call from INFO commandstats "
                 "(the Lua column is the EVALSHA write; reads of the Lua and SCAN schemes are plain GETs, i.e. native).\n")
        rows = []
        for cname, r in tp.items():
            rows.append([cname, kops(r["rps"].get("native")), kops(r["rps"].get("rcache")),
                         mm(r["ratio"].get("rcache")),
                         kops(r["rps"].get("lua")) if "lua" in r["rps"] else "—",
                         mm(r["ratio"].get("lua")) if "lua" in r["ratio"] else "—",
                         " / ".join(f(med(r["usec_per_call"].get(n)), "%.2f") for n in ("native", "rcache", "lua")
                                    if n in r["usec_per_call"])])
        L.append(table(["case", "native ops/s", "rcache ops/s", "rcache ÷ native", "Lua ops/s", "Lua ÷ native",
                        "server µs/call (native / rcache / Lua)"], rows))
        L.append("")

    L.append(hotpath.render(res))

    pu = res.get("purge", {})
    if pu:
        L.append("## Purge\n")
        L.append("wall = client-observed time of the whole purge; busy = server time in the purge commands "
                 "(INFO commandstats usec delta: RCACHE.PURGE; the EVALSHA; SCAN + UNLINK). "
                 "× rcache = that scheme's time ÷ rcache's, pair by pair. Stall = latency of GETs another "
                 "client issued in a tight loop while the purge ran, until its removal was done. Idle = the same "
                 "prober just before the purge, with no purge running; for rcache the idle window lasts as long "
                 "as its previous drain of that size took, so its longest GET is what the machine itself shows "
                 "over that time (the first rep's window is 30 ms).\n")
        rows = []
        purges = [(format(int(M), ","), pu[M]["schemes"]) for M in sorted(pu, key=int)]
        pt = res.get("purge_tag")
        if pt:
            purges.append(("tag, %s" % format(pt["M"], ","), pt["schemes"]))
        for label, schemes in purges:
            for name in ("rcache", "lua", "scan"):
                s = schemes.get(name)
                if not s:
                    continue
                rows.append([label, name, mm(s["wall_ms"]), mm(s.get("done_ms"), "%.1f"), mm(s["busy_ms"]),
                             mm(s.get("wall_ratio_vs_rcache"), "%.1f") if name != "rcache" else "1",
                             mm(s.get("busy_ratio_vs_rcache"), "%.1f") if name != "rcache" else "1",
                             f(med(s["stall_p99_ms"])), f(med(s["stall_max_ms"])), f(med(s["idle_p99_ms"])),
                             f(med(s.get("idle_max_ms"))), f(med(s.get("idle_window_ms")), "%.0f")])
        L.append(table(["M", "scheme", "reply ms", "done ms", "busy ms", "wall × rcache", "busy × rcache",
                        "stall p99 ms", "stall max ms", "idle p99 ms", "idle max ms", "idle window ms"], rows))
        L.append("")
        L.append("Prefixes purged: " + "; ".join("M=%s: %s" % (M, ", ".join("`%s`" % p for p in pu[M]["prefixes"]))
                                                  for M in sorted(pu, key=int)) + "\n")
        if pt:
            L.append("Tags purged (each carried by exactly one site's entries): %s\n" % ", ".join("`%s`" % t for t in pt["tags"]))

    mem = res.get("memory", {})
    if mem:
        L.append("## Memory (after loading N entries of 1 KB)\n")
        rows = []
        for name in ("native", "rcache", "scan", "lua"):
            m = mem.get(name)
            if not m:
                continue
            idx = NA
            if name == "rcache":
                idx = f(m.get("index_per_entry"), "%.1f") + " (INFO rcache_index_bytes)"
            elif name == "lua":
                idx = "≈ %s (Δ vs native; %s tag sets)" % (f(m.get("over_native_per_entry"), "%.1f"), format(m.get("tag_sets", 0), ","))
            elif name in ("native", "scan"):
                idx = "0"
            rows.append([name, "%.1f MB" % (m["used_memory_delta"] / 1e6), f(m["per_entry"], "%.1f"),
                         f(m.get("over_native_per_entry"), "%+.1f"), idx, "%.1f s" % m["load_s"]])
        L.append(table(["scheme", "used_memory Δ", "B/entry", "B/entry over native", "index B/entry", "load time"], rows))
        L.append("")

    tm = res.get("tag_memory")
    if tm:
        L.append("## Tag memory\n")
        L.append("%s entries of 100 B per round, each with k tags drawn from %d; bytes per (entry, tag) pair = "
                 "(round − untagged round) ÷ (entries × k), from INFO rcache_index_bytes (what the allocator "
                 "holds for the module) and from used_memory.\n" % (format(tm["n"], ","), tm["pool"]))
        rows = []
        for k, r in sorted(tm["rounds"].items(), key=lambda kv: int(kv[0])):
            rows.append([k, f(r["index_per_entry"], "%.1f"), f(r.get("index_per_pair"), "%.1f") if k != "0" else "—",
                         f(r.get("used_per_pair"), "%.1f") if k != "0" else "—"])
        L.append(table(["tags/entry", "index B/entry", "index B/pair", "used_memory B/pair"], rows))
        L.append("")

    co = res.get("coalescing")
    if co:
        L.append("## Request coalescing (leases)\n")
        L.append("%s clients send `RCACHE.LOOKUP path LEASE 10000 WAIT 10000` for one missing entry at once. "
                 "A client answered `MISS` goes to the origin (the lease holder renders for %d ms, then "
                 "`RCACHE.SET … LEASE token`); the others block in the server and are answered `FRESH` by "
                 "that one SET. Without LEASE/WAIT every one of them would render. \"after SET\" is client-observed "
                 "(one Python process reading all sockets) from the SET's send to each FRESH answer.\n"
                 % (format(co["clients"], ","), co["render_ms"]))
        L.append(table(["origin renders", "clients that waited", "served by the one SET",
                        "median answer after SET ms", "last answer after SET ms"],
                       [[mm(co["renders"], "%d"), mm(co["waits"], "%d"), mm(co["served"], "%d"),
                         mm(co["median_answer_after_set_ms"], "%.1f"), mm(co["last_answer_after_set_ms"], "%.1f")]]))
        L.append("")

    L.append("## Checks\n")
    checks = res.get("checks", [])
    L.append("%d passed, %d failed (each scheme's work verified: loads error-free and readable, GETs hit, "
             "purges removed exactly M entries, covered entries gone, neighbours kept).\n"
             % (sum(1 for ok, _ in checks if ok), sum(1 for ok, _ in checks if not ok)))
    if res.get("analysis"):
        L.append("## What limits the missed targets\n")
        L.append("(hand-written, from [ANALYSIS.md](ANALYSIS.md); refers to the run it was written after)\n")
        L.append(res["analysis"].strip() + "\n")
    return "\n".join(L) + "\n"
