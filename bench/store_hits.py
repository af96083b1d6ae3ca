"""An exact hit of a library lookup, per document store, in one run: CPU, latency, hits/s,
and over Redis the server's commands and round trips per hit.

    .venv/bin/python bench/store_hits.py [--rounds 4] [--lookups 2000] [--stores ...]

Stores one answer in each store — memory, a SQLite file, a local ``redis-server`` (started on
a free loopback port, no persistence, stopped at the end) — then makes ``--lookups`` calls of
``cache.lookup(prepared)`` on that exact request per store, one after another, rounds
interleaved. Per store and round it prints the process CPU per hit, the wall latency of one
lookup (p50, p99) and hits per second. ``redis`` is the store as opened by default (a hit's
touch rides in the next command: one round trip per hit); ``redis-sync`` is the same store with
``touches="sync"`` (the read, then the touch script: two). For those two it also prints the
commands the server ran per hit (``INFO commandstats``) and its socket reads per hit
(``total_reads_processed`` of ``INFO stats``: one per round trip the client waits for).
The model never runs on an exact hit, so this is the cache's and the store's own work.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from benchkit import free_port, pct, serving

from prismcache import SemanticCache
from prismcache.config import load_config
from prismcache.embedders import open_embedder
from prismcache.stores import open_store
from prismcache.stores.redis import RedisStore

BODY = {"model": "m", "messages": [{"role": "user", "content": "How do I reset my password?"}]}
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "Use 'forgot password'."}}]}
STORES = ("memory", "sqlite", "redis", "redis-sync")


def server_counts(client: Any) -> tuple[int, int]:
    """(commands run but INFO, socket reads) of the server so far."""
    stats = client.info("commandstats")
    commands = sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
    return commands, int(client.info("stats")["total_reads_processed"])


def timed_hits(cache: SemanticCache, lookups: int) -> tuple[float, list[float], float]:
    """(CPU us per hit, wall ms per lookup, hits per second) over ``lookups`` calls."""
    prepared = cache.prepare(BODY)
    walls = []
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(lookups):
        begin = time.perf_counter()
        result = cache.lookup(prepared)
        walls.append((time.perf_counter() - begin) * 1e3)
        if not result.hit:
            raise SystemExit(f"not a hit: {result}")
    elapsed = time.perf_counter() - start
    return (time.process_time() - cpu) / lookups * 1e6, walls, lookups / elapsed


def open_stores(names: list[str], tmp: str, port: int) -> dict[str, Any]:
    url = f"redis://127.0.0.1:{port}/0"
    makers = {
        "memory": lambda: open_store("memory://"),
        "sqlite": lambda: open_store(f"sqlite:///{Path(tmp) / 'c.db'}"),
        # separate prefixes: each store's entry is its own
        "redis": lambda: RedisStore(redis.Redis.from_url(url), prefix="hits:"),
        "redis-sync": lambda: RedisStore(redis.Redis.from_url(url), prefix="sync:",
                                         touches="sync"),
    }
    return {name: makers[name]() for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    config = load_config(None)
    embedder = open_embedder(config.embedder)  # one model for every cache
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, serving(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], port):
        counter = redis.Redis(port=port)
        caches = {name: SemanticCache.open(config, store=store, embedder=embedder)
                  for name, store in open_stores(args.stores, tmp, port).items()}
        for cache in caches.values():
            cache.store(BODY, ANSWER)
            assert cache.lookup(BODY).hit
        cpus: dict[str, list[float]] = {name: [] for name in caches}
        walls: dict[str, list[float]] = {name: [] for name in caches}
        rates: dict[str, list[float]] = {name: [] for name in caches}
        server: dict[str, list[tuple[float, float]]] = {name: [] for name in caches}
        for r in range(args.rounds):
            line = []
            for name, cache in caches.items():
                before = server_counts(counter)
                cpu, wall, rate = timed_hits(cache, args.lookups)
                after = server_counts(counter)
                cpus[name].append(cpu)
                walls[name] += wall
                rates[name].append(rate)
                # the second INFO's own read is counted in `after`
                server[name].append(((after[0] - before[0]) / args.lookups,
                                     (after[1] - before[1] - 1) / args.lookups))
                line.append(f"{name} {cpu:.0f} us CPU, p50 {statistics.median(wall):.3f} ms "
                            f"p99 {pct(wall, 0.99):.3f} ms, {rate:,.0f} hits/s")
            print(f"round {r + 1}: " + " | ".join(line))
        base = statistics.median(cpus["memory"]) if "memory" in cpus else None
        for name in caches:
            cpu = statistics.median(cpus[name])
            ratio = f" ({cpu / base:.2f}x memory)" if base else ""
            extra = ""
            if name.startswith("redis"):
                commands = statistics.median(c for c, _ in server[name])
                reads = statistics.median(t for _, t in server[name])
                extra = f"; server: {commands:.2f} commands, {reads:.2f} round trips per hit"
            print(f"median {name}: CPU {cpu:.0f} us per hit{ratio}; latency p50 "
                  f"{statistics.median(walls[name]):.3f} ms p99 {pct(walls[name], 0.99):.3f} ms;"
                  f" {statistics.median(rates[name]):,.0f} hits/s{extra}")
        if "redis" in caches and "redis-sync" in caches:
            one, two = walls["redis"], walls["redis-sync"]
            print(f"redis / redis-sync: p50 {statistics.median(one) / statistics.median(two):.2f}x"
                  f", p99 {pct(one, 0.99) / pct(two, 0.99):.2f}x, hits/s "
                  f"{statistics.median(rates['redis']) / statistics.median(rates['redis-sync']):.2f}x"
                  f", CPU {statistics.median(cpus['redis']) / statistics.median(cpus['redis-sync']):.2f}x")
        for cache in caches.values():
            cache.close()
        counter.close()


if __name__ == "__main__":
    main()
