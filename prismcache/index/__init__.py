"""The vector index seam: per-partition k-nearest-neighbour search in process memory.

Three implementations of :class:`VectorIndex`:

* :class:`ExactIndex`: numpy brute force; exact, fastest on small partitions, the test oracle;
* :class:`HnswIndex`: an hnswlib HNSW graph behind a readers-writer lock (:class:`RWLock`);
* :class:`TieredIndex` (the default): exact until it holds ``promote_at`` vectors, then HNSW.

Choose one with a typed :class:`IndexSpec` and :func:`make_index`; reopen a snapshot written by
any of them with :func:`load_index`.

    >>> import numpy as np
    >>> index = make_index(2, IndexSpec(kind="exact"))
    >>> index.add(np.array([1]), np.array([[1.0, 0.0]], dtype=np.float32))
    >>> index.search(np.array([1.0, 0.0], dtype=np.float32), k=4)
    [(1, 1.0)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prismcache.errors import IndexError_
from prismcache.index.base import VectorIndex
from prismcache.index.exact import ExactIndex, read_meta
from prismcache.index.hnsw import HnswIndex
from prismcache.index.rwlock import RWLock
from prismcache.index.tiered import TieredIndex

__all__ = [
    "ExactIndex",
    "HnswIndex",
    "IndexSpec",
    "RWLock",
    "TieredIndex",
    "VectorIndex",
    "load_index",
    "make_index",
]

IndexKind = Literal["tiered", "exact", "hnsw"]


@dataclass(frozen=True, kw_only=True)
class IndexSpec:
    """How to build a partition's index.

    ``kind`` picks the implementation; ``m``, ``ef_construction`` and ``ef_search`` configure
    HNSW graphs (``hnsw``, and ``tiered`` after promotion); ``promote_at`` is the live count
    past which a ``tiered`` index becomes HNSW. Invalid values raise ``ValueError``.

    >>> IndexSpec(ef_search=128)
    IndexSpec(kind='tiered', m=16, ef_construction=128, ef_search=128, promote_at=2048)
    """

    kind: IndexKind = "tiered"
    m: int = 16
    ef_construction: int = 128
    ef_search: int = 64
    promote_at: int = 2048

    def __post_init__(self) -> None:
        if self.kind not in _FACTORIES:
            raise ValueError(f"IndexSpec.kind must be one of {sorted(_FACTORIES)}, "
                             f"got {self.kind!r}")
        for name, low, high in (("m", 2, 256), ("ef_construction", 1, 100_000),
                                ("ef_search", 1, 100_000), ("promote_at", 1, 10**9)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"IndexSpec.{name} must be an integer in [{low}, {high}], "
                                 f"got {value!r}")


def _exact(dim: int, spec: IndexSpec) -> VectorIndex:
    return ExactIndex(dim)


def _hnsw(dim: int, spec: IndexSpec) -> VectorIndex:
    return HnswIndex(dim, m=spec.m, ef_construction=spec.ef_construction,
                     ef_search=spec.ef_search)


def _tiered(dim: int, spec: IndexSpec) -> VectorIndex:
    return TieredIndex(dim, promote_at=spec.promote_at, m=spec.m,
                       ef_construction=spec.ef_construction, ef_search=spec.ef_search)


_FACTORIES: dict[str, Callable[[int, IndexSpec], VectorIndex]] = {
    "exact": _exact,
    "hnsw": _hnsw,
    "tiered": _tiered,
}

_LOADERS: dict[str, Callable[[Path], VectorIndex]] = {
    "exact": ExactIndex.load,
    "hnsw": HnswIndex.load,
    "tiered": TieredIndex.load,
}


def make_index(dim: int, spec: IndexSpec) -> VectorIndex:
    """Return a new, empty index of ``dim``-dimensional unit vectors as ``spec`` describes."""
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    return _FACTORIES[spec.kind](dim, spec)


def load_index(path: Path) -> VectorIndex:
    """Reopen the snapshot that any index's ``save(path)`` wrote.

    Raises :class:`~prismcache.errors.IndexError_` when ``path`` holds no readable snapshot.
    """
    kind = read_meta(Path(path))["kind"]
    loader = _LOADERS.get(kind)
    if loader is None:
        raise IndexError_(f"snapshot at {path} is of unknown kind {kind!r}")
    return loader(Path(path))
