"""The measurements behind the capacity model of ``docs/deployment.md`` (run by
``bench/cluster.py --part capacity``, or alone):

* **Redis bytes per entry**: ``used_memory`` of one ``redis-server`` before and after putting
  ``N`` realistic entries (a ~200-byte request, a ~900-byte response, a 384-d vector, as
  ``bench/stores.py``) through :class:`RedisStore`, with the change stream as written (it holds
  every put's vector until trimmed) and after trimming it;
* **index bytes per entry**: RSS of this process before and after loading those entries, all
  in one partition, into memory-bounded :class:`~prismcache.tiers.Tiers` (an HNSW graph past
  2048 entries), next to the estimate the budget counts (:func:`prismcache.tiers.entry_bytes`);
* **load time** of that partition from Redis (``scan_partition`` plus building the index), per
  100k entries;
* **a burst over more partitions than fit**: RSS growth of a process whose budget holds 2 of
  8 partitions (by the per-entry estimate) while lookups touch all of them, three times,
  against holding all 8, and the same over 6 partitions of 10,000 entries (their indexes
  HNSW graphs); RSS divided by the budget is the figure to watch;
* **hot vs cold lookups**: a :class:`SemanticCache` within a budget over Redis, latency of
  lookups in a partition it holds, and of the first lookups in partitions it does not (they
  miss while the partition loads on a background thread), and how long until they hit.

    .venv/bin/python bench/capacity.py [--entries 100000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from benchkit import ROOT, summary

sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from redis_support import RedisServer  # noqa: E402
from stores import CATEGORIES, DIM, make_entry  # noqa: E402

from prismcache import SemanticCache  # noqa: E402
from prismcache.index import IndexSpec  # noqa: E402
from prismcache.stores import open_store  # noqa: E402
from prismcache.stores.redis import RedisStore  # noqa: E402
from prismcache.tiers import Tiers, entry_bytes  # noqa: E402

PARTITION = "f" * 64


def rss() -> int:
    """Resident bytes of this process now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fill(store: RedisStore, n: int, *, partition: str | None = None, threads: int = 4) -> float:
    """Put ``n`` realistic entries (ids 1..n) with ``threads`` writers; return puts/s."""
    def work(start: int) -> None:
        rng = np.random.default_rng(start)
        for entry_id in range(start, n + 1, threads):
            entry = make_entry(entry_id, rng)
            if partition is not None:
                entry.partition = partition
            store.put(entry)

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(i + 1,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return n / (time.perf_counter() - started)


def used_memory(server: RedisServer) -> int:
    reply = server.command("INFO", "memory")
    # the inline reply is a bulk string: "$<len>\r\n# Memory\r\nused_memory:<n>\r\n..."
    for line in reply.decode(errors="replace").splitlines():
        if line.startswith("used_memory:"):
            return int(line.partition(":")[2])
    raise RuntimeError("no used_memory in INFO")


@contextmanager
def redis_store() -> Iterator[tuple[RedisServer, RedisStore]]:
    """A fresh ``redis-server`` in a temporary directory and a store over it."""
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer("redis-server", Path(tmp))
        server.start()
        try:
            store = open_store(server.url)
            assert isinstance(store, RedisStore)
            with store:
                yield server, store
        finally:
            server.stop()


def capacity(n: int, say: Callable[[str], None]) -> None:
    """Redis and index bytes per entry, and the load time of one partition of ``n``."""
    with redis_store() as (server, store):
        before = used_memory(server)
        rate = fill(store, n, partition=PARTITION)
        with_stream = used_memory(server) - before
        server.command("XTRIM", "prism:changes", "MAXLEN", "0")
        trimmed = used_memory(server) - before
        say(f"  Redis, {n} entries of ~1.1 KB JSON + {DIM}-d vector (filled at "
            f"{rate:.0f} puts/s, 4 threads)")
        say(f"    bytes per entry: {with_stream / n:,.0f} with the change stream holding "
            f"every put, {trimmed / n:,.0f} after trimming it")
        spec = IndexSpec()
        estimate = sum(entry_bytes(DIM, spec))
        tiers = Tiers(dim=DIM, embedder_id=f"minilm:{DIM}", spec=spec,
                      max_bytes=10 * n * estimate, loader=store.scan_partition)
        start_rss = rss()
        started = time.perf_counter()
        tiers.search(PARTITION, "faq", np.ones(DIM, dtype=np.float32), 1)  # starts the load
        while (stats := tiers.budget_stats()) is not None and stats.loads == 0:
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        grown = rss() - start_rss
        say(f"  index of one partition of {n} entries (tiered: HNSW m=16 past 2048)")
        say(f"    load from Redis + build: {seconds:.1f} s = {seconds * 100_000 / n:.1f} s "
            f"per 100k entries")
        say(f"    RSS per entry: {grown / n:,.0f} bytes (the budget counts "
            f"{estimate:,} per entry)")


def burst(partitions: int, per_partition: int, say: Callable[[str], None]) -> None:
    """RSS of a process whose budget holds 2 of ``partitions`` while a burst touches all of
    them three times, against one holding every partition (the same entries, from the same
    Redis); each measured in a fresh child process."""
    with redis_store() as (server, store):
        names = [f"{p:064x}" for p in range(partitions)]
        rng = np.random.default_rng(9)
        for n in range(partitions * per_partition):
            entry = make_entry(n + 1, rng)
            entry.partition = names[n % partitions]
            store.put(entry)
        spec = IndexSpec()
        budget = 2 * per_partition * sum(entry_bytes(DIM, spec))

        def bounded() -> str:
            with open_store(server.url) as child_store:
                start = rss()
                tiers = Tiers(dim=DIM, embedder_id=f"minilm:{DIM}", spec=spec,
                              max_bytes=budget, loader=child_store.scan_partition)
                query = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
                peak, after = 0, []
                for _ in range(3):
                    for name in names:
                        while not any(tiers.search(name, category, query, 1)
                                      for category in CATEGORIES):
                            time.sleep(0.005)
                        peak = max(peak, rss() - start)
                    after.append(f"{(rss() - start) / 2**20:.1f}")
                stats = tiers.budget_stats()
                assert stats is not None
                grown = rss() - start
                return (f"    within the budget: RSS grew {grown / 2**20:.1f} MiB = "
                        f"{grown / budget:.2f}x the budget (peak {peak / 2**20:.1f} = "
                        f"{peak / budget:.2f}x; after each pass {', '.join(after)}); held "
                        f"{stats.partitions}, loads {stats.loads}, evictions {stats.evictions}, "
                        f"estimate {stats.bytes / 2**20:.1f} MiB")

        def unbounded() -> str:
            with open_store(server.url) as child_store:
                start = rss()
                full = Tiers(dim=DIM, embedder_id=f"minilm:{DIM}", spec=spec)
                full.add(child_store.scan(documents=False))
                return (f"    holding every partition: RSS grew "
                        f"{(rss() - start) / 2**20:.1f} MiB ({full.vectors} vectors)")

        say(f"  burst over {partitions} partitions of {per_partition} entries, 3 times; "
            f"budget {budget / 2**20:.1f} MiB (2 partitions by the estimate)")
        say(in_child(bounded))
        say(in_child(unbounded))


def burst_local(partitions: int, per_partition: int, say: Callable[[str], None]) -> None:
    """As :func:`burst` (within the budget only), with the entries made in this process
    instead of read from Redis: the indexes' own memory, without the Redis client's."""
    names = [f"{p:064x}" for p in range(partitions)]

    def loader(name: str) -> Iterator[object]:
        p = names.index(name)
        rng = np.random.default_rng(p)
        for n in range(per_partition):
            entry = make_entry(p * per_partition + n + 1, rng)
            entry.partition = name
            yield entry

    spec = IndexSpec()
    budget = 2 * per_partition * sum(entry_bytes(DIM, spec))

    def bounded() -> str:
        start = rss()
        tiers = Tiers(dim=DIM, embedder_id=f"minilm:{DIM}", spec=spec, max_bytes=budget,
                      loader=loader)  # type: ignore[arg-type]
        query = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
        after = []
        for _ in range(3):
            for name in names:
                while not any(tiers.search(name, category, query, 1)
                              for category in CATEGORIES):
                    time.sleep(0.005)
            after.append((rss() - start) / budget)
        stats = tiers.budget_stats()
        assert stats is not None
        return (f"    entries made in-process: RSS after each pass "
                f"{', '.join(f'{a:.2f}x' for a in after)} the budget; held {stats.partitions}, "
                f"loads {stats.loads}, counted {stats.bytes / 2**20:.1f} MiB")

    say(f"  burst over {partitions} partitions of {per_partition} entries made in-process, "
        f"3 times; budget {budget / 2**20:.1f} MiB")
    say(in_child(bounded))


def in_child(work: Callable[[], str]) -> str:
    """Run ``work`` in a forked child process (fresh RSS accounting); return its result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            out = work()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = f"    failed: {exc!r}"
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


def hot_and_cold(partitions: int, per_partition: int, say: Callable[[str], None]) -> None:
    """Lookup latency in a held partition vs the first lookups in cold ones."""
    with redis_store() as (server, _):
        config = {"store": server.url, "embedder": f"hash:{DIM}",
                  "classifier": {"examples": None}, "rules": [], "default_category": "c",
                  "capacity": {"entries": 10 * partitions * per_partition},
                  "index": {"max_bytes": 4 * per_partition * sum(entry_bytes(DIM, IndexSpec()))},
                  "categories": {"c": {"threshold": 0.8, "ttl": "1h", "quota": 1.0,
                                       "guards": []}}}
        reply = {"choices": [{"message": {"role": "assistant", "content": "ok"},
                              "finish_reason": "stop"}]}
        with SemanticCache.open(dict(config, index={"max_bytes": None})) as writer:
            for t in range(partitions):
                for q in range(per_partition):
                    writer.store(chat(f"question {q} about topic {q * 7 % 13}"), reply,
                                 tenant=f"tenant-{t}")
        with SemanticCache.open(config) as cache:
            hot, cold, until = [], [], []
            body = chat("question 3 about topic 8 please")
            cache.lookup(body, tenant="tenant-0")
            while not cache.lookup(body, tenant="tenant-0").hit:
                time.sleep(0.005)
            for _ in range(300):
                t0 = time.perf_counter()
                assert cache.lookup(body, tenant="tenant-0").hit
                hot.append((time.perf_counter() - t0) * 1000)
            for t in range(1, partitions):
                t0 = time.perf_counter()
                result = cache.lookup(body, tenant=f"tenant-{t}")
                cold.append((time.perf_counter() - t0) * 1000)
                assert not result.hit
                while not cache.lookup(body, tenant=f"tenant-{t}").hit:
                    time.sleep(0.002)
                until.append((time.perf_counter() - t0) * 1000)
            stats = cache.index_budget
        say(f"  {partitions} partitions of {per_partition} entries, budget of 4 partitions, "
            f"embedder hash:{DIM}")
        say(f"    hot lookup (held, a hit)      : {summary(hot)}")
        say(f"    cold lookup (a miss, no wait) : {summary(cold)}")
        say(f"    cold partition serves after   : {summary(until)}")
        if stats is not None:
            say(f"    loads {stats.loads}, evictions {stats.evictions}, load misses "
                f"{stats.load_misses}, held {stats.partitions}, "
                f"{stats.bytes:,} of {stats.max_bytes:,} bytes")


def chat(text: str) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--parts", nargs="+", default=["capacity", "burst", "hot-cold"],
                        choices=["capacity", "burst", "burst-hnsw", "burst-local",
                                 "hot-cold"])
    args = parser.parse_args()
    if "capacity" in args.parts:
        capacity(args.entries, print)
    if "burst" in args.parts:
        burst(8, 5000, print)
    if "burst-hnsw" in args.parts:
        burst(6, 10_000, print)
    if "burst-local" in args.parts:
        burst_local(8, 5000, print)
        burst_local(6, 10_000, print)
    if "hot-cold" in args.parts:
        hot_and_cold(12, 500, print)


if __name__ == "__main__":
    main()
