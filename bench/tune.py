"""``prismcache tune`` on dev pairs: timed end to end, judged on a disjoint split and on a replay.

    .venv/bin/python bench/tune.py --vector-cache bench/out/emb \
        --json bench/results/tune.json | tee bench/results/tune.txt

1. **Pairs to tune on**: Banking77 and CLINC150 TRAIN splits only, the intent pairs
   ``prismcache data pairs`` builds (:func:`prismcache.evaluation.datasets.build_pairs`: two
   utterances of one FAQ intent are the same; an utterance and the closest utterance of a
   neighbouring intent, or another request of a slot intent, are different), about 5,000.
2. **Tune, timed end to end** (:func:`prismcache.tune.run.tune`): reading, embedding every text
   with the bundled model (no vector cache: the real cost), the adapter, the verifier refit.
3. **Pairs, disjoint split**: the same kinds of pairs built from the TEST splits (no text in
   common with step 1): ROC AUC and recall at 99% precision of the base cosine vs the tuned
   cosine, and of the shipped verifier (base cosines) vs the refitted one (tuned cosines).
4. **Replay**: the ``mixed`` trace of ``bench/quality.py`` (TEST splits, verbatim repeats
   removed) through the cache with the base model and shipped verifier, then with the tuned
   embedder and refitted verifier, and with the tuned embedder and the shipped verifier; each
   with its uniform-threshold curve and its cut-off curve (``quality.run_trace`` plus a finer
   grid near 1%), compared at <= 1% wrong answers served.
5. **Adapter cost per query**: one ``Adapter.apply`` on one vector, median and p99.

Never trained on: Quora Question Pairs, ComQA / WikiAnswers / Paralex, LLM-written cache
benchmark pairs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from quality import distinct, run_trace, with_policies

from prismcache.classify import load_examples
from prismcache.config import load_config
from prismcache.embedders import open_embedder
from prismcache.embedders.tuned import ADAPTER_FILE, Adapter, TunedEmbedder
from prismcache.evaluation import datasets as ds
from prismcache.evaluation.metrics import recall_at_precision, roc_auc
from prismcache.evaluation.records import write_jsonl
from prismcache.evaluation.replay import replay
from prismcache.evaluation.traces import build_trace
from prismcache.evaluation.vectors import EmbeddingTable, PrecomputedEmbedder
from prismcache.tune.adapter import AdapterSettings
from prismcache.tune.run import VERIFIER_FILE, tune
from prismcache.tune.verifier import features, probabilities
from prismcache.verifiers.builtin import load_model

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("banking77", "clinc150")
#: cut-offs swept beyond quality.CUTOFFS, where 1% wrong answers is crossed
FINE = (0.83, 0.86, 0.88, 0.92, 0.93, 0.94, 0.97)
MAX_FALSE = 0.01


def pair_metrics(pairs: list[Any], base: EmbeddingTable, adapter: Adapter,
                 out: Path) -> dict[str, Any]:
    """Base vs tuned cosine and verifier on ``pairs`` (their texts embedded in ``base``)."""
    y = np.array([p.same for p in pairs])
    q, c = base.matrix([p.query for p in pairs]), base.matrix([p.candidate for p in pairs])
    base_cos = (q * c).sum(axis=1)
    tuned_cos = (adapter.apply(q) * adapter.apply(c)).sum(axis=1)
    shipped, refit = load_model(None), load_model(out / VERIFIER_FILE)
    texts = [(p.query, p.candidate) for p in pairs]
    scores = {"base_cosine": base_cos, "tuned_cosine": tuned_cos,
              "base_verifier": probabilities(shipped, features(texts, base_cos, shipped)),
              "tuned_verifier": probabilities(refit, features(texts, tuned_cos, refit))}
    return {"pairs": len(pairs), "same": int(y.sum()),
            **{name: {"roc_auc": roc_auc(s, y), "recall_at_99": recall_at_precision(s, y, 0.99)}
               for name, s in scores.items()}}


def fine_curve(trace: list[Any], config: Any, table: EmbeddingTable) -> list[dict[str, Any]]:
    """The decision at the :data:`FINE` cut-offs (the same replay as ``quality.run_trace``)."""
    out = []
    for cutoff in FINE:
        o = replay(trace, with_policies(config, cutoff=cutoff), table)["overall"]
        out.append({"cutoff": cutoff, "hit_rate": o["hit_rate"],
                    "false_hit_rate": o["false_hit_rate"]})
    return out


def adapter_cost(adapter: Adapter, vectors: np.ndarray, samples: int = 2000) -> dict[str, float]:
    """Microseconds one ``apply`` of one vector takes (median, p99)."""
    out = np.empty(samples)
    for i in range(samples):
        row = vectors[i % len(vectors)][None, :]
        started = time.perf_counter()
        adapter.apply(row)
        out[i] = time.perf_counter() - started
    return {"p50_us": float(np.median(out) * 1e6), "p99_us": float(np.percentile(out, 99) * 1e6)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--per-intent", type=int, default=11)
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vector-cache", default=str(ROOT / "bench" / "out" / "emb"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "tuned"))
    parser.add_argument("--reg", type=float, default=AdapterSettings().reg)
    parser.add_argument("--epochs", type=int, default=AdapterSettings().epochs)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "tune.json"))
    args = parser.parse_args(argv)
    root, out = Path(args.data), Path(args.out)
    train = ds.build_pairs(root, split="train", seed=args.seed, sources=SOURCES,
                           per_intent=args.per_intent)
    source = out.parent / "tune_train_pairs.jsonl"
    write_jsonl(source, train)
    print(f"== tune on {len(train)} TRAIN pairs ({sum(p.same for p in train)} same), "
          "embedding from scratch", flush=True)
    manifest = tune([source], out, seed=args.seed,
                    settings=AdapterSettings(reg=args.reg, epochs=args.epochs))
    for stage, seconds in manifest["seconds"].items():
        print(f"  {stage:10s} {seconds:7.1f} s")
    results: dict[str, Any] = {"train_pairs": len(train), "manifest": manifest}

    base = EmbeddingTable(open_embedder("minilm"), args.vector_cache)
    adapter = Adapter.load(out / ADAPTER_FILE)
    test = ds.build_pairs(root, split="test", seed=args.seed, sources=SOURCES,
                          per_intent=args.per_intent)
    base.ensure([t for p in test for t in (p.query, p.candidate)])
    results["test_pairs"] = m = pair_metrics(test, base, adapter, out)
    print(f"\n== {m['pairs']} TEST pairs ({m['same']} same), disjoint from the tuning pairs")
    print(f"{'scorer':16s} {'ROC AUC':>8s} {'recall@99%':>11s}")
    for name in ("base_cosine", "tuned_cosine", "base_verifier", "tuned_verifier"):
        print(f"{name:16s} {m[name]['roc_auc']:8.3f} {m[name]['recall_at_99']:11.3f}")

    # quality.run_trace sweeps thresholds down to 0.70, below the shipped fallback thresholds,
    # which a policy refuses; the fallback only matters under upstream overload, not here.
    config = with_policies(load_config(None), fallback_threshold=None)
    trace = distinct(build_trace(root, requests=args.requests, split="test", seed=args.seed))
    base.ensure([str(line.query) for line in trace]
                + [t for t, _ in load_examples(config.classifier.examples or "builtin")])
    tuned_table = EmbeddingTable(TunedEmbedder(PrecomputedEmbedder(base), adapter))
    tuned_config = with_policies(config, verifier=f"builtin:{out / VERIFIER_FILE}")
    results["replay"] = {}
    for label, cfg, table in (("base", config, base), ("tuned", tuned_config, tuned_table),
                              ("tuned_shipped_verifier", config, tuned_table)):
        r = results["replay"][label] = run_trace("mixed", trace, cfg, table)
        r["decision_curve"] = sorted(r["decision_curve"] + fine_curve(trace, cfg, table),
                                     key=lambda point: point["cutoff"])
        r["decision_curve_best_at_1pct"] = max(
            (c["hit_rate"] for c in r["decision_curve"] if c["false_hit_rate"] <= MAX_FALSE),
            default=0.0)
        print(f"\n== replay '{label}': mixed TEST trace, {r['requests']} requests "
              f"({r['seconds']:.0f} s), {table.embedder.id}")
        print(f"{'rule':34s} {'hit rate':>9s} {'false':>7s}")
        for u in r["uniform"]:
            print(f"uniform threshold {u['threshold']:<16.2f} {u['hit_rate']:9.2%} "
                  f"{u['false_hit_rate']:7.2%}")
        print(f"{'decision (shipped cut-offs)':34s} {r['decision']['hit_rate']:9.2%} "
              f"{r['decision']['false_hit_rate']:7.2%}")
        for c in r["decision_curve"]:
            print(f"decision, cutoff {c['cutoff']:<17.2f} {c['hit_rate']:9.2%} "
                  f"{c['false_hit_rate']:7.2%}")
        print(f"best at <= 1% false: uniform {r['uniform_best_at_1pct']:.2%}, decision curve "
              f"{r['decision_curve_best_at_1pct']:.2%}")
    b = results["replay"]["base"]
    for label in ("tuned", "tuned_shipped_verifier"):
        t = results["replay"][label]
        print(f"\n{label} / base at <= 1% false: uniform "
              f"{_ratio(t['uniform_best_at_1pct'], b['uniform_best_at_1pct'])}, decision curve "
              f"{_ratio(t['decision_curve_best_at_1pct'], b['decision_curve_best_at_1pct'])}")

    results["adapter_cost"] = cost = adapter_cost(adapter, base.matrix(
        [str(line.query) for line in trace[:500]]))
    print(f"\nadapter per query: median {cost['p50_us']:.1f} us, p99 {cost['p99_us']:.1f} us")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1, default=_plain) + "\n",
                               encoding="utf-8")
    return 0


def _ratio(new: float, old: float) -> str:
    return f"{new / old:.2f}x" if old else "n/a"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)  # type: ignore[arg-type]
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
