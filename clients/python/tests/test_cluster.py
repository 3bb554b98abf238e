"""The client and Django on a real 3-primary Redis Cluster (loopback, module on every node).

What the client does: keyed commands (SET/GET/LOOKUP/DEL/KEY, and PURGE/LIST of a
prefix) are routed by the path -- redis-py reads the module's key positions from
COMMAND -- and the keyless PURGETAG goes to one primary.  Covering the *whole*
cluster with a purge of an untagged prefix or a tag is the module's fan-out (the
cluster issue): not tested here.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator, List

import pytest
import redis
from django.test import Client

import rcache
import rcache.django as rdj
from rcache_server import RedisServer, running_server
from testproject.testapp.models import Article

SLOTS = [(0, 5460), (5461, 10922), (10923, 16383)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[List[RedisServer]]:
    with contextlib.ExitStack() as stack:
        nodes = [
            stack.enter_context(running_server(server_args=["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]))
            for _ in SLOTS
        ]
        conns = [n.client(socket_timeout=10) for n in nodes]
        for conn, (lo, hi) in zip(conns, SLOTS):
            conn.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for n in nodes[1:]:
            conns[0].execute_command("CLUSTER", "MEET", "127.0.0.1", n.port)
        deadline = time.monotonic() + 20
        while not all(
            c.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") >= 0
            and len(c.execute_command("CLUSTER", "NODES").decode().splitlines()) == 3
            for c in conns
        ):
            assert time.monotonic() < deadline, "the cluster did not form"
            time.sleep(0.1)
        for c in conns:
            c.close()
        yield nodes


@pytest.fixture()
def rc(cluster: List[RedisServer]) -> Iterator[redis.RedisCluster]:
    conn = redis.RedisCluster(host="127.0.0.1", port=cluster[0].port, socket_timeout=10)
    conn.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    try:
        yield conn
    finally:
        conn.close()


def _entries(cluster: List[RedisServer]) -> List[int]:
    return [int(n.client().info("rcache")["rcache_entries"]) for n in cluster]


def test_keyed_commands_route_by_path(cluster: List[RedisServer], rc: redis.RedisCluster) -> None:
    cache = rcache.RCache(rc)
    paths = [f"/c/{i}" for i in range(30)]
    for p in paths:
        assert cache.set(p, p.encode(), ttl=60, query="a=1", vary={"accept": "x"}, tags=["all"]) is True
    for p in paths:
        assert cache.get(p, query="a=1", vary={"accept": "x"}) == p.encode()
        found = cache.lookup(p, query="a=1", vary={"accept": "x"})
        assert found.state == "FRESH" and found.value == p.encode()
    per_node = _entries(cluster)
    assert sum(per_node) == 30 and sum(1 for n in per_node if n) >= 2, per_node  # spread over shards
    assert cache.purge("/c/7") == 1  # routed to /c/7's owner
    assert cache.delete("/c/8", query="a=1", vary={"accept": "x"}) == 1
    assert cache.get("/c/7", query="a=1", vary={"accept": "x"}) is None


def test_hash_tagged_site_lives_in_one_slot(cluster: List[RedisServer], rc: redis.RedisCluster) -> None:
    cache = rcache.RCache(rc)
    for i in range(10):
        cache.set(f"{{site1}}/a/{i}", b"x", tags=["site1"])
    assert sorted(_entries(cluster)) == [0, 0, 10]
    assert cache.list("{site1}/a", count=100) == sorted(f"{{site1}}/a/{i}".encode() for i in range(10))
    assert cache.purge("{site1}/a/3") == 1
    assert cache.soft_purge("{site1}/a/4") == 1
    assert cache.purge("{site1}/a") == 8  # a soft purge with grace 0 removed /a/4
    assert _entries(cluster) == [0, 0, 0]


def test_keyless_tag_purge_is_accepted(rc: redis.RedisCluster) -> None:
    # redis-py refuses a keyless command without a target; the client sends it to one primary.
    cache = rcache.RCache(rc)
    assert cache.purge_tag("nothing") == 0
    assert cache.soft_purge_tag("nothing") == 0


@pytest.mark.django_db(transaction=True)
def test_django_on_a_cluster(cluster: List[RedisServer], rc: redis.RedisCluster, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RCACHE = {
        **settings.RCACHE,
        "URL": f"redis://127.0.0.1:{cluster[1].port}/0",
        "CLUSTER": True,
        "PATH_PREFIX": "{site1}",  # the whole site in one slot: prefix purges cover it
    }
    client = Client()
    a = Article.objects.create(title="cluster")
    url = f"/articles/{a.pk}/"
    assert client.get(url)["X-RCache"] == "MISS"
    assert client.get(url)["X-RCache"] == "HIT"
    assert client.get(f"{url}comments/")["X-RCache"] == "MISS"
    a.title = "changed"
    a.save()  # purge_on_save: one pipeline through the cluster client
    r = client.get(url)
    assert r["X-RCache"] == "MISS" and r.content == b"<h1>changed</h1>"
    assert rdj.purge(url) == 1  # the page (the comments page went with the save)


def test_info_on_a_cluster(cluster: List[RedisServer], rc: redis.RedisCluster) -> None:
    cache = rcache.RCache(rc)
    cache.set("{a}/1", b"x")
    info = cache.info()
    assert "entries" in info and isinstance(info["entries"], int)


def test_purge_list_and_info_cover_the_whole_cluster(cluster: List[RedisServer], rc: redis.RedisCluster) -> None:
    """Paths spread over every primary's slots: the module fans purges and LIST out,
    and info() sums the primaries."""
    cache = rcache.RCache(rc)
    rc.flushall(target_nodes=rc.get_primaries())
    paths = ["/w/%d" % i for i in range(30)]
    for p in paths:
        cache.set(p, b"v", tags=["w-tag"] if p.endswith(("0", "5")) else None)
    slots = {rc.keyslot(cache.key(p)) for p in paths}
    owners = {rc.nodes_manager.get_node_from_slot(s).name for s in slots}
    assert len(owners) == 3, "the paths span every primary"
    assert sorted(cache.list("/w", count=100)) == sorted(p.encode() for p in paths)
    assert cache.info()["entries"] == 30
    assert cache.purge_tag("w-tag") == 6
    assert cache.purge("/w") == 24
    assert cache.list("/w") == []
    assert cache.info()["entries"] == 0
