"""``prismcache calibrate``: fit each category's threshold to labelled pairs.

For each category, the chosen threshold is the lowest one (so the highest recall) at which the
Wilson 95% lower bound of the precision of served pairs meets the target, with the category's
guards applied as the cache applies them. Categories with fewer than ``min_pairs`` pairs or
``min_positives`` positives keep their configured threshold and are flagged ``too-few-pairs``;
categories where no threshold meets the target get ``unreachable_threshold`` (1.0: only
identical vectors, in practice the exact tier) and are flagged ``unreachable``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from prismcache.config import CacheConfig
from prismcache.evaluation import metrics
from prismcache.evaluation.evaluate import score_pairs
from prismcache.evaluation.records import Pair
from prismcache.evaluation.vectors import EmbeddingTable

__all__ = ["Calibration", "calibrate", "write_policy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """The outcome for one category. ``flag`` is ``None`` when the threshold was fitted."""

    category: str
    threshold: float
    pairs: int
    positives: int
    flag: str | None = None
    precision: float | None = None
    precision_lower: float | None = None
    recall: float | None = None

    def comment(self) -> str:
        """A one-line account of the decision, for the YAML file and the console."""
        base = f"{self.category}: {self.pairs} pairs ({self.positives} same)"
        if self.flag == "too-few-pairs":
            return f"FLAGGED too-few-pairs: {base}; kept threshold {self.threshold}"
        if self.flag == "unreachable":
            return f"FLAGGED unreachable: {base}; no threshold meets the target"
        return (f"{base}; precision {self.precision:.3f} (Wilson 95% lower "
                f"{self.precision_lower:.3f}), recall {self.recall:.3f}")


def calibrate(pairs: Sequence[Pair], config: CacheConfig, table: EmbeddingTable, *,
              target_precision: float = 0.95, min_pairs: int = 100, min_positives: int = 30,
              unreachable_threshold: float = 1.0) -> list[Calibration]:
    """One :class:`Calibration` per category in ``pairs``, sorted by name. Raises
    ``ValueError`` for a target outside (0, 1) or no pairs."""
    if not 0.0 < target_precision < 1.0:
        raise ValueError(f"target precision must be in (0, 1), got {target_precision}")
    if not pairs:
        raise ValueError("no pairs to calibrate on")
    scored = score_pairs(pairs, config, table)
    out = []
    for name in sorted(set(scored.categories)):
        idx = np.array([i for i, c in enumerate(scored.categories) if c == name])
        labels = scored.labels[idx]
        n, positives = len(idx), int(labels.sum())
        current = config.policy(name).threshold
        if n < min_pairs or positives < min_positives:
            out.append(Calibration(category=name, threshold=current, pairs=n,
                                   positives=positives, flag="too-few-pairs"))
            continue
        choice = metrics.best_threshold(scored.scores[idx], scored.guards_pass[idx], labels,
                                        target_precision, bound="wilson")
        if choice is None:
            out.append(Calibration(category=name, threshold=unreachable_threshold, pairs=n,
                                   positives=positives, flag="unreachable"))
            continue
        out.append(Calibration(category=name, threshold=choice.threshold, pairs=n,
                               positives=positives, precision=choice.precision,
                               precision_lower=choice.precision_lower, recall=choice.recall))
    return out


def write_policy(path: str | Path, results: Sequence[Calibration], *,
                 base: Mapping[str, Any] | None = None, target_precision: float,
                 source: str = "") -> str:
    """Write a config YAML: ``base`` (a user's config mapping, or nothing) with each
    calibrated category's ``threshold`` set, each decision as a comment. Returns the text."""
    doc = dict(base or {})
    categories = {name: dict(spec or {}) for name, spec in (doc.get("categories") or {}).items()}
    for result in results:
        categories.setdefault(result.category, {})["threshold"] = result.threshold
    doc["categories"] = categories
    header = [f"# prismcache calibrate: target precision {target_precision} "
              "(Wilson 95% lower bound)" + (f" on {source}" if source else "")]
    header += [f"#   {r.comment()}" for r in results]
    text = "\n".join(header) + "\n" + yaml.safe_dump(doc, sort_keys=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")
    return text
