"""What the decision costs on a lookup: the verifier off vs the built-in verifier, one run.

    .venv/bin/python bench/decision_cost.py --entries 100000

A cache (memory store, tiered index) is filled with ``--entries`` entries in one partition and
category, whose vectors are real bundled-MiniLM embeddings of shared-data texts plus small
noise (DESIGN.md: random vectors say nothing about an index). Then three kinds of lookups are
timed, embedding excluded (it is the same under both rules; its own cost is the yardstick line):

- **far miss**: a query with nothing near (the common miss): the verifier must add nothing;
- **grey miss**: a query whose nearest entries fall in the grey zone but are not its answer;
- **verified hit**: a paraphrase of a stored query, served after the verifier ran.

Prints p50/p99 per kind and rule, and the difference; writes ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from prismcache.cache import SemanticCache
from prismcache.config import load_config
from prismcache.embedders import open_embedder
from prismcache.evaluation import datasets as ds
from prismcache.evaluation.vectors import EmbeddingTable, PrecomputedEmbedder
from prismcache.stores.memory import MemoryStore

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--vector-cache", default=str(ROOT / "bench" / "out" / "emb"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "decision_cost.json"))
    args = parser.parse_args(argv)
    root, rng = Path(args.data), np.random.default_rng(0)
    embedder = open_embedder("minilm")
    table = EmbeddingTable(embedder, args.vector_cache)
    rows = ds.banking77(root, "test")
    by_intent: dict[str, list[str]] = {}
    for text, intent in rows:
        by_intent.setdefault(intent, []).append(text)
    stored = [texts[0] for texts in by_intent.values()]
    paraphrases = [(texts[0], texts[1]) for texts in by_intent.values() if len(texts) > 1]
    far = [q for q in ds.nq_open(root) if ds.half_of(q) == "test"][: args.queries]
    grey = [t for t, _ in ds.clinc(root, "test")[0]][: args.queries]
    table.ensure(stored + [p for _, p in paraphrases] + far + grey)
    fillers = rng.choice(len(table), size=args.entries, replace=True)  # rows of real vectors
    yardstick = _single_query_ms(embedder, far[:50])

    results = {"entries": args.entries, "yardstick_single_query_ms_p50": yardstick}
    for label, verifier in (("none", "none"), ("builtin", "builtin")):
        config = load_config({"store": "memory://", "classifier": {"examples": None},
                              "rules": [], "capacity": {"entries": args.entries * 2}})
        config = dataclasses.replace(config, categories={
            n: dataclasses.replace(p, verifier=verifier, quota=1.0)
            for n, p in config.categories.items()})
        cache = SemanticCache.open(config, store=MemoryStore(),
                                   embedder=PrecomputedEmbedder(table))
        reply = {"choices": [{"message": {"role": "assistant", "content": "x"},
                              "finish_reason": "stop"}]}
        started = time.perf_counter()
        _fill(cache, table, fillers, reply, rng)
        for text in stored:
            cache.store(_chat(text), reply, tenant="bench", category="general")
        fill_s = time.perf_counter() - started
        timings = {kind: _time(cache, queries) for kind, queries in (
            ("far_miss", far), ("grey_miss", grey),
            ("verified_hit", [p for _, p in paraphrases]))}
        hits = {kind: t.pop("hits") for kind, t in timings.items()}
        results[label] = {"fill_s": fill_s, "timings_ms": timings, "hits": hits}
        cache.close()
    for kind in ("far_miss", "grey_miss", "verified_hit"):
        off, on = results["none"]["timings_ms"][kind], results["builtin"]["timings_ms"][kind]
        results[f"{kind}_p50_added_ms"] = on["p50"] - off["p50"]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"{args.entries} entries; bundled embedder single query (yardstick) p50 "
          f"{yardstick:.2f} ms")
    print(f"{'lookup (embedding excluded)':28s} {'none p50':>9s} {'p99':>7s} "
          f"{'builtin p50':>12s} {'p99':>7s} {'added p50':>10s}  hits none/builtin")
    for kind in ("far_miss", "grey_miss", "verified_hit"):
        off, on = results["none"]["timings_ms"][kind], results["builtin"]["timings_ms"][kind]
        print(f"{kind:28s} {off['p50']:9.3f} {off['p99']:7.3f} {on['p50']:12.3f} "
              f"{on['p99']:7.3f} {on['p50'] - off['p50']:10.3f}  "
              f"{results['none']['hits'][kind]}/{results['builtin']['hits'][kind]}")
    return 0


def _chat(text: str) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def _fill(cache: SemanticCache, table: EmbeddingTable, rows: np.ndarray, reply: dict,
          rng: np.random.Generator) -> None:
    """Fill with noisy copies of real vectors, each under a synthetic query text (the table
    is extended in one piece so that the cache's embedder serves them)."""
    from prismcache.evaluation.vectors import _digest

    noisy = table._vectors[rows] + rng.normal(0, 0.02, (len(rows), table._vectors.shape[1]))
    noisy = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    offset = len(table._vectors)
    table._vectors = np.ascontiguousarray(np.concatenate([table._vectors, noisy]))
    for i in range(len(rows)):
        text = f"filler entry number {i}"
        table._rows[_digest(text)] = offset + i
        cache.store(_chat(text), reply, tenant="bench", category="general")


def _time(cache: SemanticCache, queries: list[str]) -> dict[str, float]:
    elapsed, hits = [], 0
    for text in queries:
        t = time.perf_counter()
        result = cache.lookup(_chat(text), tenant="bench", category="general")
        elapsed.append((time.perf_counter() - t) * 1000)
        hits += result.hit
    return {"p50": float(np.percentile(elapsed, 50)), "p99": float(np.percentile(elapsed, 99)),
            "hits": hits}


def _single_query_ms(embedder: object, texts: list[str]) -> float:
    times = []
    for text in texts:
        t = time.perf_counter()
        embedder.embed([text])  # type: ignore[attr-defined]
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


if __name__ == "__main__":
    sys.exit(main())
