"""Online calibration (``replay --online``) against the uniform-threshold curve, on dev traces.

    .venv/bin/python bench/online.py --json bench/results/online.json \
        --plot bench/results/online_cutoffs.png > bench/results/online.txt    # ~10 min

Everything is built from the TRAIN (dev) side of ``../shared/data``, as ``bench/quality.py``
builds its test traces (``mixed``: Banking77, CLINC150 by domain, CLINC out-of-scope, NQ-open,
GSM8K, Arena-Hard; ``factual``: NQ-open and ParaQA questions with reworded and perturbed
variants), without verbatim repeats. Per trace, in one run:

- **uniform**: one cosine threshold for every category, top-1, no guards, no verifier, swept
  (``bench/quality.py``'s curve); the bar is its best hit rate at a false-hit rate no higher
  than the online run's (and at <= 1%);
- **shipped**: the default decision (guards + built-in verifier, configured cut-offs);
- **online**: the same, with ``target_precision`` set everywhere (0.99; 0.95, 0.9 and 0.8 to
  show where the bound starts to move the cut-offs): labels only from grey-zone misses and
  explored grey-zone hits (``answer_key`` equality stands in for answer agreement), every
  explored request counted as an upstream call (a miss); category cut-offs and per-entry
  cut-offs (entries closed by their disagreeing labels, or looser on a bound) both learned.

The ratio is to the best swept uniform point at a false-hit rate no higher (a step: the sweep
is a grid), and, as a check on the grid, to the uniform curve interpolated linearly at the
same false-hit rate (``ratio_interpolated``, never above the stepped one).

Also measured here: the answer-agreement rule of :mod:`prismcache.labels` on ParaQA train
answer-paraphrase clusters (true paraphrases vs. each answer's nearest other question's answer
and random other answers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality  # noqa: E402 - the uniform curve and the trace builders live there

from prismcache.config import CacheConfig, load_config  # noqa: E402
from prismcache.embedders import open_embedder  # noqa: E402
from prismcache.evaluation.records import TraceLine  # noqa: E402
from prismcache.evaluation.replay import Online, replay  # noqa: E402
from prismcache.evaluation.traces import build_trace  # noqa: E402
from prismcache.evaluation.vectors import EmbeddingTable  # noqa: E402
from prismcache.labels import AGREE_COSINE, DISAGREE_COSINE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (0.99, 0.95, 0.9, 0.8)
#: quality.py's sweep, finer where the uniform curve crosses 1% false hits
UNIFORM = quality.UNIFORM
MAX_FALSE = quality.MAX_FALSE


def bar(uniform: list[dict[str, Any]], false_rate: float) -> float:
    """The best uniform hit rate whose false-hit rate is at most ``false_rate``."""
    return max((u["hit_rate"] for u in uniform if u["false_hit_rate"] <= false_rate),
               default=0.0)


def interpolated(uniform: list[dict[str, Any]], false_rate: float) -> float:
    """The uniform hit rate at ``false_rate`` on the curve through the swept points (linear
    between neighbours; the best hit rate above them; 0.0 below them: no swept point is as
    precise, as :func:`bar` says too)."""
    points = sorted((u["false_hit_rate"], u["hit_rate"]) for u in uniform)
    xs, ys = [x for x, _ in points], [y for _, y in points]
    if not xs or false_rate < xs[0]:
        return 0.0
    return float(np.interp(false_rate, xs, ys))


def run(name: str, trace: list[TraceLine], base: CacheConfig, table: EmbeddingTable,
        explore_rate: float | None, plot: str | None) -> dict[str, Any]:
    """The uniform curve, the shipped decision and online runs on ``trace``."""
    t0 = time.perf_counter()
    uniform = quality.uniform_curve(trace, base, table, UNIFORM)

    def point(result: dict[str, Any]) -> dict[str, Any]:
        o = result["overall"]
        out = {k: o[k] for k in ("hit_rate", "false_hit_rate", "precision")}
        out["explored_rate"] = o.get("explored_rate", 0.0)  # only an online replay explores
        out["upstream_calls_rate"] = 1.0 - o["hit_rate"]
        at = bar(uniform, o["false_hit_rate"])
        out["uniform_at_same_false"] = at
        out["ratio_to_uniform"] = o["hit_rate"] / at if at else None
        line = interpolated(uniform, o["false_hit_rate"])
        out["uniform_interpolated"] = line
        out["ratio_interpolated"] = o["hit_rate"] / line if line else None
        return out

    shipped = point(replay(trace, base, table))
    category_only = point(replay(trace, base, table, online=Online(
        target_precision=TARGETS[0], explore_rate=explore_rate, per_entry=False)))
    online: dict[str, Any] = {}
    for target in TARGETS:
        result = replay(trace, base, table,
                        online=Online(target_precision=target, explore_rate=explore_rate))
        online[str(target)] = {**point(result), "labels": result["online"]["labels"],
                               "cutoffs": {r["category"]: r["cutoff"] for r in
                                           result["online"]["calibration"]["categories"]
                                           if r["cutoff"] != r["configured_cutoff"]},
                               "entries": {r["category"]: [r["entries_closed"],
                                                           r["entries_looser"]]
                                           for r in result["online"]["calibration"]["categories"]
                                           if r["entries_closed"] or r["entries_looser"]},
                               "tracked": result["online"]["calibration"]["entries"],
                               "steps": result["online"]["cutoffs"]}
        if plot:  # one PNG per target: PLOT with the target before the suffix
            from prismcache.evaluation.plots import plot_cutoffs
            path = Path(plot)
            plot_cutoffs(result, path.with_name(f"{path.stem}_{target}{path.suffix}"))
    return {"trace": name, "requests": len(trace), "uniform": uniform, "shipped": shipped,
            "category_only": category_only, "online": online,
            "uniform_best_at_1pct": bar(uniform, MAX_FALSE),
            "seconds": time.perf_counter() - t0}


def agreement(root: Path, table: EmbeddingTable, *, clusters: int = 1500,
              seed: int = 0) -> dict[str, Any]:
    """Cosines of answer pairs from ParaQA train: paraphrases of one answer (``same``), each
    answer with its nearest other question's answer (``nearest``) and a random one's."""
    rng = np.random.default_rng(seed)
    docs = json.loads((root / "paraqa" / "train.json").read_text("utf-8"))
    groups = []
    for d in docs:
        answers = [d.get("verbalized_answer")] + [d.get(f"verbalized_answer_{i}")
                                                  for i in range(2, 9)]
        answers = list(dict.fromkeys(a for a in answers if a))
        if len(answers) >= 2:
            groups.append(answers)
    groups = [groups[i] for i in rng.permutation(len(groups))[:clusters]]
    texts = sorted({t for g in groups for t in g})
    table.ensure(texts)
    index = {t: i for i, t in enumerate(texts)}
    vectors = table.matrix(texts)
    owner = np.empty(len(texts), dtype=int)
    same = []
    for gi, group in enumerate(groups):
        rows = [index[t] for t in group]
        owner[rows] = gi
        sims = vectors[rows] @ vectors[rows].T
        same += [float(sims[i, j]) for i in range(len(rows)) for j in range(i + 1, len(rows))]
    sims = vectors @ vectors.T
    sims[owner[:, None] == owner[None, :]] = -1.0
    nearest = sims.max(axis=1)
    pairs = rng.integers(0, len(texts), size=(5000, 2))
    rand = np.array([sims[i, j] for i, j in pairs if owner[i] != owner[j]])
    kinds = {"same": np.array(same), "nearest": nearest, "random": rand}
    return {"questions": len(groups), "answers": len(texts),
            "pairs": {k: len(v) for k, v in kinds.items()},
            "agree_cosine": AGREE_COSINE, "disagree_cosine": DISAGREE_COSINE,
            "agree_share": {k: float(np.mean(v >= AGREE_COSINE)) for k, v in kinds.items()},
            "disagree_share": {k: float(np.mean(v < DISAGREE_COSINE)) for k, v in kinds.items()},
            "percentiles_5_50_95": {k: [round(float(x), 3) for x in np.percentile(v, [5, 50, 95])]
                                    for k, v in kinds.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--explore-rate", type=float, help="default: the config's")
    parser.add_argument("--vector-cache", default=str(ROOT / "bench" / "out" / "emb"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "online.json"))
    parser.add_argument("--plot", help="learned cut-offs of the mixed trace, one PNG per "
                                       "target (OUT.png -> OUT_0.99.png, ...)")
    args = parser.parse_args(argv)
    root = Path(args.data)
    base = load_config(None)
    table = EmbeddingTable(open_embedder(base.embedder), args.vector_cache)
    results: dict[str, Any] = {"embedder": table.embedder.id, "max_false": MAX_FALSE,
                               "split": "train", "agreement": agreement(root, table),
                               "traces": {}}
    a = results["agreement"]
    print(f"== answer agreement rule on ParaQA train ({a['questions']} questions, "
          f"{a['answers']} answers): agree >= {AGREE_COSINE}, disagree < {DISAGREE_COSINE}")
    for kind in ("same", "nearest", "random"):
        print(f"{kind:8s} pairs {a['pairs'][kind]:5d}  agree {a['agree_share'][kind]:6.1%}  "
              f"disagree {a['disagree_share'][kind]:6.1%}  cosine p5/p50/p95 "
              f"{a['percentiles_5_50_95'][kind]}")
    traces = {
        "mixed": quality.distinct(build_trace(root, requests=args.requests, split="train",
                                              seed=args.seed)),
        "factual": quality.distinct(quality.factual_trace(root, requests=args.requests,
                                                          seed=args.seed, split="train"))}
    for name, trace in traces.items():
        table.ensure([str(line.query) for line in trace], progress=True)
        r = results["traces"][name] = run(name, trace, base, table, args.explore_rate,
                                          args.plot if name == "mixed" else None)
        print(f"\n== dev trace {name}: {r['requests']} requests ({r['seconds']:.0f} s)")
        print(f"{'rule':30s} {'hit rate':>9s} {'false':>7s} {'explored':>9s} "
              f"{'uniform@same false':>19s} {'ratio':>6s} {'interpolated':>12s} {'ratio':>6s}")
        for u in r["uniform"]:
            print(f"uniform threshold {u['threshold']:<12.3f} {u['hit_rate']:9.2%} "
                  f"{u['false_hit_rate']:7.2%}")
        rows = [("shipped (configured cut-offs)", r["shipped"]),
                (f"online {TARGETS[0]}, category only", r["category_only"])]
        rows += [(f"online, target {t}", r["online"][t]) for t in r["online"]]
        for label, p in rows:
            ratio = "-" if p["ratio_to_uniform"] is None else f"{p['ratio_to_uniform']:.2f}x"
            inter = "-" if p["ratio_interpolated"] is None else f"{p['ratio_interpolated']:.2f}x"
            print(f"{label:30s} {p['hit_rate']:9.2%} {p['false_hit_rate']:7.2%} "
                  f"{p['explored_rate']:9.2%} {p['uniform_at_same_false']:19.2%} {ratio:>6s} "
                  f"{p['uniform_interpolated']:12.2%} {inter:>6s}")
        for t, p in r["online"].items():
            print(f"online {t}: labels {p['labels']}; cut-offs moved: {p['cutoffs'] or 'none'}")
            closed = sum(c for c, _ in p["entries"].values())
            looser = sum(x for _, x in p["entries"].values())
            print(f"online {t}: entries with labels {p['tracked']['tracked']}, closed {closed}, "
                  f"looser {looser}; by category [closed, looser]: {p['entries'] or 'none'}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
