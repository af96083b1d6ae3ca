"""Compare in-process ANN indexes on near-real sentence-embedding vectors.

Not part of the test run. Prints build rate, single-query latency (median, p90, p99, max) at
several ``ef`` for k=1 and k=4, recall@1 of the true nearest neighbour, and memory per vector,
for hnswlib, usearch (f32 and f16) and prismcache's own ``HnswIndex`` wrapper.

Workload (see docs/index.md): the questions of CLINC150, Banking77 and NQ-open are embedded
once with prismcache's bundled MiniLM (cached in ``bench/out/base_minilm.npy``); ``--n`` stored
vectors are noisy near-duplicates of them (Gaussian noise, ``--noise`` per component, then
re-normalised), and the queries are noisier copies of randomly chosen stored vectors, so every
query has a close neighbour. The true nearest neighbour comes from exact numpy search.

Each library runs in its own subprocess, so its RSS growth is its own.

    .venv/bin/python bench/index_compare.py                      # 100k, all libraries
    .venv/bin/python bench/index_compare.py --n 1000000 --libs hnswlib --ef 64,128,256
    .venv/bin/python bench/index_compare.py --crossover 256,1024,2048,4096,16384 --ef 64
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
M, EF_CONSTRUCTION = 16, 128
LIBS = ("hnswlib", "prismcache-hnsw", "usearch-f32", "usearch-f16")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_mb() -> float:
    """This process's own high-water RSS (``ru_maxrss`` would include the parent's: it survives
    ``exec``)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


# --- the workload -----------------------------------------------------------------------------

def corpus() -> list[str]:
    """Real user questions from the shared data, deduplicated, in a fixed order."""
    texts: list[str] = []
    clinc = json.loads((DATA / "clinc150" / "data_full.json").read_text())
    for split in sorted(clinc):
        texts += [text for text, _ in clinc[split]]
    for name in ("train.csv", "test.csv"):
        with open(DATA / "banking77" / name, newline="") as f:
            texts += [row["text"] for row in csv.DictReader(f)]
    with open(DATA / "nq_open" / "NQ-open.dev.jsonl") as f:
        texts += [json.loads(line)["question"] for line in f]
    return sorted(set(texts))


def base_vectors(synthetic: bool) -> np.ndarray:
    """The real embeddings the workload is made from (cached), or clustered stand-ins."""
    if synthetic:
        rng = np.random.default_rng(7)
        centres = unit(rng.normal(size=(2000, 384)))
        return unit(centres[rng.integers(0, 2000, 40_000)]
                    + rng.normal(scale=0.04, size=(40_000, 384)))
    cached = OUT / "base_minilm.npy"
    if cached.exists():
        return np.load(cached)
    from prismcache.embedders import open_embedder

    texts = corpus()
    embedder = open_embedder("minilm")
    start = time.perf_counter()
    parts = [embedder.embed(texts[i:i + 256]) for i in range(0, len(texts), 256)]
    vectors = np.ascontiguousarray(np.vstack(parts), dtype=np.float32)
    print(f"embedded {len(texts)} texts with {embedder.id} in {time.perf_counter() - start:.0f} s",
          flush=True)
    OUT.mkdir(exist_ok=True)
    np.save(cached, vectors)
    return vectors


def make_workload(args: argparse.Namespace) -> Path:
    """Write data.npy, queries.npy and truth.npy for this --n/--noise/--queries; return the dir."""
    tag = f"{'syn' if args.synthetic else 'minilm'}-n{args.n}-noise{args.noise}-q{args.queries}"
    where = OUT / tag
    if (where / "truth.npy").exists():
        return where
    where.mkdir(parents=True, exist_ok=True)
    base = base_vectors(args.synthetic)
    rng = np.random.default_rng(42)
    source = rng.permutation(np.arange(args.n) % len(base))
    data = np.empty((args.n, base.shape[1]), dtype=np.float32)
    for start in range(0, args.n, 100_000):  # in chunks: the noise of 1M rows is 3 GB at f64
        rows = source[start:start + 100_000]
        noise = rng.normal(scale=args.noise, size=(rows.size, base.shape[1])).astype(np.float32)
        data[start:start + rows.size] = unit(base[rows] + noise)
    picks = rng.integers(0, args.n, size=args.queries)
    queries = unit(data[picks] + rng.normal(scale=args.noise / 2, size=(args.queries,
                                                                          data.shape[1])))
    truth = np.empty(args.queries, dtype=np.int64)
    truth_sim = np.empty(args.queries, dtype=np.float32)
    for start in range(0, args.queries, 100):
        sims = queries[start:start + 100] @ data.T
        truth[start:start + 100] = sims.argmax(axis=1)
        truth_sim[start:start + 100] = sims.max(axis=1)
    np.save(where / "data.npy", data)
    np.save(where / "queries.npy", queries)
    np.save(where / "truth.npy", truth)
    print(f"workload {tag}: true top-1 similarity median {np.median(truth_sim):.3f}, "
          f"min {truth_sim.min():.3f}; query's source is its true top-1 for "
          f"{np.mean(truth == picks):.1%}", flush=True)
    return where


