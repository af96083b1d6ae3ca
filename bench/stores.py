"""Latency of the SQLite document store at scale, and the connection-sharing choice behind it.

    .venv/bin/python bench/stores.py                  # 100k entries in a temporary file
    .venv/bin/python bench/stores.py --entries 20000 --dir /tmp

Part 1 fills one SQLite file through :class:`SQLiteStore` with realistic entries (a ~200-byte
request, a ~900-byte response, a 384-d vector), then times single calls of ``put``, ``get``,
``touch``, ``evict_over``, ``expire`` and ``scan`` at that size. Part 2 compares, on the same
file with raw ``sqlite3``, one shared connection behind a lock against one connection per
thread, under 4 reader threads and 1 writer thread. Prints median, p90, p99 and max in
microseconds.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from prismcache.entry import Entry
from prismcache.stores.sqlite import SQLiteStore

DIM = 384
CATEGORIES = ("faq", "code", "chit-chat", "math")


def make_entry(entry_id: int, rng: np.random.Generator) -> Entry:
    words = " ".join(f"w{rng.integers(0, 5000)}" for _ in range(20))
    vector = rng.standard_normal(DIM).astype(np.float32)
    now = time.time()
    return Entry(
        id=entry_id,
        tenant=f"tenant-{entry_id % 10}",
        partition=f"{entry_id % 50:064x}",
        category=CATEGORIES[entry_id % len(CATEGORIES)],
        model="gpt-4o-mini" if entry_id % 2 else "llama-3-8b",
        exact_key=f"{entry_id:064x}",
        query=words,
        request={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": words}]},
        response={
            "id": f"chatcmpl-{entry_id}",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": words * 6}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 120, "total_tokens": 140},
        },
        vector=vector / np.linalg.norm(vector),
        embedder=f"minilm:{DIM}",
        created=now,
        expires=now + 3600 if entry_id % 3 else None,
        last_access=now,
        cost=0.0004,
        latency=1.2,
        priority=float(rng.random()),
    )


def summary(name: str, seconds: list[float]) -> str:
    us = sorted(s * 1e6 for s in seconds)
    if len(us) < 2:
        return f"{name:<34} n={len(us):>6}  (too few samples for percentiles)"
    q = statistics.quantiles(us, n=100, method="inclusive")
    return (
        f"{name:<34} n={len(us):>6}  p50={q[49]:8.1f}  p90={q[89]:8.1f}  "
        f"p99={q[98]:8.1f}  max={us[-1]:9.1f}  us"
    )


def timed(call: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def bench_store(path: Path, entries: int, ops: int) -> None:
    rng = np.random.default_rng(0)
    pool = [make_entry(i, rng) for i in range(1, 2001)]  # reused payloads, fresh ids
    store = SQLiteStore(path)

    def fill_one(entry_id: int) -> float:
        template = pool[entry_id % len(pool)]
        entry = Entry(**{**{f: getattr(template, f) for f in Entry.__dataclass_fields__},
                         "id": entry_id, "category": CATEGORIES[entry_id % 4]})
        start = time.perf_counter()
        store.put(entry)
        return time.perf_counter() - start

    start = time.perf_counter()
    fill = [fill_one(i) for i in range(1, entries + 1)]
    elapsed = time.perf_counter() - start
    size_mb = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6
    print(f"filled {entries} entries in {elapsed:.1f} s ({entries / elapsed:,.0f}/s), "
          f"file+wal {size_mb:.0f} MB, mean entry size "
          f"{store.usage()['faq'].bytes / store.usage()['faq'].entries:.0f} B + {DIM * 4} B vector")
    print(summary("put (during fill, 0..N)", fill))
    print(summary(f"put (new id, at {entries})", [fill_one(entries + 1 + i) for i in range(ops)]))
    replaced = random.Random(1).sample(range(1, entries), ops)
    print(summary(f"put (replace, at {entries})", [fill_one(i) for i in replaced]))

    ids = random.Random(2).choices(range(1, entries + 1), k=ops)
    it = iter(ids)
    print(summary("get (hit)", timed(lambda: store.get(next(it)), ops)))
    print(summary("get (missing id)", timed(lambda: store.get(10**15), ops)))
    it = iter(ids)
    print(summary("touch", timed(lambda: store.touch(next(it), now=time.time(), priority=0.5),
                                 ops)))
    print(summary("usage", timed(store.usage, ops)))
    faq = store.usage()["faq"].entries
    print(summary("evict_over (within limits)",
                  timed(lambda: store.evict_over("faq", max_entries=faq, max_bytes=None), ops)))
    next_id = iter(range(10 * entries, 11 * entries))

    def put_then_evict() -> None:
        store.evict_over("faq", max_entries=faq, max_bytes=None)

    samples = []
    for _ in range(ops // 4):
        new_id = next(next_id) * 4  # id % 4 == 0: category "faq"
        fill_one(new_id)
        samples += timed(put_then_evict, 1)
    print(summary("evict_over (evicts 1)", samples))
    print(summary("find(tenant=..., model=...)",
                  timed(lambda: store.find(tenant="tenant-3", model="llama-3-8b"), 20)))
    start = time.perf_counter()
    count = sum(1 for _ in store.scan())
    print(f"scan: {count} entries in {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    expired = store.expire(time.time() + 7200)
    print(f"expire: deleted {len(expired)} entries in {time.perf_counter() - start:.2f} s")
    store.close()


def bench_sharing(path: Path, entries: int, seconds: float) -> None:
    """4 worker threads + 1 writer on raw sqlite3: one shared connection behind a lock, or one
    connection per thread. Workers either only read, or do what a cache hit does (read the
    entry, then count the hit: a write); the writer admits a miss every millisecond."""
    blob = b"x" * 1100
    vec = b"v" * DIM * 4
    read = "SELECT * FROM entries WHERE id = ?"
    count_hit = "UPDATE entries SET hits = hits + 1, last_access = ? WHERE id = ?"
    admit = "UPDATE entries SET response = ?, vector = ? WHERE id = ?"
    for workload in ("read-only", "hit = get + touch"):
        for mode in ("shared+lock", "per-thread"):
            shared = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            lock = threading.Lock()
            local = threading.local()
            stop = threading.Event()
            ops: list[float] = []
            writes: list[float] = []

            def run(statement: str, params: tuple[object, ...]) -> None:
                if mode == "shared+lock":
                    with lock:
                        shared.execute(statement, params).fetchall()
                    return
                if not hasattr(local, "db"):
                    local.db = sqlite3.connect(path, isolation_level=None, timeout=5)
                local.db.execute(statement, params).fetchall()

            def worker(seed: int) -> None:
                rnd = random.Random(seed)
                out = []
                while not stop.is_set():
                    entry_id = rnd.randrange(1, entries)
                    start = time.perf_counter()
                    run(read, (entry_id,))
                    if workload != "read-only":
                        run(count_hit, (time.time(), entry_id))
                    out.append(time.perf_counter() - start)
                ops.extend(out)

            def writer() -> None:
                rnd = random.Random(9)
                out = []
                while not stop.is_set():
                    start = time.perf_counter()
                    run(admit, (blob, vec, rnd.randrange(1, entries)))
                    out.append(time.perf_counter() - start)
                    time.sleep(0.001)
                writes.extend(out)

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
            threads.append(threading.Thread(target=writer))
            for t in threads:
                t.start()
            time.sleep(seconds)
            stop.set()
            for t in threads:
                t.join()
            shared.close()
            print(f"{workload}, {mode}: {len(ops) / seconds:,.0f} ops/s, "
                  f"{len(writes) / seconds:,.0f} admits/s")
            print("  " + summary(workload, ops))
            print("  " + summary("admit (writer thread)", writes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.db"
        bench_store(path, args.entries, args.ops)
        bench_sharing(path, args.entries, args.seconds)


if __name__ == "__main__":
    main()
