"""The vector index seam: k-nearest-neighbour search over unit vectors, in process memory.

Ids are the entries' integer ids (positive, below 2**63). Similarity is cosine similarity,
which for unit vectors is the inner product; results come best first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["VectorIndex"]


@runtime_checkable
class VectorIndex(Protocol):
    """Contract of every index. All methods are thread-safe: any number of concurrent
    ``search`` calls may run beside one writer (``add``/``remove``)."""

    dim: int

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (shape ``(n, dim)``, float32, unit norm) under ``ids`` (int64, shape
        ``(n,)``). Re-adding an existing id replaces its vector. A vector of the wrong dimension
        raises :class:`~prismcache.errors.IndexError_`."""
        ...

    def remove(self, ids: np.ndarray) -> None:
        """Remove ``ids``; unknown ids are ignored."""
        ...

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Return up to ``k`` ``(id, similarity)`` pairs, most similar first.

        ``vector`` has shape ``(dim,)``. An empty index returns ``[]``.
        """
        ...

    def __len__(self) -> int:
        """Number of live (not removed) vectors."""
        ...

    def save(self, path: Path) -> None:
        """Write a snapshot to ``path`` (a directory or file the implementation owns)."""
        ...
