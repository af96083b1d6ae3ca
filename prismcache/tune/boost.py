"""Gradient-boosted trees for the built-in verifier, trained with numpy only.

Users who run ``prismcache tune`` have no scikit-learn, so the verifier is refitted here: binary
log-loss boosting of depth-limited regression trees over quantile bins (the histogram method of
LightGBM and scikit-learn's ``HistGradientBoostingClassifier``), with sample weights, L2 on the
leaf values, and NaN sent to whichever side gains more. :func:`boost` can start from the log-odds
of an existing model (``offset``), so the shipped trees are kept and new trees learn only what
the tuned vectors change. The result is the padded array layout that
:class:`prismcache.verifiers.builtin.Trees` scores (:func:`stack` appends trees to a model's).

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(400, 2)); y = x[:, 0] + 0.2 * rng.normal(size=400) > 0
>>> trees = boost(x, y, rounds=20)
>>> bool(((Trees(**trees).raw(x) > 0) == y).mean() > 0.9)
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prismcache.verifiers.builtin import Trees

__all__ = ["boost", "stack"]

_FIELDS = (("feature", np.int32), ("threshold", np.float64), ("left", np.int32),
           ("right", np.int32), ("leaf", np.bool_), ("value", np.float64),
           ("missing_left", np.bool_))


def _bins(x: np.ndarray, n_bins: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Bin codes (``n_bins`` for NaN) and, per feature, the upper edge of each bin."""
    codes = np.empty(x.shape, dtype=np.int32)
    edges = []
    for f in range(x.shape[1]):
        column = x[:, f]
        finite = column[~np.isnan(column)]
        cuts = (np.unique(np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1]))
                if finite.size else np.zeros(0))
        codes[:, f] = np.where(np.isnan(column), n_bins, np.searchsorted(cuts, column))
        edges.append(cuts)
    return codes, edges


