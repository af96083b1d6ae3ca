"""Decision metrics over scored pairs: threshold sweeps, ROC AUC, Wilson bounds, percentiles.

A pair is *served* at threshold ``t`` when its score is at least ``t`` and it is eligible (the
guards passed, same conversation context, the category enabled); scores of ``+inf`` mark pairs
the exact tier serves whatever the threshold. Precision is ``None`` when nothing is served.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Choice", "best_threshold", "percentile", "recall_at_precision", "roc_auc", "sweep",
           "wilson_lower"]

#: the threshold grid of a sweep
GRID: tuple[float, ...] = tuple(round(0.5 + 0.01 * i, 2) for i in range(51))


def wilson_lower(successes: int, n: int, z: float = 1.959964) -> float:
    """Lower end of the Wilson score interval for ``successes`` out of ``n`` (0.0 when n=0).

    >>> round(wilson_lower(95, 100), 3)
    0.888
    """
    if n <= 0:
        return 0.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, or ``None`` when there are none."""
    array = np.asarray(values, dtype=float)
    return float(np.percentile(array, q)) if array.size else None


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for boolean ``labels`` (ties count half), or
    ``None`` when either class is empty.

    >>> roc_auc(np.array([0.9, 0.8, 0.3]), np.array([True, False, False]))
    1.0
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def recall_at_precision(scores: np.ndarray, labels: np.ndarray, precision: float) -> float:
    """Recall at the loosest score cut whose precision is at least ``precision`` (0.0 when
    no cut reaches it or there are no positives): the share of true matches a cache could
    serve while keeping that precision.

    >>> recall_at_precision(np.array([0.9, 0.8, 0.7, 0.3]), np.array([1, 1, 0, 1]), 0.99)
    0.6666666666666666
    """
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=float), kind="mergesort")
    tp = np.cumsum(labels[order])
    ok = np.flatnonzero(tp / np.arange(1, len(labels) + 1) >= precision)
    return float(tp[ok[-1]] / labels.sum()) if len(ok) and labels.sum() else 0.0


def _row(threshold: float, tp: int, fp: int, positives: int, total: int) -> dict[str, Any]:
    served = tp + fp
    precision = tp / served if served else None
    recall = tp / positives if positives else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision and recall else (0.0 if precision is not None and recall is not None
                                        else None))
    return {"threshold": threshold, "precision": precision, "recall": recall, "f1": f1,
            "tp": tp, "fp": fp, "fn": positives - tp, "tn": total - positives - fp}


def sweep(scores: np.ndarray, eligible: np.ndarray, labels: np.ndarray,
          thresholds: Sequence[float] = GRID) -> list[dict[str, Any]]:
    """One row per threshold: ``threshold, precision, recall, f1, tp, fp, fn, tn``."""
    labels = np.asarray(labels, dtype=bool)
    live = np.asarray(eligible, dtype=bool)
    rows = []
    for t in thresholds:
        served = live & (scores >= t)
        tp = int((served & labels).sum())
        rows.append(_row(float(t), tp, int(served.sum()) - tp, int(labels.sum()), len(labels)))
    return rows


@dataclass(frozen=True, slots=True)
class Choice:
    """A threshold chosen for a target precision, with what it achieves on the input."""

    threshold: float
    served: int
    correct: int
    positives: int

    @property
    def precision(self) -> float | None:
        """correct / served (``None`` when nothing is served)."""
        return self.correct / self.served if self.served else None

    @property
    def recall(self) -> float | None:
        """correct / positives."""
        return self.correct / self.positives if self.positives else None

    @property
    def precision_lower(self) -> float:
        """Wilson 95% lower bound of the precision."""
        return wilson_lower(self.correct, self.served)


def best_threshold(scores: np.ndarray, eligible: np.ndarray, labels: np.ndarray,
                   target: float, *, bound: str = "wilson", decimals: int = 4) -> Choice | None:
    """The lowest threshold (highest recall), rounded up to ``decimals``, whose precision
    meets ``target``: its Wilson 95% lower bound (``bound="wilson"``) or its measured value
    (``bound="point"``). Returns ``None`` when no threshold in (0, 1] meets it or nothing
    positive is ever served. Raises ``ValueError`` for an unknown ``bound``."""
    if bound not in ("wilson", "point"):
        raise ValueError(f"bound must be 'wilson' or 'point', got {bound!r}")
    labels = np.asarray(labels, dtype=bool)
    live = np.asarray(eligible, dtype=bool)
    always = live & np.isinf(scores) & (scores > 0)
    base_tp, base_served = int((always & labels).sum()), int(always.sum())
    finite = live & np.isfinite(scores)
    order = np.argsort(scores[finite])
    s, y = scores[finite][order], labels[finite][order]
    scale = 10 ** decimals
    candidates = np.unique(np.ceil(s * scale - 1e-9) / scale)
    candidates = candidates[(candidates > 0) & (candidates <= 1.0)]
    if candidates.size == 0:
        return None
    start = np.searchsorted(s, candidates, side="left")
    suffix_tp = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    positives = int(labels.sum())
    best = None
    for t, i in zip(candidates[::-1], start[::-1], strict=True):  # strict -> loose
        tp = base_tp + int(suffix_tp[i])
        served = base_served + len(s) - int(i)
        if tp == 0:
            continue
        value = wilson_lower(tp, served) if bound == "wilson" else tp / served
        if value >= target:
            best = Choice(float(t), served, tp, positives)
    return best