# --- one library, in a subprocess -------------------------------------------------------------

Searcher = Callable[[np.ndarray, int], np.ndarray]


def build(lib: str, data: np.ndarray, ids: np.ndarray, threads: int
          ) -> tuple[Callable[[int], None], Searcher, Callable[[Path], tuple[float, float]]]:
    """Build ``lib``'s index over ``data``; return (set_ef, search -> labels, save_load_timer)."""
    dim = data.shape[1]
    if lib == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=len(data), M=M, ef_construction=EF_CONSTRUCTION)
        index.add_items(data, ids, num_threads=threads)

        def save_load(path: Path) -> tuple[float, float]:
            t0 = time.perf_counter()
            index.save_index(str(path / "h.bin"))
            t1 = time.perf_counter()
            again = hnswlib.Index(space="ip", dim=dim)
            again.load_index(str(path / "h.bin"))
            return t1 - t0, time.perf_counter() - t1

        return (index.set_ef,
                lambda q, k: index.knn_query(q, k=k, num_threads=1)[0][0].astype(np.int64),
                save_load)
    if lib == "prismcache-hnsw":
        from prismcache.index import HnswIndex, load_index

        ours = HnswIndex(dim, m=M, ef_construction=EF_CONSTRUCTION, capacity=len(data))
        ours.add(ids, data)  # hnswlib uses all cores (= --threads on this machine)

        def set_ef(ef: int) -> None:
            ours.ef_search = ef

        def save_load_ours(path: Path) -> tuple[float, float]:
            t0 = time.perf_counter()
            ours.save(path / "snap")
            t1 = time.perf_counter()
            load_index(path / "snap")
            return t1 - t0, time.perf_counter() - t1

        return (set_ef, lambda q, k: np.array([i for i, _ in ours.search(q, k)]),
                save_load_ours)
    from usearch.index import Index

    uindex = Index(ndim=dim, metric="ip", dtype=lib.split("-")[1], connectivity=M,
                   expansion_add=EF_CONSTRUCTION)
    uindex.add(ids, data, threads=threads)

    def set_ef_u(ef: int) -> None:
        uindex.expansion_search = ef

    def save_load_u(path: Path) -> tuple[float, float]:
        t0 = time.perf_counter()
        uindex.save(str(path / "u.usearch"))
        t1 = time.perf_counter()
        Index.restore(str(path / "u.usearch"))
        return t1 - t0, time.perf_counter() - t1

    def search_u(q: np.ndarray, k: int) -> np.ndarray:
        return np.asarray(uindex.search(q, k, threads=1).keys, dtype=np.int64)

    return set_ef_u, search_u, save_load_u


def worker(lib: str, where: Path, threads: int, efs: list[int]) -> dict[str, object]:
    data = np.load(where / "data.npy")
    queries = np.load(where / "queries.npy")
    truth = np.load(where / "truth.npy")
    ids = np.arange(1, len(data) + 1, dtype=np.int64)  # label = row + 1 (0 is not an entry id)
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    set_ef, search, save_load = build(lib, data, ids, threads)
    build_s = time.perf_counter() - start
    gc.collect()
    grown = rss_bytes() - before
    result: dict[str, object] = {
        "lib": lib, "n": len(data), "build_s": build_s, "build_rate": len(data) / build_s,
        "rss_per_vector": grown / len(data), "peak_rss_mb": peak_rss_mb(), "runs": [],
    }
    for ef in efs:
        set_ef(ef)
        for k in (1, 4):
            for q in queries[:50]:  # warm caches and lazy setup
                search(q, k)
            times = np.empty(len(queries))
            hits = 0
            for i, q in enumerate(queries):
                t0 = time.perf_counter_ns()
                labels = search(q, k)
                times[i] = (time.perf_counter_ns() - t0) / 1e6
                hits += int(labels[0]) == truth[i] + 1
            result["runs"].append({  # type: ignore[union-attr]
                "ef": ef, "k": k, "recall1": hits / len(queries),
                "p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90)),
                "p99": float(np.percentile(times, 99)), "max": float(times.max()),
            })
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        result["save_s"], result["load_s"] = save_load(Path(tmp))
    return result


