"""One trace, three caches, one run: GPTCache, prismcache with one uniform threshold (swept),
and prismcache with per-category thresholds calibrated on the TRAIN pairs.

    .venv/bin/python bench/compare.py --trace bench/out/trace_test_20k.jsonl \
        --pairs bench/out/pairs_train.jsonl --vector-cache bench/out/emb \
        --json bench/results/compare.json --plot docs/img/policies.png

Every system gets the same vectors (prismcache's bundled MiniLM, precomputed once and served
by text), so hit decisions differ only by the caches' own rules, and lookup latencies exclude
the model (its single-query latency is reported once, beside them). prismcache is replayed
with the trace's categories; GPTCache has no categories. GPTCache runs with its SQLite +
FAISS backends, ``SearchDistanceEvaluation`` and its default ``similarity_threshold`` (0.8);
only ``max_size`` is raised from 1000 to prismcache's capacity (100,000) so that neither cache
evicts. Needs ``pip install 'prismcache[bench]' gptcache faiss-cpu sqlalchemy``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prismcache.config import load_config
from prismcache.embedders import open_embedder
from prismcache.evaluation import calibrate, read_pairs, read_trace, replay, write_policy
from prismcache.evaluation.metrics import percentile
from prismcache.evaluation.records import TraceLine, last_user_turn
from prismcache.evaluation.vectors import EmbeddingTable, measure_latency

UNIFORM = (0.70, 0.75, 0.80, 0.84, 0.87, 0.90, 0.92, 0.94, 0.96, 0.98)
TARGETS = (0.90, 0.95, 0.98)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    o = result["overall"]
    return {"hit_rate": o["hit_rate"], "false_hit_rate": o["false_hit_rate"],
            "precision": o["precision"], "hits": o["hits"], "false_hits": o["false_hits"],
            "oracle_hit_rate": o["oracle_hit_rate"], "lookup_ms": o["lookup_ms"],
            "categories": {n: {k: c[k] for k in ("requests", "hit_rate", "false_hit_rate")}
                           for n, c in result["categories"].items()}}


def run_gptcache(trace: list[TraceLine], table: EmbeddingTable) -> dict[str, Any]:
    """Replay through GPTCache 0.1.x with its defaults, the same vectors and answer keys."""
    from gptcache import Cache, Config
    from gptcache.adapter.api import get, put
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    table.ensure(last_user_turn(line.query)[0] for line in trace)  # GPTCache embeds them all
    with tempfile.TemporaryDirectory() as tmp:
        manager = get_data_manager(
            CacheBase("sqlite", sql_url=f"sqlite:///{tmp}/gptcache.db"),
            VectorBase("faiss", dimension=table.embedder.dim, index_path=f"{tmp}/faiss.index"),
            max_size=100_000)
        cache = Cache()
        cache.init(pre_embedding_func=get_prompt,
                   embedding_func=lambda text, **_: table.vector(text),
                   data_manager=manager, similarity_evaluation=SearchDistanceEvaluation(),
                   config=Config())
        hits = false_hits = 0
        lookups: list[float] = []
        started = time.perf_counter()
        for line in trace:
            query = last_user_turn(line.query)[0]  # GPTCache keys on the prompt alone
            t = time.perf_counter()
            answer = get(query, cache_obj=cache)
            lookups.append(time.perf_counter() - t)
            if answer is None:
                put(query, line.answer_key, cache_obj=cache)
            else:
                hits += 1
                false_hits += answer != line.answer_key
        seconds = time.perf_counter() - started
        manager.close()
    n = len(trace)
    return {"hit_rate": hits / n, "false_hit_rate": false_hits / n,
            "precision": (hits - false_hits) / hits if hits else None, "hits": hits,
            "false_hits": false_hits, "seconds": seconds,
            "similarity_threshold": Config().similarity_threshold,
            "lookup_ms": {"p50": percentile(lookups, 50) * 1000,
                          "p99": percentile(lookups, 99) * 1000}}


def plot(out: dict[str, Any], path: str) -> None:
    """Hit rate vs false-hit rate, one series per policy, from a compare result."""
    from prismcache.evaluation.plots import plot_policies
    points = [{**u, "policy": "prismcache uniform threshold", "label": t}
              for t, u in out["uniform"].items()]
    points += [{**c, "policy": "prismcache calibrated (target precision)", "label": t}
               for t, c in out["calibrated"].items()]
    if out["gptcache"] and "hit_rate" in out["gptcache"]:
        points.append({**out["gptcache"], "policy": "GPTCache defaults", "label": "0.8"})
    plot_policies(points, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", required=True)
    parser.add_argument("--pairs", required=True, help="TRAIN pairs to calibrate on")
    parser.add_argument("--vector-cache", default="bench/out/emb")
    parser.add_argument("--json", default="bench/results/compare.json")
    parser.add_argument("--plot", default="docs/img/policies.png")
    parser.add_argument("--policy-dir", default="bench/results")
    parser.add_argument("--no-gptcache", action="store_true")
    parser.add_argument("--plot-only", action="store_true", help="redraw from --json")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(Path(args.json).read_text()), args.plot)
        return 0

    base = load_config(None)
    table = EmbeddingTable(open_embedder(base.embedder), args.vector_cache)
    trace, pairs = read_trace(args.trace), read_pairs(args.pairs)
    texts = sorted({line.query for line in trace if isinstance(line.query, str)
                    and len(line.query) <= base.limits.max_semantic_chars})
    latency = measure_latency(table.embedder, texts, samples=200)
    out: dict[str, Any] = {
        "trace": Path(args.trace).name, "pairs": Path(args.pairs).name, "requests": len(trace),
        "embedder": {"id": table.embedder.id,
                     "single_query_ms_p50": percentile(latency, 50) * 1000,
                     "single_query_ms_p99": percentile(latency, 99) * 1000},
        "uniform": {}, "calibrated": {}, "gptcache": None}

    for threshold in UNIFORM:
        result = replay(trace, base, table, use_trace_categories=True, threshold=threshold)
        out["uniform"][f"{threshold:.2f}"] = summary(result)
        print(f"uniform {threshold:.2f}: hit {result['overall']['hit_rate']:.4f} false "
              f"{result['overall']['false_hit_rate']:.4f} ({result['seconds']:.1f} s)",
              flush=True)
    for target in TARGETS:
        fitted = calibrate(pairs, base, table, target_precision=target)
        policy = Path(args.policy_dir) / f"compare_policy_p{round(target * 100)}.yaml"
        write_policy(policy, fitted, target_precision=target, source=Path(args.pairs).name)
        config = load_config(policy)
        result = replay(trace, config, table, use_trace_categories=True)
        out["calibrated"][f"{target:.2f}"] = {
            **summary(result), "policy": policy.name,
            "thresholds": {c.category: c.threshold for c in fitted},
            "flagged": {c.category: c.flag for c in fitted if c.flag}}
        print(f"calibrated p>={target:.2f}: hit {result['overall']['hit_rate']:.4f} false "
              f"{result['overall']['false_hit_rate']:.4f}", flush=True)
    if not args.no_gptcache:
        try:
            out["gptcache"] = run_gptcache(trace, table)
            g = out["gptcache"]
            print(f"gptcache (threshold {g['similarity_threshold']}): hit {g['hit_rate']:.4f} "
                  f"false {g['false_hit_rate']:.4f}", flush=True)
        except ImportError as exc:
            out["gptcache"] = {"error": f"gptcache unavailable: {exc}"}
            print(out["gptcache"]["error"], file=sys.stderr)

    chosen = out["calibrated"]["0.95"]
    rivals = {t: u for t, u in out["uniform"].items()
              if u["false_hit_rate"] <= chosen["false_hit_rate"]}
    best = max(rivals.items(), key=lambda kv: kv[1]["hit_rate"]) if rivals else None
    out["acceptance"] = {
        "calibrated_target": 0.95, "calibrated_hit_rate": chosen["hit_rate"],
        "calibrated_false_hit_rate": chosen["false_hit_rate"],
        "best_uniform_threshold": best and float(best[0]),
        "best_uniform_hit_rate": best and best[1]["hit_rate"],
        "best_uniform_false_hit_rate": best and best[1]["false_hit_rate"],
        "calibrated_beats_uniform": bool(best is None
                                         or chosen["hit_rate"] > best[1]["hit_rate"])}
    print(json.dumps(out["acceptance"], indent=1))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")

    plot(out, args.plot)
    print(f"wrote {args.json} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
