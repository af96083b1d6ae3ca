"""Measure what the cache serves: labelled pairs -> precision/recall (``evaluate``), traces ->
hit rate, false hits, latency and money saved (``replay``), per-category thresholds fitted to a
target precision (``calibrate``), and converters from the shared datasets (``datasets``,
``traces``). The formats are described in :mod:`prismcache.evaluation.records`; the method in
``docs/evaluation.md``. Plots need ``pip install 'prismcache[bench]'``.

Importing this package loads neither the model nor matplotlib.
"""

from __future__ import annotations

from prismcache.evaluation.calibrate import Calibration, calibrate, write_policy
from prismcache.evaluation.evaluate import evaluate, score_pairs
from prismcache.evaluation.records import Pair, TraceLine, read_pairs, read_trace, write_jsonl
from prismcache.evaluation.replay import Economics, prepare_config, replay
from prismcache.evaluation.vectors import EmbeddingTable, PrecomputedEmbedder, measure_latency

__all__ = [
    "Calibration",
    "Economics",
    "EmbeddingTable",
    "Pair",
    "PrecomputedEmbedder",
    "TraceLine",
    "calibrate",
    "evaluate",
    "measure_latency",
    "prepare_config",
    "read_pairs",
    "read_trace",
    "replay",
    "score_pairs",
    "write_jsonl",
    "write_policy",
]
