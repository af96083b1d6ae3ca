"""Multi-turn follow-ups: served rate per kind, context rule ``exact`` vs ``semantic``, in one run.

    .venv/bin/python bench/conversations.py --vector-cache bench/out/emb \
        --out bench/results/conversations

Pairs and traces come from :mod:`prismcache.evaluation.conversations` (Banking77 and CLINC150
train splits, halved by a hash: ``dev`` and ``test`` share no sentence). With the shipped
defaults and the bundled embedder:

1. the ``context_threshold`` is swept on **dev** under ``context: semantic``; the lowest one
   whose served rate is at most ``--max-wrong`` for every different-meaning kind is chosen;
2. **test** is reported at that threshold and under ``context: exact`` (the old behaviour:
   byte-identical turns only), per kind, through :func:`prismcache.evaluation.evaluate` (the
   decision lookups call);
3. the **dev trace** (each source conversation, then its variants) is replayed through a
   ``SemanticCache`` as ``prismcache replay`` does, with the neighbours searched for a
   follow-up widened x1, x2, x4, x8 (``prismcache.cache.CONTEXT_WIDENING``, shipped x4), and
   the **test trace** at the shipped widening: hit rate and wrong answers served.

Prints the tables and writes ``OUT.txt`` and ``OUT.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from prismcache import cache as cache_module
from prismcache.config import CacheConfig, load_config
from prismcache.embedders import open_embedder
from prismcache.evaluation.conversations import (
    DIFFERENT_KINDS,
    KINDS,
    SAME_KINDS,
    conversation_pairs_and_trace,
)
from prismcache.evaluation.evaluate import evaluate
from prismcache.evaluation.replay import replay
from prismcache.evaluation.vectors import EmbeddingTable

THRESHOLDS = (0.70, 0.75, 0.80, 0.83, 0.85, 0.87, 0.90, 0.93, 0.95)


def config_for(context: str, threshold: float = 0.9) -> CacheConfig:
    """The shipped defaults with every category's context rule set to ``context``."""
    return load_config({"defaults": {"context": context, "context_threshold": threshold},
                        "categories": {name: {"context": context,
                                              "context_threshold": threshold}
                                       for name in load_config().categories}})


def served_by_kind(pairs: list[Any], config: CacheConfig, table: EmbeddingTable
                   ) -> dict[str, float]:
    """Served rate per kind under ``config`` (the full decision)."""
    kinds = evaluate(pairs, config, table)["overall"]["kinds"]
    return {kind: kinds[kind]["served_rate"] for kind in KINDS if kind in kinds}


def row(label: str, rates: dict[str, float]) -> str:
    """One table line: the label, then each kind's served rate."""
    return f"{label:<26}" + "".join(f"{rates.get(k, float('nan')):>20.1%}" for k in KINDS)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--vector-cache", default="bench/out/emb")
    parser.add_argument("--per-intent", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-wrong", type=float, default=0.01,
                        help="highest served rate allowed for a different-meaning kind on dev")
    parser.add_argument("--out", default="bench/results/conversations")
    args = parser.parse_args(argv)
    root = Path(args.data)
    table = EmbeddingTable(open_embedder(load_config().embedder), args.vector_cache)
    dev, dev_trace = conversation_pairs_and_trace(root, split="dev", seed=args.seed,
                                                  per_intent=args.per_intent)
    test, test_trace = conversation_pairs_and_trace(root, split="test", seed=args.seed,
                                                    per_intent=args.per_intent)
    text = io.StringIO()
    result: dict[str, Any] = {"embedder": table.embedder.id, "max_wrong": args.max_wrong,
                              "pairs": {"dev": len(dev), "test": len(test)}}
    header = f"{'rule':<26}" + "".join(f"{k:>20}" for k in KINDS)
    with redirect_stdout(text):
        print(f"== dev ({len(dev)} pairs): context: semantic, context_threshold swept")
        print(header)
        sweep = {}
        for threshold in THRESHOLDS:
            sweep[threshold] = served_by_kind(dev, config_for("semantic", threshold), table)
            print(row(f"semantic {threshold:.2f}", sweep[threshold]))
        safe = [t for t in THRESHOLDS
                if max(sweep[t][k] for k in DIFFERENT_KINDS) <= args.max_wrong]
        chosen = min(safe) if safe else max(THRESHOLDS)
        print(f"chosen on dev: context_threshold {chosen:.2f} (lowest with every "
              f"different-meaning kind <= {args.max_wrong:.0%} served)")
        print(f"\n== test ({len(test)} pairs), per kind served")
        print(header)
        exact = served_by_kind(test, config_for("exact"), table)
        semantic = served_by_kind(test, config_for("semantic", chosen), table)
        print(row("exact (byte-identical)", exact))
        print(row(f"semantic {chosen:.2f}", semantic))
        same = sum(semantic[k] for k in SAME_KINDS) / len(SAME_KINDS)
        wrong = max(semantic[k] for k in DIFFERENT_KINDS)
        print(f"semantic {chosen:.2f}: same-meaning kinds {same:.1%} hit on average, "
              f"different-meaning kinds at most {wrong:.1%} served")
        print(f"\n== dev trace through SemanticCache ({len(dev_trace)} requests), "
              f"semantic {chosen:.2f}, neighbours searched for a follow-up x widening")
        widening = {}
        shipped = cache_module.CONTEXT_WIDENING
        for factor in (1, 2, 4, 8):
            cache_module.CONTEXT_WIDENING = factor  # the module constant lookups read
            overall = replay(dev_trace, config_for("semantic", chosen), table,
                             use_trace_categories=True)["overall"]
            widening[factor] = {k: overall[k] for k in ("hit_rate", "false_hit_rate",
                                                         "precision")}
            print(f"widening x{factor:<17}" + "  ".join(
                f"{k} {v:.2%}" if isinstance(v, float) else f"{k} {v}"
                for k, v in widening[factor].items()))
        cache_module.CONTEXT_WIDENING = shipped
        print(f"\n== test trace through SemanticCache ({len(test_trace)} requests), "
              f"widening x{shipped}")
        replays = {}
        for label, config in (("exact", config_for("exact")),
                              (f"semantic {chosen:.2f}", config_for("semantic", chosen))):
            overall = replay(test_trace, config, table, use_trace_categories=True)["overall"]
            replays[label] = {k: overall[k] for k in ("hit_rate", "false_hit_rate",
                                                       "precision") if k in overall}
            print(f"{label:<26}" + "  ".join(f"{k} {v:.2%}" if isinstance(v, float) else
                                             f"{k} {v}" for k, v in replays[label].items()))
    result.update({"dev_sweep": {f"{t:.2f}": r for t, r in sweep.items()},
                   "chosen_context_threshold": chosen, "test": {"exact": exact,
                                                                "semantic": semantic},
                   "dev_trace_widening": widening, "test_trace": replays})
    sys.stdout.write(text.getvalue())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text(text.getvalue(), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
