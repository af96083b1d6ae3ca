"""The embedder seam: text in, unit-norm float32 vectors out.

Every vector the cache stores records the embedder that made it (:attr:`Embedder.id`, i.e.
``"name:dim"``) so that a cache opened with another embedder refuses those entries with an
:class:`~prismcache.errors.EmbedderMismatch` instead of comparing incomparable vectors.

Embedders are chosen by a spec string through :func:`prismcache.embedders.open_embedder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Embedder", "embedder_id"]


def embedder_id(name: str, dim: int) -> str:
    """The identity recorded with every vector: ``"name:dim"``."""
    return f"{name}:{dim}"


@runtime_checkable
class Embedder(Protocol):
    """Contract of every embedder.

    Attributes:
        name: stable identifier of the model (changes when the vectors would change).
        dim: dimension of the vectors.
        id: ``embedder_id(name, dim)``.
    """

    name: str
    dim: int

    @property
    def id(self) -> str:
        """``"name:dim"``, recorded with every stored vector."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` as one batch.

        Returns a C-contiguous float32 array of shape ``(len(texts), dim)`` whose rows have unit
        L2 norm. Raises :class:`~prismcache.errors.EmbeddingError` on failure; never returns a
        partial batch.
        """
        ...
