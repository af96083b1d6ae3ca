"""What the cache serves on traffic it was never tuned on, against the uniform-threshold curve.

    .venv/bin/python bench/ood_quality.py > bench/results/ood_quality.txt

The five out-of-domain traces of ``bench/ood_traces.py`` (ParaQA test, PAWS-Wiki test, SNIPS,
STS-B test, SNLI test: answer keys with the texts that deserve each, drawn by a Zipf law),
without verbatim repeats (the exact tier serves those under any rule), replayed through
``SemanticCache`` with the shipped defaults and the bundled embedder, requests classified by
the cache. Nothing here was fitted on these sets' test splits (the built-in verifier saw PAWS
dev, SNLI dev and STS-B train: ``tools/train_verifier.py``).

Per trace it prints the shipped decision's hit and false-hit rates, the uniform curve (one
cosine threshold for every category, top-1, no guards, no verifier: ``quality.uniform_curve``)
over a grid (0.80, 0.85, then 0.900 to 0.995 by 0.005), and the uniform hit rate at the shipped false-hit rate read off that curve
by linear interpolation between its points (``None`` when no uniform threshold gets that low):
the decision is worth having where it serves more than that at the same false-hit rate.
A "false" hit serves an answer key other than the request's; in ParaQA a question and its
own answer sentence carry different keys, so part of its false hits are artefacts of the set.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from ood_traces import OOD, ood_groups, ood_trace
from quality import distinct, uniform_curve

from prismcache.config import load_config
from prismcache.embedders import open_embedder
from prismcache.evaluation.replay import replay
from prismcache.evaluation.vectors import EmbeddingTable

# the uniform curve where these sets' false-hit rates lie, at 0.005 steps from 0.90: a coarse
# grid leaves gaps that flatter any rule read "at the same false-hit rate" (bench/quality.py)
GRID = (0.80, 0.85, *(round(0.90 + 0.005 * i, 3) for i in range(20)))  # ... 0.995


def uniform_at(curve: list[dict[str, Any]], false_rate: float) -> float | None:
    """The uniform curve's hit rate at ``false_rate``, linearly interpolated between the two
    sweep points around it (the curve's points sorted by false-hit rate); ``None`` when every
    point is above ``false_rate``."""
    points = sorted((p["false_hit_rate"], p["hit_rate"]) for p in curve)
    if not points or false_rate < points[0][0]:
        return None
    for (f0, h0), (f1, h1) in pairwise(points):
        if f0 <= false_rate <= f1:
            return h0 if f1 == f0 else h0 + (h1 - h0) * (false_rate - f0) / (f1 - f0)
    return points[-1][1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--sets", nargs="+", default=list(OOD), choices=OOD)
    parser.add_argument("--vector-cache", default=str(ROOT / "bench" / "out" / "emb"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "ood_quality.json"))
    args = parser.parse_args(argv)
    root = Path(args.data)
    base = load_config(None)
    table = EmbeddingTable(open_embedder(base.embedder), args.vector_cache)
    print(f"# bench/ood_quality.py  {time.strftime('%Y-%m-%d %H:%M')}  python "
          f"{platform.python_version()}  embedder {table.embedder.id}")
    print(f"{'set':14s}{'requests':>9s}{'hits':>8s}{'false':>8s}{'precision':>10s}"
          f"{'uniform at same false':>23s}{'ratio':>7s}")
    out: dict[str, Any] = {"embedder": table.embedder.id, "grid": GRID, "sets": {}}
    curves = []
    for name in args.sets:
        trace = distinct(ood_trace(ood_groups(root, name), requests=args.requests))
        table.ensure([str(line.query) for line in trace])
        shipped = replay(trace, base, table)["overall"]
        curve = uniform_curve(trace, base, table, GRID)
        bar = uniform_at(curve, shipped["false_hit_rate"])
        ratio = shipped["hit_rate"] / bar if bar else None
        out["sets"][name] = {"requests": len(trace), "hit_rate": shipped["hit_rate"],
                             "false_hit_rate": shipped["false_hit_rate"],
                             "precision": shipped["precision"], "uniform": curve,
                             "uniform_at_same_false": bar, "ratio": ratio}
        print(f"{name:14s}{len(trace):9d}{shipped['hit_rate']:8.2%}"
              f"{shipped['false_hit_rate']:8.2%}{shipped['precision'] or 0:10.3f}"
              f"{'-' if bar is None else f'{bar:.2%}':>23s}"
              f"{'-' if ratio is None else f'{ratio:.2f}x':>7s}", flush=True)
        curves.append((name, curve))
    print("\nuniform curve per set (threshold: hit rate / false-hit rate)")
    for name, curve in curves:
        print(f"{name:14s}" + "  ".join(f"{p['threshold']:.3f}: {p['hit_rate']:.2%}/"
                                       f"{p['false_hit_rate']:.2%}" for p in curve))
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
