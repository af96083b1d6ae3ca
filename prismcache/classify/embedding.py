"""A category classifier over query embeddings, trained at start-up from labelled examples.

Two models, both small enough to train in well under a second on a few hundred examples and
to predict in microseconds from the embedding the cache computes anyway:

* ``logistic``: multinomial logistic regression (softmax) with L2 regularisation, fitted by
  full-batch gradient descent with Adam. Better when categories overlap.
* ``centroid``: cosine to each category's mean vector, softmax over a fixed temperature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from prismcache.errors import ConfigError

__all__ = ["EmbeddingClassifier", "examples_digest", "load_examples"]

_CENTROID_TEMPERATURE = 20.0


def load_examples(source: str | Path) -> list[tuple[str, str]]:
    """Read ``(text, category)`` pairs from a JSONL file of ``{"text", "category"}`` objects;
    ``"builtin"`` reads the examples shipped with prismcache. Raises :class:`ConfigError`."""
    if str(source) == "builtin":
        text = resources.files("prismcache").joinpath("data/category_examples.jsonl").read_text(
            "utf-8"
        )
        origin = "builtin examples"
    else:
        try:
            text = Path(source).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"classifier.examples: cannot read {source}: "
                              f"{exc.strerror}") from None
        origin = str(source)
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((str(row["text"]), str(row["category"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(
                f"{origin} line {number}: expected {{\"text\": ..., \"category\": ...}}"
            ) from None
    if not pairs:
        raise ConfigError(f"{origin}: no examples")
    return pairs


def examples_digest(pairs: Sequence[tuple[str, str]]) -> str:
    """A digest of labelled examples: a saved classifier is reused only for the same ones."""
    h = hashlib.sha256()
    for text, category in pairs:
        h.update(f"{category}\x00{text}\x00".encode())
    return h.hexdigest()


class EmbeddingClassifier:
    """Predicts a category and its probability from a unit query vector.

    Build it with :meth:`fit`; predict with :meth:`predict` (one vector) or
    :meth:`predict_many`.
    """

    def __init__(
        self, categories: Sequence[str], weights: np.ndarray, bias: np.ndarray, kind: str
    ) -> None:
        self.categories = tuple(categories)
        self._weights = np.ascontiguousarray(weights, dtype=np.float32)  # (dim, classes)
        self._bias = np.asarray(bias, dtype=np.float32)
        self.kind = kind

    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        labels: Sequence[str],
        *,
        kind: str = "logistic",
        l2: float = 1e-4,
        epochs: int = 500,
        learning_rate: float = 0.05,
        seed: int = 0,
    ) -> EmbeddingClassifier:
        """Train on ``vectors`` (``(n, dim)`` unit rows) labelled ``labels``.

        Raises :class:`ConfigError` when fewer than two categories are given or the shapes
        disagree.
        """
        categories = sorted(set(labels))
        if len(categories) < 2:
            raise ConfigError("the classifier needs examples of at least two categories")
        if len(labels) != len(vectors):
            raise ConfigError(f"{len(labels)} labels for {len(vectors)} vectors")
        x = np.asarray(vectors, dtype=np.float32)
        index = {c: i for i, c in enumerate(categories)}
        y = np.array([index[label] for label in labels])
        if kind == "centroid":
            centroids = np.stack([x[y == i].mean(axis=0) for i in range(len(categories))])
            centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
            weights = centroids.T * _CENTROID_TEMPERATURE
            return cls(categories, weights, np.zeros(len(categories)), kind)
        if kind != "logistic":
            raise ConfigError(f"unknown classifier kind {kind!r}")
        return cls(categories, *_softmax_regression(x, y, len(categories), l2, epochs,
                                                    learning_rate, seed), kind)

    def save(self, path: str | Path, *, embedder_id: str, digest: str) -> None:
        """Write the model to an ``.npz`` file, tagged with the embedder and examples it fits."""
        np.savez(path, weights=self._weights, bias=self._bias,
                 categories=np.array(self.categories), kind=np.array(self.kind),
                 embedder=np.array(embedder_id), digest=np.array(digest))

    @classmethod
    def load(cls, path: str | Path, *, embedder_id: str, digest: str) -> EmbeddingClassifier | None:
        """Read a model written by :meth:`save`; ``None`` when it is missing or was fitted for
        another embedder or other examples (the caller then trains afresh)."""
        try:
            with np.load(path) as data:
                if str(data["embedder"]) != embedder_id or str(data["digest"]) != digest:
                    return None
                return cls([str(c) for c in data["categories"]], data["weights"], data["bias"],
                           str(data["kind"]))
        except (OSError, KeyError, ValueError):
            return None

    def predict_many(self, vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Categories and their probabilities for each row of ``vectors``."""
        probs = _softmax(np.asarray(vectors, dtype=np.float32) @ self._weights + self._bias)
        best = probs.argmax(axis=1)
        return [self.categories[i] for i in best], probs[np.arange(len(best)), best]

    def predict(self, vector: np.ndarray) -> tuple[str, float]:
        """The most probable category of one vector, and its probability."""
        logits = vector @ self._weights + self._bias
        probs = _softmax(logits[None, :])[0]
        best = int(probs.argmax())
        return self.categories[best], float(probs[best])


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _softmax_regression(
    x: np.ndarray, y: np.ndarray, classes: int, l2: float, epochs: int, lr: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, dim = x.shape
    w = rng.normal(0, 0.01, (dim, classes)).astype(np.float32)
    b = np.zeros(classes, dtype=np.float32)
    onehot = np.eye(classes, dtype=np.float32)[y]
    # Class weights so that a category with many examples does not swallow the small ones.
    counts = onehot.sum(axis=0)
    sample_w = (n / (classes * counts))[y][:, None].astype(np.float32)
    m_w, v_w, m_b, v_b = (np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b))
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, epochs + 1):
        probs = _softmax(x @ w + b)
        grad_logits = (probs - onehot) * sample_w / n
        g_w = x.T @ grad_logits + l2 * w
        g_b = grad_logits.sum(axis=0)
        m_w = beta1 * m_w + (1 - beta1) * g_w
        v_w = beta2 * v_w + (1 - beta2) * g_w * g_w
        m_b = beta1 * m_b + (1 - beta1) * g_b
        v_b = beta2 * v_b + (1 - beta2) * g_b * g_b
        correction1, correction2 = 1 - beta1**step, 1 - beta2**step
        w -= lr * (m_w / correction1) / (np.sqrt(v_w / correction2) + eps)
        b -= lr * (m_b / correction1) / (np.sqrt(v_b / correction2) + eps)
    return w, b