class _Tree:
    """One tree under construction: node arrays grown depth first."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []

    def add(self) -> int:
        self.nodes.append({"feature": 0, "threshold": 0.0, "left": 0, "right": 0,
                           "leaf": True, "value": 0.0, "missing_left": False})
        return len(self.nodes) - 1


def _best_split(codes: np.ndarray, g: np.ndarray, h: np.ndarray, n_bins: int, lam: float,
                min_hess: float) -> tuple[float, int, int, bool]:
    """(gain, feature, last bin going left, NaN goes left) of the best split of these rows."""
    best = (0.0, -1, -1, False)
    total_g, total_h = g.sum(), h.sum()
    parent = total_g * total_g / (total_h + lam)
    for f in range(codes.shape[1]):
        hist_g = np.bincount(codes[:, f], weights=g, minlength=n_bins + 1)
        hist_h = np.bincount(codes[:, f], weights=h, minlength=n_bins + 1)
        nan_g, nan_h = hist_g[n_bins], hist_h[n_bins]
        left_g, left_h = np.cumsum(hist_g[:n_bins])[:-1], np.cumsum(hist_h[:n_bins])[:-1]
        for nan_left in (False, True):
            lg = left_g + (nan_g if nan_left else 0.0)
            lh = left_h + (nan_h if nan_left else 0.0)
            rg, rh = total_g - lg, total_h - lh
            ok = (lh >= min_hess) & (rh >= min_hess)
            if not ok.any():
                continue
            gain = np.where(ok, lg * lg / (lh + lam) + rg * rg / (rh + lam) - parent, -np.inf)
            b = int(np.argmax(gain))
            if gain[b] > best[0]:
                best = (float(gain[b]), f, b, nan_left)
    return best


def _grow(tree: _Tree, node: int, rows: np.ndarray, codes: np.ndarray, edges: list[np.ndarray],
          g: np.ndarray, h: np.ndarray, depth: int, *, n_bins: int, lam: float, min_hess: float,
          rate: float) -> None:
    gain, f, b, nan_left = (0.0, -1, -1, False)
    if depth > 0 and len(rows) > 1:
        gain, f, b, nan_left = _best_split(codes[rows], g[rows], h[rows], n_bins, lam, min_hess)
    if f < 0 or gain <= 1e-9:
        tree.nodes[node]["value"] = float(-rate * g[rows].sum() / (h[rows].sum() + lam))
        return
    column = codes[rows, f]
    go_left = np.where(column == n_bins, nan_left, column <= b)
    left, right = tree.add(), tree.add()
    tree.nodes[node].update(feature=f, threshold=float(edges[f][b]), left=left, right=right,
                            leaf=False, missing_left=nan_left)
    for child, part in ((left, rows[go_left]), (right, rows[~go_left])):
        _grow(tree, child, part, codes, edges, g, h, depth - 1, n_bins=n_bins, lam=lam,
              min_hess=min_hess, rate=rate)


def boost(x: np.ndarray, y: np.ndarray, *, weight: np.ndarray | None = None,
          offset: np.ndarray | None = None, rounds: int = 100, rate: float = 0.1,
          depth: int = 3, n_bins: int = 64, l2: float = 1.0, min_hess: float = 1.0,
          valid: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
          patience: int = 15) -> dict[str, np.ndarray]:
    """Fit boosted trees to labels ``y`` (bool) on feature rows ``x`` (NaN allowed).

    ``offset`` is each row's starting log-odds (default: the weighted base rate, which becomes
    ``baseline``; with an offset the baseline is 0 and the trees are meant to be appended to the
    offset's model). With ``valid=(x, y, offset)`` boosting stops when the validation log-loss
    has not improved for ``patience`` rounds and keeps the best prefix. Returns the
    :class:`~prismcache.verifiers.builtin.Trees` arrays (keyword arguments of its constructor).
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    if offset is None:
        rate0 = float(np.clip((w * y).sum() / w.sum(), 1e-6, 1 - 1e-6))
        baseline = float(np.log(rate0 / (1 - rate0)))
        raw = np.full(len(y), baseline)
    else:
        baseline, raw = 0.0, np.asarray(offset, dtype=np.float64).copy()
    codes, edges = _bins(np.asarray(x, dtype=np.float64), n_bins)
    if valid is not None:
        vx, vy, voff = valid
        vraw = np.full(len(vy), baseline) if voff is None else np.asarray(voff, float).copy()
        best_loss, best_n = _logloss(vraw, vy), 0
    trees: list[_Tree] = []
    rows = np.arange(len(y))
    for _ in range(rounds):
        p = 1.0 / (1.0 + np.exp(-raw))
        g, h = w * (p - y), w * np.maximum(p * (1 - p), 1e-6)
        tree = _Tree()
        _grow(tree, tree.add(), rows, codes, edges, g, h, depth, n_bins=n_bins, lam=l2,
              min_hess=min_hess, rate=rate)
        trees.append(tree)
        step = Trees(**_arrays(trees[-1:], baseline=0.0))
        raw += step.raw(x)
        if valid is not None:
            vraw += step.raw(vx)
            loss = _logloss(vraw, vy)
            if loss < best_loss - 1e-7:
                best_loss, best_n = loss, len(trees)
            elif len(trees) - best_n >= patience:
                break
    if valid is not None:
        trees = trees[:max(best_n, 1)]
    return _arrays(trees, baseline=baseline)


def _logloss(raw: np.ndarray, y: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, raw) - y * raw))


def _arrays(trees: list[_Tree], *, baseline: float) -> dict[str, Any]:
    width = max(len(t.nodes) for t in trees)
    out: dict[str, Any] = {name: np.zeros((len(trees), width), dtype=dtype)
                           for name, dtype in _FIELDS}
    out["leaf"][:] = True
    depth = 1
    for t, tree in enumerate(trees):
        for n, node in enumerate(tree.nodes):
            for name, _ in _FIELDS:
                out[name][t, n] = node[name]
        depth = max(depth, _depth(tree.nodes, 0) + 1)
    out["baseline"], out["depth"] = baseline, depth
    return out


def _depth(nodes: list[dict[str, Any]], node: int) -> int:
    if nodes[node]["leaf"]:
        return 0
    return 1 + max(_depth(nodes, nodes[node]["left"]), _depth(nodes, nodes[node]["right"]))


def stack(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The trees of ``first`` followed by those of ``second`` (padded to one width), with
    ``first``'s baseline: a model whose log-odds are the sum of both."""
    width = max(first["feature"].shape[1], second["feature"].shape[1])
    out: dict[str, Any] = {}
    for name, dtype in _FIELDS:
        parts = []
        for model in (first, second):
            array = np.asarray(model[name], dtype=dtype)
            pad = np.zeros((array.shape[0], width - array.shape[1]), dtype=dtype)
            if name == "leaf":
                pad[:] = True
            parts.append(np.concatenate([array, pad], axis=1))
        out[name] = np.concatenate(parts)
    out["baseline"] = float(first["baseline"])
    out["depth"] = max(int(first["depth"]), int(second["depth"]))
    return out
