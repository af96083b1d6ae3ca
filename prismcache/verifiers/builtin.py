"""``builtin``: the verifier shipped with prismcache, pre-trained, offline, numpy only.

It reads the pair features of :mod:`prismcache.verifiers.features` (the cosine, content words
with no counterpart weighted by rarity, numbers, negation, entities, antonyms, question words,
word order, lengths) and combines them with gradient-boosted trees trained on labelled pairs
from ``../shared/data`` and perturbations of them (``tools/train_verifier.py``; provenance and
licences in ``docs/decision.md``). The trees and the word-frequency table ship in
``prismcache/data/verifier-builtin.npz``; scoring a candidate takes tens of microseconds and
needs no second model.

The probability is calibrated on a split held apart from training (Platt scaling), so a
category's ``cutoff`` reads as "serve when at least this likely to be right".
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from prismcache.errors import ConfigError
from prismcache.verifiers.features import NAMES, pair_features

if TYPE_CHECKING:
    from prismcache.decision import Candidate, Query

__all__ = ["BuiltinVerifier", "Trees", "load_model"]

_SHIPPED = "data/verifier-builtin.npz"


class Trees:
    """Gradient-boosted regression trees as flat arrays, scored all at once with numpy.

    Every tree is padded to the same node count; ``feature[t, n]`` and ``threshold[t, n]``
    split node ``n`` of tree ``t`` (``x <= threshold`` goes ``left``, NaN goes where
    ``missing_left`` says), leaves have ``leaf[t, n]`` set and hold ``value[t, n]``.
    """

    def __init__(self, *, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray,
                 right: np.ndarray, leaf: np.ndarray, value: np.ndarray,
                 missing_left: np.ndarray, baseline: float, depth: int) -> None:
        self.feature, self.threshold = feature.astype(np.intp), threshold.astype(np.float64)
        self.left, self.right = left.astype(np.intp), right.astype(np.intp)
        self.leaf, self.value = leaf.astype(bool), value.astype(np.float64)
        self.missing_left = missing_left.astype(bool)
        self.baseline, self.depth = float(baseline), int(depth)
        self._trees = np.arange(self.feature.shape[0])

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The summed tree outputs (log-odds) for the rows of ``x``."""
        rows = np.arange(x.shape[0])[:, None]
        node = np.zeros((x.shape[0], self.feature.shape[0]), dtype=np.intp)
        trees = self._trees[None, :]
        for _ in range(self.depth):
            leaf = self.leaf[trees, node]
            if leaf.all():
                break
            values = x[rows, self.feature[trees, node]]
            go_left = np.where(np.isnan(values), self.missing_left[trees, node],
                               values <= self.threshold[trees, node])
            step = np.where(go_left, self.left[trees, node], self.right[trees, node])
            node = np.where(leaf, node, step)
        return self.baseline + self.value[trees, node].sum(axis=1)


def load_model(path: str | Path | None = None) -> dict[str, Any]:
    """Read a verifier model file (default: the shipped one) into its parts. Raises
    :class:`ConfigError` when it is missing, unreadable or made for other features."""
    try:
        if path is None:
            with resources.as_file(resources.files("prismcache").joinpath(_SHIPPED)) as shipped:
                data = dict(np.load(shipped, allow_pickle=False))
        else:
            data = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the verifier model {path or _SHIPPED}: {exc}") from None
    names = tuple(str(n) for n in data["names"])
    if names != NAMES:
        raise ConfigError(f"verifier model {path or _SHIPPED} was trained on features "
                          f"{names}, this prismcache computes {NAMES}: retrain it")
    return data


class BuiltinVerifier:
    """The shipped pair classifier (see the module docstring). ``path`` loads another model
    file written by ``tools/train_verifier.py``."""

    def __init__(self, path: str | Path | None = None) -> None:
        data = load_model(path)
        self.name = str(data.get("version", "builtin-v1"))
        self._idf = dict(zip((str(w) for w in data["idf_words"]),
                             data["idf_values"].astype(float).tolist(), strict=True))
        self._default_idf = float(data["default_idf"])
        self._trees = Trees(feature=data["feature"], threshold=data["threshold"],
                            left=data["left"], right=data["right"], leaf=data["leaf"],
                            value=data["value"], missing_left=data["missing_left"],
                            baseline=float(data["baseline"]), depth=int(data["depth"]))
        self._scale, self._shift = float(data["platt_a"]), float(data["platt_b"])

    @classmethod
    def from_spec(cls, spec: str) -> Self:
        """``"builtin"`` (the shipped model) or ``"builtin:PATH"`` (a retrained one)."""
        _, _, path = spec.partition(":")
        return cls(path or None)

    def features(self, query: Query, candidates: Sequence[Candidate]) -> np.ndarray:
        """The feature rows (one per candidate) the model scores."""
        return np.stack([pair_features(query.text, c.text, c.similarity, self._idf,
                                       self._default_idf) for c in candidates])

    def probabilities(self, query: Query, candidates: Sequence[Candidate]) -> np.ndarray:
        """Calibrated probabilities that each candidate's answer serves ``query``."""
        if not candidates:
            return np.zeros(0)
        return self.probabilities_of(self.features(query, candidates))

    def probabilities_of(self, features: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for precomputed feature rows (evaluation tools)."""
        raw = self._trees.raw(features)
        return 1.0 / (1.0 + np.exp(-(self._scale * raw + self._shift)))

    def __repr__(self) -> str:
        return f"BuiltinVerifier({self.name!r})"
