"""Lookup-path benchmark of the core library at 10k, 100k and 1M entries.

    .venv/bin/python bench/lookup.py --sizes 10000 100000 1000000 > bench/results/lookup.txt

Method (see docs/benchmarks.md):
* **Vectors.** Near-real, not uniform random: ~6,000 real queries from ../shared/data
  (Banking77, CLINC150, NQ-open) are embedded once with the bundled MiniLM (cached in
  bench/out/), and each stored vector is one of them plus Gaussian noise (sigma 0.02 per
  dimension, re-normalised), so the index has the neighbourhood structure real traffic has.
* **Layout.** One tenant, one model, one partition; each entry's category is the one the
  shipped classifier gives its vector (as the cache would), so a lookup searches the HNSW
  graph of its category (M=16, ef_construction=128, ef_search=64). The script prints the
  category sizes; the largest graph holds roughly a third of N.
* **Store.** SQLite (WAL) file in a temp dir, filled directly with ``store.put`` (bulk load),
  then the cache is opened: that open is the "full rebuild from the store". A snapshot is saved
  and the cache reopened from it: "start-up from a snapshot".
* **Miss path without embedding.** ``lookup`` with an embedder that returns precomputed
  vectors from a dict (O(1)); queries are real out-of-scope CLINC150 queries, which miss.
  Everything else is the real code: keying, exact tier, classification (rules, then the
  logistic classifier on the vector), HNSW search, threshold decision.
* **Miss path with embedding.** The same with the bundled MiniLM embedder (1 and 2 threads)
  and its dynamically quantized derivative (``minilm:dynamic``); each also as a ratio to the
  yardstick (``benchkit.yardstick_run``) timed in the same blocks of queries.
* **Hit path.** Near-duplicates of stored entries (the stored vector plus sigma 0.002 noise):
  search, store read (SQLite), guards, hit bookkeeping (store touch).
* **Insert.** ``store`` of a new entry (precomputed vector): store write, index add, quota.
* **Memory.** RSS after the rebuild minus RSS before, per entry, minus the 1,536-byte vector.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from benchkit import Yardstick, yardstick_run

from prismcache import SemanticCache, load_config
from prismcache.embedders import Embedder, MiniLMEmbedder, open_embedder
from prismcache.entry import Entry
from prismcache.request import key_request
from prismcache.stores import open_store

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "out"
SIGMA = 0.02


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def real_queries(n: int) -> list[str]:
    rng = random.Random(0)
    texts: list[str] = []
    with (DATA / "banking77" / "train.csv").open(newline="") as f:
        texts += [r["text"] for r in csv.DictReader(f)]
    clinc = json.loads((DATA / "clinc150" / "data_full.json").read_text())
    texts += [t for t, _ in clinc["train"]]
    texts += [json.loads(line)["question"]
              for line in (DATA / "nq_open" / "NQ-open.dev.jsonl").open()]
    texts = sorted(set(texts))
    rng.shuffle(texts)
    return texts[:n]


def base_vectors(texts: list[str]) -> np.ndarray:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"lookup_base_{len(texts)}.npy"
    if path.exists():
        return np.load(path)
    embedder = open_embedder("minilm")
    vectors = embedder.embed(texts)  # the embedder batches large inputs itself
    np.save(path, vectors)
    return vectors


class Precomputed:
    """An Embedder serving known vectors by text (the bench's way to leave embedding out);
    with ``real`` set, it embeds with the bundled model instead. Same id either way."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.real: Embedder | None = None
        self._inner = open_embedder("minilm")
        self.two_threads = MiniLMEmbedder(threads=2)
        self.dynamic = MiniLMEmbedder(dynamic=True)
        self.name, self.dim = self._inner.name, self._inner.dim
        self.table = table

    @property
    def id(self) -> str:
        return self._inner.id

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.real is not None:
            return self.real.embed(texts)
        return np.stack([self.table[t] for t in texts])


def memory_probe(url: str, snapshot: str, size: int) -> float:
    """RSS growth per entry of a fresh process that opens the cache from its snapshot."""
    code = f"""
import gc, os
from bench_lookup_probe import rss, open_cache, warm_embedder
embedder = warm_embedder()
gc.collect(); before = rss()
cache = open_cache({url!r}, {snapshot!r}, embedder)
gc.collect(); print((rss() - before) / {size})
"""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def noisy(rng: np.random.Generator, base: np.ndarray, sigma: float) -> np.ndarray:
    v = base + rng.normal(0, sigma, base.shape).astype(np.float32)
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def pct(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]
    return (f"p50 {statistics.median(ms):7.3f} ms  p90 {q(0.9):7.3f}  p99 {q(0.99):7.3f}  "
            f"max {ms[-1]:7.3f}  (n={len(ms)})")


def body(text: str) -> dict:
    return {"model": "bench-model", "messages": [{"role": "user", "content": text}]}


def run(size: int, texts: list[str], bases: np.ndarray, oos: list[str], oos_vectors: np.ndarray,
        samples: int) -> None:
    rng = np.random.default_rng(size)
    print(f"\n=== {size:,} entries ===", flush=True)
    tmp = tempfile.mkdtemp(prefix="prism-bench-")
    url = f"sqlite:///{tmp}/bench.db"
    config = replace(load_config({"store": url, "snapshot": f"{tmp}/snap",
                                  "capacity": {"entries": size * 20}, "rules": []}))
    # capacity x20: no category reaches its quota, so inserts measure admission, not the
    # one-off eviction of a quota overrun (eviction has its own benchmark: bench/eviction.py)
    embedder = Precomputed({})
    partition = key_request(body("x"), tenant="bench").partition
    with SemanticCache.open(replace(config, store="memory://", snapshot=None),
                            embedder=embedder) as classifier_cache:
        route = classifier_cache.categorise_vector  # the shipped classifier, as lookups use it
        categories = [route(v) for v in bases]

    t0 = time.perf_counter()
    store = open_store(url)
    chosen = rng.integers(0, len(texts), size)
    for start in range(0, size, 50_000):
        idx = chosen[start:start + 50_000]
        vecs = noisy(rng, bases[idx], SIGMA)
        for n, (i, v) in enumerate(zip(idx.tolist(), vecs, strict=True)):
            text = f"{texts[i]} #{start + n}"
            store.put(Entry(
                id=start + n + 1, tenant="bench", partition=partition, category=categories[i],
                model="bench-model", exact_key=key_request(body(text), tenant="bench").exact_key,
                query=text, request=body(text),
                response={"choices": [{"message": {"role": "assistant", "content": "ok " * 40},
                                       "finish_reason": "stop"}]},
                vector=v, embedder=embedder.id, created=time.time(), expires=None,
                last_access=time.time(), cost=0.001, latency=2.0))
    layout = store.usage()
    store.close()
    print("layout: " + ", ".join(f"{k} {u.entries:,}" for k, u in sorted(layout.items())))
    print(f"bulk load into SQLite: {time.perf_counter() - t0:8.1f} s "
          f"({size / (time.perf_counter() - t0):,.0f} entries/s)", flush=True)

    t0 = time.perf_counter()
    cache = SemanticCache.open(config, embedder=embedder)
    rebuild = time.perf_counter() - t0
    print(f"full rebuild from the store: {rebuild:8.1f} s", flush=True)
    cache.close()  # writes the snapshot
    per_entry = memory_probe(url, f"{tmp}/snap", size)
    print(f"RAM per entry: {per_entry:,.0f} B total, {per_entry - 4 * embedder.dim:,.0f} B "
          "beyond the 1,536-byte vector (RSS growth of a fresh process opening the cache "
          "from its snapshot)", flush=True)
    t0 = time.perf_counter()
    cache = SemanticCache.open(config, embedder=embedder)
    print(f"start-up from a snapshot: {time.perf_counter() - t0:8.1f} s", flush=True)

    # Miss path, embedding excluded.
    embedder.table = {t: v for t, v in zip(oos, oos_vectors, strict=True)}
    lat, misses = [], 0
    for text in oos[:samples]:
        t1 = time.perf_counter()
        result = cache.lookup(body(text), tenant="bench")
        lat.append(time.perf_counter() - t1)
        misses += not result.hit
    print(f"miss path, no embedding:   {pct(lat)}  misses {misses}/{len(lat)}", flush=True)

    # Miss path with the bundled embedder (the memo is bypassed: every text is new). The
    # variants take turns in blocks of 30 queries, each after 3 untimed ones (the model's
    # weights back in the CPU caches), so the machine's load falls on all alike.
    # The yardstick takes its turns in the same blocks.
    run = yardstick_run()
    variants = (("threads=1", embedder._inner), ("threads=2", embedder.two_threads),
                ("dynamic, threads=1", embedder.dynamic))
    lats: dict[str, list[float]] = {label: [] for label, _ in variants}
    sticks: list[float] = []
    for r in range(10):
        block = oos[r:300:10]
        for n, (label, real) in enumerate(variants):
            embedder.real = real
            for text in block[:3]:
                cache.lookup(body(text + " warm" * (n + 1)), tenant="bench")
            for text in block:
                t1 = time.perf_counter()
                cache.lookup(body(text + " ?" * (n + 1)), tenant="bench")
                lats[label].append(time.perf_counter() - t1)
        for _ in range(3):
            run()
        for _ in block:
            t1 = time.perf_counter()
            run()
            sticks.append((time.perf_counter() - t1) * 1000)
    stick = Yardstick.of(sticks)
    print(stick, flush=True)
    for label, lat in lats.items():
        p50 = statistics.median(lat) * 1000
        print(f"miss path, MiniLM {label}: {pct(lat)}  = p50 {stick.ratio(p50)} yardstick",
              flush=True)
    embedder.real = None

    # Hit path: near-duplicates of stored entries.
    probe_store = open_store(url)
    probes = []
    for entry_id in rng.integers(1, size + 1, samples).tolist():
        entry = probe_store.get(entry_id)
        if entry is not None:
            probes.append((entry.query + " please", noisy(rng, entry.vector, 0.002)))
    probe_store.close()
    embedder.table = dict(probes)
    lat, hits = [], 0
    for text, _ in probes:
        t1 = time.perf_counter()
        result = cache.lookup(body(text), tenant="bench")
        lat.append(time.perf_counter() - t1)
        hits += result.hit
    print(f"hit path (semantic):       {pct(lat)}  hits {hits}/{len(lat)}", flush=True)

    # Insert path.
    fresh = noisy(rng, bases[rng.integers(0, len(texts), samples)], SIGMA)
    new_texts = [f"new entry {i}" for i in range(samples)]
    embedder.table = dict(zip(new_texts, fresh, strict=True))
    lat = []
    for text in new_texts:
        t1 = time.perf_counter()
        cache.store(body(text), {"choices": [{"message": {"role": "assistant", "content": "x"},
                                              "finish_reason": "stop"}]}, tenant="bench")
        lat.append(time.perf_counter() - t1)
    print(f"insert:                    {pct(lat)}", flush=True)
    cache.close()
    for p in Path(tmp).glob("bench.db*"):
        p.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    print(f"prismcache bench/lookup.py  python {sys.version.split()[0]}  "
          f"cpus {os.cpu_count()}  {time.strftime('%Y-%m-%d %H:%M')}")
    texts = real_queries(6000)
    bases = base_vectors(texts)
    clinc = json.loads((DATA / "clinc150" / "data_full.json").read_text())
    oos = sorted({t for t, _ in clinc["oos_test"]} | {t for t, _ in clinc["oos_val"]})
    embedder = open_embedder("minilm")
    oos_vectors = embedder.embed(oos)
    for size in args.sizes:
        run(size, texts, bases, oos, oos_vectors, min(args.samples, len(oos)))
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
