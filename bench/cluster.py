"""Benchmark several ``prismcache serve`` processes sharing one Redis, on this machine.

Measures, against a local ``redis-server`` (no persistence) and the fake upstream
(``tests/fake_upstream.py``), all on loopback:

* hit throughput with 1, 2 and 3 proxy processes: the same exact-tier and semantic-tier hit
  workloads as ``bench/proxy.py``, the client's connections spread round-robin over the
  proxies, fixed total concurrency;
* sync delay: a fresh query stored through proxy A (its response received), then proxy B
  polled with ``Cache-Control: no-store`` until it serves it; the delay includes the polling
  granularity (one request, about a millisecond);
* miss overhead with the Redis store vs SQLite: each request once straight to the upstream and
  once through one proxy with a fresh query (a miss that stores), alternating; paired
  differences;
* ``--part cluster``: two proxies over a 3-primary Redis Cluster (3 replicas, 16 buckets)
  against two proxies over one Redis: hit throughput, sync delay, miss overhead;
* ``--part capacity``: the measurements of the capacity model (``bench/capacity.py``): bytes
  per entry in Redis and in the index, load time of a partition per 100k entries;
* ``--part budget``: within an index memory budget, RSS during a burst over more partitions
  than fit, and lookup latency in a held (hot) partition vs a cold one (loading).

The client, the proxies, Redis and the upstream share the machine's CPUs: read throughput as
what this box does, not what the proxies would do each on their own cores.

    .venv/bin/python bench/cluster.py [--quick] [--part proxies|cluster|capacity|budget|all]
                                      [--out bench/results/cluster.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchkit import (
    ROOT,
    Conn,
    chat,
    free_port,
    gibberish,
    hit_workloads,
    serve_command,
    serving,
    spawn,
    stop,
    summary,
    upstream_command,
    wait_for,
)

sys.path.insert(0, str(ROOT / "tests"))
from capacity import burst, capacity, hot_and_cold  # noqa: E402
from redis_support import ClusterOfRedis, RedisServer  # noqa: E402

CONFIG = {
    "embedder": "hash:64", "classifier": {"examples": None}, "rules": [],
    "default_category": "loose", "capacity": {"entries": 100_000},
    "categories": {"loose": {"threshold": 0.5, "ttl": "1h", "quota": 1.0, "guards": []}},
}
FILLERS = ("please", "kindly", "now", "quickly", "again", "today", "here", "exactly", "simply",
           "really", "actually", "properly", "safely", "easily", "fully", "first", "then")
OUT: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    OUT.append(line)


@contextmanager
def proxies(n: int, store: str, upstream: int, tmp: Path) -> Iterator[list[int]]:
    config = tmp / "bench.yaml"
    config.write_text(json.dumps(CONFIG))  # JSON is YAML
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_port() for _ in range(n)]
    try:
        for port in ports:
            procs.append(spawn(serve_command(config, port, f"http://127.0.0.1:{upstream}/v1",
                                             store=store), cwd=tmp, new_session=True))
        for port, proc in zip(ports, procs, strict=True):
            wait_for(port, proc)
        yield ports
    finally:
        stop(procs)


async def throughput(ports: list[int], args: argparse.Namespace) -> None:
    base = "how do i reset my password"
    first = await Conn(ports[0]).open()
    await first.post(chat(base))
    await first.close()
    for port in ports:  # every proxy must have the entry before measuring
        conn = await Conn(port).open()
        while (await conn.post(chat(base), extra="cache-control: no-store\r\n"))[1].get(
                "x-prism-cache") != "hit":
            await asyncio.sleep(0.01)
        await conn.close()
    await hit_workloads(ports, base, args.hits, args.concurrency, FILLERS,
                        lambda line: say(f"  {line}"))


async def sync_delay(ports: list[int], n: int) -> None:
    a, b = await Conn(ports[0]).open(), await Conn(ports[1]).open()
    rng = random.Random(3)
    delays, polls = [], []
    for _ in range(n):
        body = chat(gibberish(rng))
        await a.post(body)
        t, count = time.perf_counter(), 0
        while True:
            count += 1
            _, headers, _ = await b.post(body, extra="cache-control: no-store\r\n")
            if headers.get("x-prism-cache") == "hit":
                break
            if time.perf_counter() - t > 5:
                raise RuntimeError("B never served A's entry")
        delays.append((time.perf_counter() - t) * 1000)
        polls.append(count)
    await a.close()
    await b.close()
    say(f"  sync delay A->B  : {summary(delays)}  first poll already a hit in "
        f"{sum(p == 1 for p in polls)}/{n}")


async def misses(port: int, upstream: int, n: int, seed: int) -> list[float]:
    direct, proxy = await Conn(upstream).open(), await Conn(port).open()
    rng = random.Random(seed)
    added = []
    for _ in range(n):
        t = time.perf_counter()
        await direct.post(chat(gibberish(rng)))
        d = time.perf_counter() - t
        t = time.perf_counter()
        _, headers, _ = await proxy.post(chat(gibberish(rng)))
        if headers.get("x-prism-cache") == "miss":  # a rare chance hit is not a miss
            added.append((time.perf_counter() - t - d) * 1000)
    await direct.close()
    await proxy.close()
    return added


def miss_overhead(store: str, upstream: int, tmp: Path, n: int) -> list[float]:
    """Paired miss overheads (ms) of one proxy over ``store``, after a warm-up."""
    with proxies(1, store, upstream, tmp) as ports:
        asyncio.run(misses(ports[0], upstream, 50, 1))
        return asyncio.run(misses(ports[0], upstream, n, 2))


def one_redis_vs_cluster(args: argparse.Namespace, n_sync: int, n_miss: int) -> None:
    """Two proxies over one Redis, then over a 3-primary cluster: hits, sync, misses."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = RedisServer("redis-server", tmp)
        cluster = ClusterOfRedis("redis-server", tmp)
        server.start()
        cluster.start()
        upstream_port = free_port()
        try:
            with serving(upstream_command(upstream_port), upstream_port, new_session=True):
                for label, url in (("one Redis", server.url),
                                   ("a Redis Cluster of 3 primaries + 3 replicas",
                                    cluster.url)):
                    with proxies(2, url, upstream_port, tmp) as ports:
                        say(f"\n== 2 proxy processes over {label}")
                        asyncio.run(throughput(ports, args))
                        asyncio.run(sync_delay(ports, n_sync))
                    added = miss_overhead(url, upstream_port, tmp, n_miss)
                    say(f"  miss overhead (1 proxy): {summary(added)}")
        finally:
            server.stop()
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--part", choices=("proxies", "cluster", "capacity", "budget", "all"),
                        default="all", help="which measurements (default: all)")
    parser.add_argument("--out", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.hits = 1000 if args.quick else 4000
    args.concurrency = 12
    n_sync, n_miss = (50, 200) if args.quick else (300, 1000)
    say(f"# bench/cluster.py  {time.strftime('%Y-%m-%d')}  python {platform.python_version()}"
        f"  {os.cpu_count()} CPUs (shared by client, proxies, redis-server and upstream)")
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                   text=True).stdout.split()[2]
    say(f"# redis-server {redis_version} on loopback (no persistence); embedder hash:64; "
        "fake upstream with no latency")
    say(f"# load average before the run: {os.getloadavg()[0]:.1f} (the CPUs are shared with "
        "other jobs)")
    if args.part in ("cluster", "all"):
        one_redis_vs_cluster(args, n_sync, n_miss)
    if args.part in ("capacity", "all"):
        say("\n== capacity (in-process, one redis-server)")
        capacity(20_000 if args.quick else 100_000, lambda line: say(line))
    if args.part in ("budget", "all"):
        say("\n== index memory budget: a burst over more partitions than fit")
        burst(8, 1000 if args.quick else 5000, lambda line: say(line))
        say("\n== hot vs cold partitions within an index memory budget")
        hot_and_cold(12, 500, lambda line: say(line))
    if args.part not in ("proxies", "all"):
        if args.out:
            args.out.write_text("\n".join(OUT) + "\n")
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = RedisServer("redis-server", tmp)
        server.start()
        upstream_port = free_port()
        try:
            with serving(upstream_command(upstream_port), upstream_port, new_session=True):
                for n in (1, 2, 3):
                    server.command("FLUSHALL")
                    with proxies(n, server.url, upstream_port, tmp) as ports:
                        say(f"\n== {n} proxy process{'es' if n > 1 else ''} over one Redis")
                        asyncio.run(throughput(ports, args))
                        if n == 2:
                            asyncio.run(sync_delay(ports, n_sync))
                say("\n== miss overhead, one proxy (added to a direct upstream call; paired)")
                for label, store in (("redis", server.url), ("sqlite", f"sqlite:///{tmp}/m.db")):
                    server.command("FLUSHALL")
                    added = miss_overhead(store, upstream_port, tmp, n_miss)
                    say(f"  {label:6s} store: {summary(added)}")
        finally:
            server.stop()
    if args.out:
        args.out.write_text("\n".join(OUT) + "\n")


if __name__ == "__main__":
    main()
