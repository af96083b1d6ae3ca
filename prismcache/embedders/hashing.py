"""A deterministic embedder without a model: the test double of the embedder seam.

Each text becomes a bag of features (its lower-cased words, and the character trigrams of each
word padded with spaces). Every feature is hashed with BLAKE2b into a pseudo-random ±1 vector
of ``dim`` components; a text's vector is the weighted sum of its features' vectors, L2
normalised. This is a signed random projection of the bag of features, so the cosine of two
vectors tracks how many features their texts share: texts sharing words score higher than
unrelated texts, and typos still share most trigrams.

BLAKE2b, not the built-in ``hash()``, which is salted per process: the same text gives the same
vector in every process, on every machine, forever (the name ``hash-v1`` promises that).
"""

from __future__ import annotations

import hashlib
import numbers
import re
from collections.abc import Sequence
from typing import Self

import numpy as np

from prismcache.embedders import _check_texts, _unit_rows
from prismcache.embedders.base import embedder_id
from prismcache.errors import ConfigError

__all__ = ["HashEmbedder"]

_WORD = re.compile(r"\w+")
_WORD_WEIGHT = 1.0
_TRIGRAM_WEIGHT = 0.5
_DIGEST_BYTES = 64  # BLAKE2b's largest digest: 512 signs per call
# The vector of a text with no features at all (empty or punctuation only): any fixed unit
# vector will do, as long as it is not NaN.
_EMPTY_FEATURE = "\x00empty"


class HashEmbedder:
    """Embed texts by hashing their words and character trigrams; no model, no I/O.

    Deterministic across processes and machines; thread-safe (it holds no mutable state).

    >>> embedder = HashEmbedder(dim=64)
    >>> a, b, c = embedder.embed(["reset my password", "reset the password", "weather in Oslo"])
    >>> bool(a @ b > a @ c)
    True
    """

    name = "hash-v1"

    def __init__(self, dim: int = 64) -> None:
        """Raises ``ValueError`` unless ``dim`` is a positive integer."""
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)

    @classmethod
    def from_spec(cls, spec: str) -> Self:
        """``"hash"`` (64-d) or ``"hash:DIM"``; raises :class:`ConfigError` otherwise."""
        _, sep, rest = spec.partition(":")
        if not sep:
            return cls()
        try:
            return cls(dim=int(rest))
        except ValueError:
            raise ConfigError(
                f"embedder spec {spec!r}: expected 'hash' or 'hash:DIM' with DIM a positive "
                "integer"
            ) from None

    @property
    def id(self) -> str:
        """``"hash-v1:DIM"``."""
        return embedder_id(self.name, self.dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32 unit rows of shape ``(len(texts), dim)``."""
        batch = _check_texts(texts)
        vectors = np.empty((len(batch), self.dim), dtype=np.float32)
        for row, text in enumerate(batch):
            vectors[row] = self._vector(text)
        return _unit_rows(vectors, len(batch), self.dim, repr(self))

    def __repr__(self) -> str:
        return f"HashEmbedder(dim={self.dim})"

    def _vector(self, text: str) -> np.ndarray:
        features = _features(text) or {_EMPTY_FEATURE: 1.0}
        weights = np.fromiter(features.values(), dtype=np.float64, count=len(features))
        signs = np.stack([self._signs(feature) for feature in features])
        return weights @ signs

    def _signs(self, feature: str) -> np.ndarray:
        data = feature.encode("utf-8")
        blocks = -(-self.dim // (_DIGEST_BYTES * 8))
        digest = b"".join(
            hashlib.blake2b(data, digest_size=_DIGEST_BYTES, salt=block.to_bytes(16, "little"))
            .digest()
            for block in range(blocks)
        )
        bits = np.unpackbits(np.frombuffer(digest, dtype=np.uint8))[: self.dim]
        return 1.0 - 2.0 * bits.astype(np.float64)


def _features(text: str) -> dict[str, float]:
    """Weighted features of ``text``: ``w:`` words and ``c:`` character trigrams."""
    features: dict[str, float] = {}
    for word in _WORD.findall(text.lower()):
        features["w:" + word] = features.get("w:" + word, 0.0) + _WORD_WEIGHT
        padded = f" {word} "
        for start in range(len(padded) - 2):
            trigram = "c:" + padded[start : start + 3]
            features[trigram] = features.get(trigram, 0.0) + _TRIGRAM_WEIGHT
    return features
