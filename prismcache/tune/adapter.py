"""Train a linear adapter over frozen sentence vectors with numpy: contrastive (InfoNCE) loss.

The adapter is a full ``dim x dim`` matrix ``M`` started at the identity; a unit vector ``x``
maps to ``normalise(x @ M)``. Each step takes a batch of anchors (texts with a labelled
paraphrase), and scores every anchor against the batch's paraphrases and one hard negative per
anchor (a labelled non-paraphrase of it, else the nearest text of another paraphrase group
under the current adapter, re-mined every epoch). The loss is the cross-entropy of picking the
anchor's own paraphrase among those columns (temperature ``tau``); columns of the anchor's own
group are masked, not counted as negatives. ``reg * |M - I|^2`` keeps the map close to the
identity, so what the base model already separates stays separated. Gradients are written out
by hand (through the normalisation) and applied with Adam.

In a cache, wrong hits come from the nearest of thousands of stored entries, not from curated
pairs (``../shared/DESIGN.md``): hence the in-batch and mined negatives, and hence
``bench/tune.py`` judges the result by replaying a trace, not by pair scores alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["AdapterSettings", "Contrast", "groups_of", "train_adapter"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterSettings:
    """Hyper-parameters of :func:`train_adapter` (the defaults are what ``bench/tune.py``
    measured)."""

    epochs: int = 12
    batch: int = 128
    tau: float = 0.05
    reg: float = 0.1
    learning_rate: float = 2e-3
    mine: bool = True


def groups_of(n: int, positives: Sequence[tuple[int, int]]) -> np.ndarray:
    """Paraphrase group of each of ``n`` texts: the connected components of ``positives``.

    >>> groups_of(4, [(0, 1), (1, 2)]).tolist()
    [0, 0, 0, 3]
    """
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in positives:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


def _forward(x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = x @ m
    norm = np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return z / norm, norm


def _back(h: np.ndarray, norm: np.ndarray, dh: np.ndarray) -> np.ndarray:
    """d loss / d z for h = z / |z|."""
    return (dh - h * (h * dh).sum(axis=1, keepdims=True)) / norm


def _mine(h: np.ndarray, anchors: np.ndarray, group: np.ndarray) -> np.ndarray:
    """For each anchor, the nearest text of another group (under vectors ``h``)."""
    out = np.empty(len(anchors), dtype=np.intp)
    for start in range(0, len(anchors), 512):
        rows = anchors[start:start + 512]
        sims = h[rows] @ h.T
        sims[group[rows][:, None] == group[None, :]] = -np.inf
        out[start:start + 512] = np.argmax(sims, axis=1)
    return out


class Contrast:
    """The contrastive set-up shared by the adapter and the full fine-tune
    (:mod:`prismcache.tune.full`): which texts are anchors, their paraphrases, their hard
    negatives, and which batch columns are masked.

    Args:
        n: number of texts (rows ``0..n-1``).
        positives: pairs of rows labelled ``same: true``; each gives two (anchor, paraphrase)
            rows of :attr:`pairs`, one per direction.
        negatives: pairs of rows labelled ``same: false``.

    Raises ``ValueError`` when there is no positive pair (nothing to pull together).
    """

    def __init__(self, n: int, positives: Sequence[tuple[int, int]],
                 negatives: Sequence[tuple[int, int]]) -> None:
        if not positives:
            raise ValueError("contrastive training needs at least one pair labelled same: true")
        self.n = n
        self.group = groups_of(n, positives)
        self.pairs = np.array([*positives, *[(b, a) for a, b in positives]], dtype=np.intp)
        self.labelled: dict[int, list[int]] = {}
        for a, b in negatives:
            self.labelled.setdefault(a, []).append(b)
            self.labelled.setdefault(b, []).append(a)

    def hard(self, vectors: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        """One hard negative row per row of :attr:`pairs`: a labelled ``same: false`` partner
        of the anchor when it has one, else the nearest text of another paraphrase group
        under the unit ``vectors`` (a random text when ``vectors`` is None). Mine again each
        epoch, with the current model's vectors."""
        anchors = self.pairs[:, 0]
        mined = (_mine(vectors, anchors, self.group) if vectors is not None
                 else rng.integers(0, self.n, size=len(anchors)))
        return np.array([rng.choice(self.labelled[a]) if a in self.labelled else mined[i]
                         for i, a in enumerate(anchors.tolist())], dtype=np.intp)

    def masked(self, anchors: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """``(len(anchors), len(columns))`` bool: the columns not scored against an anchor,
        texts of its own paraphrase group other than its own paraphrase (column ``i`` of
        anchor ``i``)."""
        same = self.group[anchors][:, None] == self.group[columns][None, :]
        same[np.arange(len(anchors)), np.arange(len(anchors))] = False
        return same


def train_adapter(vectors: np.ndarray, positives: Sequence[tuple[int, int]],
                  negatives: Sequence[tuple[int, int]], *,
                  settings: AdapterSettings = AdapterSettings(), seed: int = 0,
                  progress: Callable[[int, int, float], None] | None = None) -> np.ndarray:
    """The adapter matrix for unit ``vectors`` (one row per text) given labelled pairs of row
    indices: ``positives`` (same answer) and ``negatives`` (different answers).

    ``progress(step, steps, loss)`` is called after every step. Raises ``ValueError`` when
    there is no positive pair (nothing to pull together).
    """
    if not positives:
        raise ValueError("training an adapter needs at least one pair labelled same: true")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = x.shape
    rng = np.random.default_rng(seed)
    contrast = Contrast(n, positives, negatives)
    pairs = contrast.pairs
    eye = np.eye(dim, dtype=np.float32)
    m = eye.copy()
    first, second = np.zeros_like(m), np.zeros_like(m)
    beta1, beta2, t = 0.9, 0.999, 0
    steps_per_epoch = max(1, -(-len(pairs) // settings.batch))
    steps = settings.epochs * steps_per_epoch
    for _ in range(settings.epochs):
        hard = contrast.hard(_forward(x, m)[0] if settings.mine else None, rng)
        order = rng.permutation(len(pairs))
        for start in range(0, len(order), settings.batch):
            chosen = order[start:start + settings.batch]
            a_rows, p_rows, n_rows = pairs[chosen, 0], pairs[chosen, 1], hard[chosen]
            columns = np.concatenate([p_rows, n_rows])
            ha, na = _forward(x[a_rows], m)
            hc, nc = _forward(x[columns], m)
            logits = (ha @ hc.T) / settings.tau
            own = np.zeros((len(chosen), len(columns)), dtype=bool)
            own[np.arange(len(chosen)), np.arange(len(chosen))] = True
            logits = np.where(contrast.masked(a_rows, columns), -np.inf, logits)
            logits -= logits.max(axis=1, keepdims=True)
            prob = np.exp(logits)
            prob /= prob.sum(axis=1, keepdims=True)
            loss = float(-np.log(np.maximum(prob[own], 1e-30)).mean())
            d_logits = (prob - own) / (len(chosen) * settings.tau)
            dz_a = _back(ha, na, d_logits @ hc)
            dz_c = _back(hc, nc, d_logits.T @ ha)
            grad = x[a_rows].T @ dz_a + x[columns].T @ dz_c + 2 * settings.reg * (m - eye)
            t += 1
            first = beta1 * first + (1 - beta1) * grad
            second = beta2 * second + (1 - beta2) * grad * grad
            m -= (settings.learning_rate * (first / (1 - beta1 ** t))
                  / (np.sqrt(second / (1 - beta2 ** t)) + 1e-8)).astype(np.float32)
            if progress is not None:
                progress(t, steps, loss)
    return m
