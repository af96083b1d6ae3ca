"""``prismcache tune`` on dev pairs: timed end to end, judged on a disjoint split and on a replay.

    .venv/bin/python bench/tune.py --vector-cache bench/out/emb \
        --json bench/results/tune.json | tee bench/results/tune.txt
    .venv/bin/python bench/tune.py --full --vector-cache bench/out/emb \
        --json bench/results/tune_full.json | tee bench/results/tune_full.txt  # needs [tune]

1. **Pairs to tune on**: Banking77 and CLINC150 TRAIN splits only, the intent pairs
   ``prismcache data pairs`` builds (:func:`prismcache.evaluation.datasets.build_pairs`: two
   utterances of one FAQ intent are the same; an utterance and the closest utterance of a
   neighbouring intent, or another request of a slot intent, are different), about 5,000.
2. **Tune, timed end to end** (:func:`prismcache.tune.run.tune`): reading, embedding every text
   with the bundled model (no vector cache: the real cost), the adapter, the verifier refit.
   With ``--full``, also ``tune --full`` on the same pairs, timed end to end: fine-tuning the
   whole float model with torch, ONNX export, int8 quantization and its check, embedding every
   text with the chosen ONNX model, the verifier refit.
3. **Pairs, disjoint split**: the same kinds of pairs built from the TEST splits (no text in
   common with step 1): ROC AUC and recall at 99% precision of the base cosine vs the tuned
   cosine, and of the shipped verifier (base cosines) vs the refitted one (tuned cosines); with
   ``--full`` the fine-tuned model's cosine and its refitted verifier too.
4. **Replay**: the ``mixed`` trace of ``bench/quality.py`` (TEST splits, verbatim repeats
   removed) through the cache with the base model and shipped verifier, then with the tuned
   embedder and refitted verifier, and with the tuned embedder and the shipped verifier; each
   with its uniform-threshold curve and its cut-off curve (``quality.run_trace`` plus a finer
   grid near 1%), compared at <= 1% wrong answers served; with ``--full`` the same for the
   fine-tuned model with its refitted verifier and with the shipped one.
5. **Adapter cost per query**: one ``Adapter.apply`` on one vector, median and p99. With
   ``--full``, one ``embed([query])`` of the bundled model, the adapter embedder and the
   fine-tuned model, taking turns with the yardstick (``benchkit``) on the same queries.

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
from benchkit import Yardstick, pct, yardstick_run
from quality import distinct, run_trace, with_policies

from prismcache.classify import load_examples
from prismcache.config import load_config
from prismcache.embedders import Embedder, open_embedder
from prismcache.embedders.tuned import ADAPTER_FILE, Adapter, FineTunedEmbedder, TunedEmbedder
from prismcache.evaluation import datasets as ds
from prismcache.evaluation.metrics import recall_at_precision, roc_auc
from prismcache.evaluation.records import write_jsonl
from prismcache.evaluation.replay import replay
from prismcache.evaluation.traces import build_trace
from prismcache.evaluation.vectors import EmbeddingTable, PrecomputedEmbedder
from prismcache.tune.adapter import AdapterSettings
from prismcache.tune.full import FullSettings
from prismcache.tune.run import VERIFIER_FILE, tune
from prismcache.tune.verifier import features, probabilities
from prismcache.verifiers.builtin import load_model

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("banking77", "clinc150")
#: cut-offs swept beyond quality.CUTOFFS, where 1% wrong answers is crossed
FINE = (0.83, 0.86, 0.88, 0.92, 0.93, 0.94, 0.97)
MAX_FALSE = 0.01


def pair_metrics(pairs: list[Any], base: EmbeddingTable,
                 tuned: dict[str, tuple[EmbeddingTable, Path]]) -> dict[str, Any]:
    """Cosine and verifier scores on ``pairs``: the base model with the shipped verifier, and
    each ``tuned`` label's table with the verifier refitted in its directory (every text of
    ``pairs`` embedded in every table)."""
    y = np.array([p.same for p in pairs])
    texts = [(p.query, p.candidate) for p in pairs]

    def cos(table: EmbeddingTable) -> np.ndarray:
        q = table.matrix([p.query for p in pairs])
        return (q * table.matrix([p.candidate for p in pairs])).sum(axis=1)

    shipped, base_cos = load_model(None), cos(base)
    scores = {"base_cosine": base_cos,
              "base_verifier": probabilities(shipped, features(texts, base_cos, shipped))}
    for label, (table, out) in tuned.items():
        refit, tuned_cos = load_model(out / VERIFIER_FILE), cos(table)
        scores[f"{label}_cosine"] = tuned_cos
        scores[f"{label}_verifier"] = probabilities(refit, features(texts, tuned_cos, refit))
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


def query_cost(embedders: dict[str, Embedder], texts: list[str],
               rounds: int = 10) -> dict[str, Any]:
    """Milliseconds of one ``embed([text])`` per embedder, taking turns with the yardstick in
    ``rounds`` blocks over the same ``texts`` (median, p99, median / yardstick median)."""
    run = yardstick_run()
    variants: dict[str, Any] = {"yardstick": lambda batch: run(),
                                **{k: e.embed for k, e in embedders.items()}}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        for name, call in variants.items():
            for text in texts[:3]:
                call([text])  # untimed warm-up of this block
            for text in texts[r::rounds]:
                started = time.perf_counter()
                call([text])
                times[name].append((time.perf_counter() - started) * 1000)
    stick = Yardstick.of(times.pop("yardstick"))
    out: dict[str, Any] = {"yardstick": dataclasses.asdict(stick)}
    for name, ms in times.items():
        p50 = float(np.median(ms))
        out[name] = {"p50_ms": p50, "p99_ms": pct(ms, 0.99), "n": len(ms),
                     "p50_over_yardstick": p50 / stick.p50_ms}
    return out


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
    parser.add_argument("--full", action="store_true",
                        help="also fine-tune the whole embedder (needs prismcache[tune])")
    parser.add_argument("--full-epochs", type=int, default=FullSettings().epochs)
    parser.add_argument("--replays", default="base,tuned,tuned_shipped_verifier,full,"
                        "full_shipped_verifier", help="which replays to run (comma-separated)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "tune.json"))
    args = parser.parse_args(argv)
    root, out, out_full = Path(args.data), Path(args.out), Path(args.out + "_full")
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
    if args.full:
        print(f"\n== tune --full on the same {len(train)} TRAIN pairs "
              f"({args.full_epochs} epochs), timed end to end", flush=True)
        results["manifest_full"] = full = tune(
            [source], out_full, seed=args.seed, full=FullSettings(epochs=args.full_epochs))
        for stage, seconds in full["seconds"].items():
            print(f"  {stage:10s} {seconds:7.1f} s")
        model = full["model"]
        print(f"  kept {model['precision']} ({model['bytes'] / 1e6:.1f} MB): held-apart cosine "
              f"ROC AUC float32 {model['roc_auc_float32']:.4f}, int8 "
              f"{model['roc_auc_int8']:.4f} (int8 kept within {model['int8_tolerance']}); "
              f"epoch losses {', '.join(f'{x:.3f}' for x in model['epoch_loss'])}")

    base = EmbeddingTable(open_embedder("minilm"), args.vector_cache)
    adapter = Adapter.load(out / ADAPTER_FILE)
    tuned_table = EmbeddingTable(TunedEmbedder(PrecomputedEmbedder(base), adapter))
    tables = {"tuned": (tuned_table, out)}
    if args.full:
        fine = FineTunedEmbedder.from_dir(out_full)
        tables["full"] = (EmbeddingTable(fine, args.vector_cache), out_full)
    test = ds.build_pairs(root, split="test", seed=args.seed, sources=SOURCES,
                          per_intent=args.per_intent)
    test_texts = [t for p in test for t in (p.query, p.candidate)]
    for table in (base, *(t for t, _ in tables.values())):
        table.ensure(test_texts)
    results["test_pairs"] = m = pair_metrics(test, base, tables)
    print(f"\n== {m['pairs']} TEST pairs ({m['same']} same), disjoint from the tuning pairs")
    print(f"{'scorer':16s} {'ROC AUC':>8s} {'recall@99%':>11s}")
    for label in ("base", *tables):
        for kind in ("cosine", "verifier"):
            name = f"{label}_{kind}"
            print(f"{name:16s} {m[name]['roc_auc']:8.3f} {m[name]['recall_at_99']:11.3f}")

    # quality.run_trace sweeps thresholds down to 0.70, below the shipped fallback thresholds,
    # which a policy refuses; the fallback only matters under upstream overload, not here.
    config = with_policies(load_config(None), fallback_threshold=None)
    trace = distinct(build_trace(root, requests=args.requests, split="test", seed=args.seed))
    trace_texts = ([str(line.query) for line in trace]
                   + [t for t, _ in load_examples(config.classifier.examples or "builtin")])
    runs = [("base", config, base),
            ("tuned", with_policies(config, verifier=f"builtin:{out / VERIFIER_FILE}"),
             tuned_table), ("tuned_shipped_verifier", config, tuned_table)]
    if args.full:
        full_table = tables["full"][0]
        runs += [("full", with_policies(config, verifier=f"builtin:{out_full / VERIFIER_FILE}"),
                  full_table), ("full_shipped_verifier", config, full_table)]
    wanted = set(args.replays.split(","))
    runs = [run for run in runs if run[0] in wanted | {"base"}]
    for table in {id(t): t for _, _, t in runs}.values():
        table.ensure(trace_texts)
    results["replay"] = {}
    for label, cfg, table in runs:
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
    for label, _, _ in runs[1:]:
        t = results["replay"][label]
        print(f"\n{label} / base at <= 1% false: uniform "
              f"{_ratio(t['uniform_best_at_1pct'], b['uniform_best_at_1pct'])}, decision curve "
              f"{_ratio(t['decision_curve_best_at_1pct'], b['decision_curve_best_at_1pct'])}")

    results["adapter_cost"] = cost = adapter_cost(adapter, base.matrix(
        [str(line.query) for line in trace[:500]]))
    print(f"\nadapter per query: median {cost['p50_us']:.1f} us, p99 {cost['p99_us']:.1f} us")
    if args.full:
        queries = [str(line.query) for line in trace[:400]]
        minilm = open_embedder("minilm")
        results["query_cost"] = qc = query_cost(
            {"base (bundled int8)": minilm, "adapter": TunedEmbedder(minilm, adapter),
             f"full ({fine.precision})": fine}, queries)
        print(f"\n== one embed([query]) on {len(queries)} trace queries, taking turns with the "
              f"yardstick (p50 {qc['yardstick']['p50_ms']:.2f} ms)")
        for name, c in qc.items():
            if name != "yardstick":
                print(f"{name:22s} p50 {c['p50_ms']:6.2f} ms  p99 {c['p99_ms']:6.2f} ms  "
                      f"= {c['p50_over_yardstick']:.2f}x yardstick")
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
