"""An index that starts exact and becomes HNSW once its partition grows.

Partitions are per tenant, model, system prompt and conversation, so most hold a handful of
vectors; on them a numpy scan is faster than a graph and exact. :class:`TieredIndex` starts as
an :class:`ExactIndex` and, the first time an ``add`` leaves more than ``promote_at`` live
vectors, builds an :class:`HnswIndex` from them and switches to it. It never demotes: a
partition that shrank once it was large is likely to grow again, and flapping would rebuild the
graph each time.

Writers are serialised by a mutex owned by this class; searches take no lock here and run on
whichever index is current when they start. During a promotion they keep searching the exact
index (unchanged, since the writer holding the mutex is the one promoting) until the finished
graph replaces it in one reference assignment.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from prismcache.errors import IndexError_
from prismcache.index.exact import ExactIndex, read_meta, write_meta
from prismcache.index.hnsw import HnswIndex

__all__ = ["TieredIndex"]

_INNER = "inner"
_TIERS: dict[str, type[ExactIndex] | type[HnswIndex]] = {"exact": ExactIndex, "hnsw": HnswIndex}


class TieredIndex:
    """Exact search up to ``promote_at`` live vectors, HNSW beyond; implements ``VectorIndex``.

    ``m``, ``ef_construction`` and ``ef_search`` configure the HNSW graph built on promotion.
    """

    kind = "tiered"

    def __init__(
        self,
        dim: int,
        *,
        promote_at: int = 2048,
        m: int = 16,
        ef_construction: int = 128,
        ef_search: int = 64,
    ) -> None:
        """An empty (exact) index; raises ``ValueError`` for non-positive parameters."""
        if min(dim, promote_at, m, ef_construction, ef_search) < 1:
            raise ValueError("dim, promote_at, m, ef_construction and ef_search must be positive")
        self.dim = dim
        self.promote_at = promote_at
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self._write_mutex = threading.Lock()
        self._inner: ExactIndex | HnswIndex = ExactIndex(dim)

    def __repr__(self) -> str:
        return (f"TieredIndex(dim={self.dim}, promote_at={self.promote_at}, "
                f"tier={self.tier!r}, len={len(self)})")

    def __len__(self) -> int:
        """Number of live vectors."""
        return len(self._inner)

    @property
    def nbytes(self) -> int:
        """Resident bytes of the current tier's index."""
        return self._inner.nbytes

    @property
    def tier(self) -> str:
        """``"exact"`` before promotion, ``"hnsw"`` after."""
        return self._inner.kind

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace vectors under ``ids``, promoting to HNSW past ``promote_at``."""
        with self._write_mutex:
            self._inner.add(ids, vectors)
            if isinstance(self._inner, ExactIndex) and len(self._inner) > self.promote_at:
                self._promote(self._inner)

    def remove(self, ids: np.ndarray) -> None:
        """Remove ``ids``; unknown ids are ignored."""
        with self._write_mutex:
            self._inner.remove(ids)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Return up to ``k`` ``(id, similarity)`` pairs from the current tier, best first."""
        return self._inner.search(vector, k)

    def save(self, path: Path) -> None:
        """Write the current tier's snapshot into ``path/inner`` and this index's ``meta.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with self._write_mutex:
            self._inner.save(path / _INNER)
            write_meta(path, {
                "kind": self.kind, "dim": self.dim, "promote_at": self.promote_at, "m": self.m,
                "ef_construction": self.ef_construction, "ef_search": self.ef_search,
            })

    @classmethod
    def load(cls, path: Path) -> TieredIndex:
        """Read a snapshot written by :meth:`save`, in the tier it was saved in."""
        path = Path(path)
        meta = read_meta(path, cls.kind)
        index = cls(meta["dim"], promote_at=meta["promote_at"], m=meta["m"],
                    ef_construction=meta["ef_construction"], ef_search=meta["ef_search"])
        tier = _TIERS.get(read_meta(path / _INNER)["kind"])
        if tier is None:
            raise IndexError_(f"tiered snapshot at {path} holds neither an exact nor an hnsw index")
        index._inner = tier.load(path / _INNER)
        return index

    def _promote(self, exact: ExactIndex) -> None:
        ids, vectors = exact.items()
        graph = HnswIndex(self.dim, m=self.m, ef_construction=self.ef_construction,
                          ef_search=self.ef_search, capacity=ids.size + ids.size // 4)
        graph.add(ids, vectors)
        self._inner = graph
