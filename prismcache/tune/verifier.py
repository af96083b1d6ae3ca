"""Refit the built-in verifier for tuned vectors, with numpy only.

The shipped model's trees saw cosines of the base model; an adapter moves them. Rather than
train a verifier from the operator's few thousand pairs alone, the shipped trees are kept (they
encode what hundreds of thousands of pairs taught about numbers, negation, names and word
order) and new trees are boosted on top of their log-odds from the operator's pairs, with the
adapted cosine as feature ``cos`` (:func:`prismcache.tune.boost.boost` with an offset, stopped
early on a calibration share of the training pairs). The calibration share then fits the Platt
scaling, so ``cutoff`` keeps meaning "at least this likely to be right". The shipped
word-frequency table is kept as is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from prismcache.tune.boost import boost, stack
from prismcache.verifiers.builtin import Trees, load_model
from prismcache.verifiers.features import pair_features

__all__ = ["features", "platt", "probabilities", "refit"]

_TREE_KEYS = ("feature", "threshold", "left", "right", "leaf", "value", "missing_left",
              "baseline", "depth")


def features(pairs: Sequence[tuple[str, str]], cosines: np.ndarray,
             model: dict[str, Any]) -> np.ndarray:
    """The verifier's feature rows for text ``pairs`` with the given ``cosines``, using the
    word-frequency table of ``model`` (a :func:`~prismcache.verifiers.builtin.load_model`)."""
    idf = dict(zip((str(w) for w in model["idf_words"]),
                   model["idf_values"].astype(float).tolist(), strict=True))
    default = float(model["default_idf"])
    return np.stack([pair_features(q, c, float(cos), idf, default)
                     for (q, c), cos in zip(pairs, cosines, strict=True)])


def _trees(model: dict[str, Any]) -> Trees:
    return Trees(**{k: model[k] for k in _TREE_KEYS})


def probabilities(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Calibrated probabilities of a model's trees and Platt scaling for feature rows ``x``."""
    raw = _trees(model).raw(x)
    return 1.0 / (1.0 + np.exp(-(float(model["platt_a"]) * raw + float(model["platt_b"]))))


def platt(raw: np.ndarray, y: np.ndarray, *, iterations: int = 50) -> tuple[float, float]:
    """(a, b) of the logistic ``1 / (1 + exp(-(a * raw + b)))`` fitted to labels ``y`` by
    Newton's method (a tiny ridge keeps it finite when the classes separate).

    >>> a, b = platt(np.array([-2.0, -1.0, 1.0, 2.0, 0.5, -0.5]),
    ...              np.array([0, 0, 1, 1, 0, 1]))
    >>> a > 0
    True
    """
    y = np.asarray(y, dtype=np.float64)
    design = np.column_stack([np.asarray(raw, dtype=np.float64), np.ones(len(y))])
    theta = np.array([1.0, 0.0])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        grad = design.T @ (p - y) + 1e-4 * theta
        hess = (design * (p * (1 - p))[:, None]).T @ design + 1e-4 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(theta[0]), float(theta[1])


def refit(pairs: Sequence[tuple[str, str]], cosines: np.ndarray, labels: np.ndarray, *,
          version: str, base: dict[str, Any] | None = None,
          calibration: float = 0.2) -> tuple[dict[str, Any], dict[str, Any]]:
    """A verifier model (the payload of a ``builtin:PATH`` file) for pairs scored with
    ``cosines`` (of the tuned embedder), and a small report of the fit.

    ``base`` is the model to start from (default: the shipped one). A share ``calibration``
    of the pairs (by a hash of the query) stops the boosting and fits the Platt scaling.
    Raises ``ValueError`` when either class is missing.
    """
    y = np.asarray(labels, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("refitting the verifier needs pairs labelled both same and different")
    base = load_model(None) if base is None else base
    x = features(pairs, cosines, base)
    calib = np.array([hashlib.blake2b(q.encode(), digest_size=2).digest()[1] / 256 < calibration
                      for q, _ in pairs])
    if y[calib].all() or not y[calib].any() or y[~calib].all() or not y[~calib].any():
        calib = np.arange(len(y)) % 5 == 0  # a tiny set: any fifth will do
    offset = _trees(base).raw(x)
    added = boost(x[~calib], y[~calib], offset=offset[~calib], rounds=200, rate=0.1, depth=3,
                  min_hess=2.0, l2=2.0, valid=(x[calib], y[calib], offset[calib]))
    trees = stack({k: base[k] for k in _TREE_KEYS}, added)
    raw = Trees(**trees).raw(x[calib])
    a, b = platt(raw, y[calib])
    payload = {**{k: v for k, v in base.items() if k not in _TREE_KEYS},
               **{k: np.asarray(v) for k, v in trees.items()},
               "platt_a": np.array(a), "platt_b": np.array(b), "version": np.array(version)}
    report = {"pairs": len(y), "calibration_pairs": int(calib.sum()),
              "trees_kept": int(base["feature"].shape[0]),
              "trees_added": int(added["feature"].shape[0]), "platt": [a, b]}
    return payload, report