def crossover(where: Path, sizes: list[int], ef: int) -> None:
    """Single-query latency of ExactIndex vs HnswIndex as a partition grows (k=4)."""
    from prismcache.index import ExactIndex, HnswIndex

    data = np.load(where / "data.npy", mmap_mode="r")
    queries = np.load(where / "queries.npy")[:500]
    print(f"{'vectors':>8} {'exact p50 ms':>12} {'exact p99':>9} {'hnsw p50 ms':>11} "
          f"{'hnsw p99':>8} {'hnsw build s':>12}")
    for size in sizes:
        vectors = np.ascontiguousarray(data[:size])
        ids = np.arange(1, size + 1, dtype=np.int64)
        exact = ExactIndex(vectors.shape[1])
        exact.add(ids, vectors)
        start = time.perf_counter()
        graph = HnswIndex(vectors.shape[1], m=M, ef_construction=EF_CONSTRUCTION, ef_search=ef)
        graph.add(ids, vectors)
        build_s = time.perf_counter() - start
        row = []
        for index in (exact, graph):
            times = np.empty(len(queries))
            for i, q in enumerate(queries):
                t0 = time.perf_counter_ns()
                index.search(q, 4)
                times[i] = (time.perf_counter_ns() - t0) / 1e6
            row += [np.percentile(times, 50), np.percentile(times, 99)]
        print(f"{size:>8} {row[0]:>12.3f} {row[1]:>9.3f} {row[2]:>11.3f} {row[3]:>8.3f} "
              f"{build_s:>12.2f}", flush=True)


# --- driver -----------------------------------------------------------------------------------

def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("hnswlib", "usearch", "numpy"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="stored vectors")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--noise", type=float, default=0.01,
                        help="per-component Gaussian noise that makes near-duplicates")
    parser.add_argument("--threads", type=int, default=2, help="build threads")
    parser.add_argument("--ef", default="32,64,128", help="comma-separated ef values")
    parser.add_argument("--libs", default=",".join(LIBS))
    parser.add_argument("--synthetic", action="store_true",
                        help="clustered random vectors instead of MiniLM embeddings")
    parser.add_argument("--crossover", metavar="SIZES",
                        help="instead: exact vs HNSW latency at these partition sizes, e.g. "
                             "256,2048,8192 (the tiered index's promote_at)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--where", help=argparse.SUPPRESS)
    args = parser.parse_args()
    efs = [int(x) for x in args.ef.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.where), args.threads, efs)))
        return

    where = make_workload(args)
    if args.crossover:
        print(f"machine: {machine()}, load average {os.getloadavg()[0]:.2f}; ef={efs[0]}")
        crossover(where, [int(x) for x in args.crossover.split(",")], efs[0])
        return
    print(f"machine: {machine()}\n{versions()}\n"
          f"n={args.n} dim=384 M={M} ef_construction={EF_CONSTRUCTION} "
          f"build threads={args.threads}, queries={args.queries} one at a time, 1 thread, "
          f"load average before {os.getloadavg()[0]:.2f}\n",
          flush=True)
    print(f"{'library':16} {'n':>8} {'build/s':>8} {'B/vec':>6} {'ef':>4} {'k':>2} "
          f"{'recall@1':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for lib in args.libs.split(","):
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", lib, "--where", str(where),
             "--threads", str(args.threads), "--ef", args.ef],
            capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{lib:16} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        for run in r["runs"]:
            print(f"{lib:16} {r['n']:>8} {r['build_rate']:>8.0f} {r['rss_per_vector']:>6.0f} "
                  f"{run['ef']:>4} {run['k']:>2} {run['recall1']:>8.3f} {run['p50']:>7.3f} "
                  f"{run['p90']:>7.3f} {run['p99']:>7.3f} {run['max']:>7.2f}")
        print(f"{lib:16} build {r['build_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"save {r['save_s']:.2f} s, load {r['load_s']:.2f} s, "
              f"load average after {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
