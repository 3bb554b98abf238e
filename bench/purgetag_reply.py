#!/usr/bin/env python3
"""Reply time of one RCACHE.PURGETAG of a tag on N entries (issue 11), for one or more
builds of the module, alternating, median of REPS. (`make bench` measures PURGETAG of a
100,000-entry tag next to the other purges; this script compares builds.)

    python3 bench/purgetag_reply.py N REPS module.so [other.so ...]

Each rep starts a fresh redis-server, stores N entries of 100 B under /s/<i/100>/t/<i>
with TAGS all + one of three others, sends PURGETAG all and times the reply.
"""
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from resp import Raw, encode  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def once(so, n):
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                               "--loadmodule", so], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                c = Raw(port)
                break
            except OSError:
                time.sleep(0.05)
        for base in range(0, n, 5000):
            top = min(n, base + 5000)
            c.sock.sendall(b"".join(encode("RCACHE.SET", "/s/%d/t/%d" % (i // 100, i), "x" * 100, "TAGS", "2",
                                           "tag%d" % (i % 3), "all") for i in range(base, top)))
            for _ in range(base, top):
                c.read_reply()
        t0 = time.perf_counter()
        removed = c.call("RCACHE.PURGETAG", "all")
        ms = (time.perf_counter() - t0) * 1000
        assert removed == n, removed
        return ms
    finally:
        server.kill()
        server.wait()


def main():
    n, reps, builds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    times = {so: [] for so in builds}
    for _ in range(reps):
        for so in builds:
            times[so].append(once(so, n))
    for so in builds:
        print("%s: PURGETAG of %d entries replied in %.1f ms (median of %d: %s)" % (
            so, n, statistics.median(times[so]), reps, ", ".join("%.1f" % t for t in times[so])))


if __name__ == "__main__":
    main()
