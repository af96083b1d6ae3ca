"""CPU per exact hit of a library lookup, per document store, in one run.

    .venv/bin/python bench/store_hits.py [--rounds 4] [--lookups 2000]

Stores one answer in a memory store, a SQLite file and a local ``redis-server`` (started on a
free loopback port, no persistence, stopped at the end), then times the process CPU of
``--lookups`` calls of ``cache.lookup(prepared)`` on that exact request per store, rounds
interleaved; prints each round and the median, and each store's ratio to the memory store.
The model never runs on an exact hit, so this is the cache's and the store's own work.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchkit import free_port, serving

from prismcache import SemanticCache
from prismcache.config import load_config
from prismcache.embedders import open_embedder
from prismcache.stores import open_store

BODY = {"model": "m", "messages": [{"role": "user", "content": "How do I reset my password?"}]}
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "Use 'forgot password'."}}]}


def cpu_per_hit(cache: SemanticCache, lookups: int) -> float:
    """Microseconds of process CPU per exact-hit lookup, over ``lookups`` calls."""
    prepared = cache.prepare(BODY)
    start = time.process_time()
    for _ in range(lookups):
        cache.lookup(prepared)
    return (time.process_time() - start) / lookups * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    config = load_config(None)
    embedder = open_embedder(config.embedder)  # one model for the three caches
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, serving(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], port):
        caches = {
            "memory": SemanticCache.open(config, store=open_store("memory://"), embedder=embedder),
            "sqlite": SemanticCache.open(config, embedder=embedder,
                                         store=open_store(f"sqlite:///{Path(tmp) / 'c.db'}")),
            "redis": SemanticCache.open(config, store=open_store(f"redis://127.0.0.1:{port}/0"),
                                        embedder=embedder)}
        for cache in caches.values():
            cache.store(BODY, ANSWER)
            assert cache.lookup(BODY).hit
        figures: dict[str, list[float]] = {name: [] for name in caches}
        for r in range(args.rounds):
            for name, cache in caches.items():
                figures[name].append(cpu_per_hit(cache, args.lookups))
            print(f"round {r + 1}: " + "  ".join(f"{n} {v[-1]:.0f} us" for n, v in figures.items()))
        medians = {name: statistics.median(v) for name, v in figures.items()}
        print("median CPU per exact hit: " + "  ".join(
            f"{n} {m:.0f} us ({m / medians['memory']:.2f}x memory)" for n, m in medians.items()))
        for cache in caches.values():
            cache.close()


if __name__ == "__main__":
    main()
