"""Exact (brute-force) search in numpy, and the input checks and snapshot files every index shares.

:class:`ExactIndex` keeps the vectors in one growable float32 matrix and scores a query against
all of them with one matrix-vector product. It is exact, needs no build, and on small partitions
(a few thousand vectors) it is faster than a graph index; it is also the oracle the approximate
indexes are measured against.

    >>> import numpy as np
    >>> index = ExactIndex(2)
    >>> index.add(np.array([7, 9]), np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    >>> index.search(np.array([0.6, 0.8], dtype=np.float32), k=1)
    [(9, 0.800000011920929)]
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from prismcache.errors import IndexError_
from prismcache.index.rwlock import RWLock

__all__ = ["ExactIndex", "check_batch", "check_ids", "check_query", "read_meta", "write_meta"]

FORMAT_VERSION = 1
META_FILE = "meta.json"
_MAX_ID = 2**63
# Matrices at least this large get pages of their own (an anonymous mmap) rather than the C
# heap: freed, they go back to the system at once, where malloc would keep them in the heap
# of whichever thread grew them (a dropped partition would not lower the process's RSS).
_MMAP_BYTES = 256 * 1024
_ROW_BYTES = 100  # an id's entry in the id -> row dict (measured ~90)


def _matrix(rows: int, dim: int) -> np.ndarray:
    """An uninitialised ``rows x dim`` float32 matrix, on its own pages when large."""
    size = rows * dim * 4
    if size < _MMAP_BYTES:
        return np.empty((rows, dim), dtype=np.float32)
    return np.frombuffer(mmap.mmap(-1, size), dtype=np.float32).reshape(rows, dim)


def check_ids(ids: np.ndarray) -> np.ndarray:
    """Return ``ids`` as a 1-D int64 array; raise :class:`IndexError_` if they are not integers.

    Ids outside ``1 .. 2**63 - 1`` are returned as they are; :func:`check_batch` refuses them.
    """
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise IndexError_(f"ids must be a 1-D integer array, got shape {arr.shape} {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) >= _MAX_ID:
        raise IndexError_("ids must be below 2**63")
    return arr.astype(np.int64, copy=False)


def check_batch(ids: np.ndarray, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate an ``add`` batch and return it as (int64 ids, float32 C-contiguous vectors).

    Raises :class:`IndexError_` for a wrong dimension, mismatched lengths or ids that are not
    positive. When an id appears more than once, its last vector wins (as if added in order).
    """
    id_arr = check_ids(ids)
    vec = np.ascontiguousarray(vectors, dtype=np.float32)
    if vec.ndim != 2 or vec.shape[1] != dim:
        raise IndexError_(f"vectors must have shape (n, {dim}), got {vec.shape}")
    if vec.shape[0] != id_arr.shape[0]:
        raise IndexError_(f"{id_arr.shape[0]} ids for {vec.shape[0]} vectors")
    if id_arr.size and int(id_arr.min()) <= 0:
        raise IndexError_("ids must be positive integers below 2**63")
    if np.unique(id_arr).size != id_arr.size:
        # Keep each id's last occurrence: np.unique on the reversed ids finds exactly those.
        _, first_from_end = np.unique(id_arr[::-1], return_index=True)
        keep = np.sort(id_arr.size - 1 - first_from_end)
        id_arr, vec = id_arr[keep], vec[keep]
    return id_arr, vec


def check_query(vector: np.ndarray, dim: int, k: int) -> np.ndarray:
    """Validate a ``search`` call and return the query as a float32 ``(dim,)`` array."""
    vec = np.ascontiguousarray(vector, dtype=np.float32)
    if vec.shape != (dim,):
        raise IndexError_(f"query must have shape ({dim},), got {vec.shape}")
    if k < 1:
        raise IndexError_(f"k must be at least 1, got {k}")
    return vec


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Write the snapshot's JSON sidecar (with the format version) atomically, last of its files."""
    tmp = path / (META_FILE + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=2, sort_keys=True))
    os.replace(tmp, path / META_FILE)


def read_meta(path: Path, kind: str | None = None) -> dict[str, Any]:
    """Read a snapshot's sidecar; raise :class:`IndexError_` if it is missing, of another
    format version, or (when ``kind`` is given) of another kind of index."""
    try:
        meta = json.loads((Path(path) / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise IndexError_(f"no readable index snapshot at {path}: {exc}") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise IndexError_(f"snapshot at {path} has format {meta.get('format')!r}, "
                          f"this version reads {FORMAT_VERSION}")
    if kind is not None and meta.get("kind") != kind:
        raise IndexError_(f"snapshot at {path} is a {meta.get('kind')!r} index, not {kind!r}")
    return meta


def _save_npy(target: Path, array: np.ndarray) -> None:
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, target)


class ExactIndex:
    """Brute-force inner-product search over unit vectors; implements ``VectorIndex``.

    Memory: ``4 * dim`` bytes per vector in the matrix (capacity doubles as it fills), plus an
    id-to-row dict entry. Removal moves the last row into the hole, so rows stay dense.
    """

    kind = "exact"

    def __init__(self, dim: int, *, capacity: int = 64) -> None:
        """An empty index of ``dim``-dimensional vectors with room for ``capacity`` before
        its first growth."""
        if dim < 1 or capacity < 1:
            raise ValueError(f"dim and capacity must be positive, got {dim}, {capacity}")
        self.dim = dim
        self._lock = RWLock()
        self._vectors = _matrix(capacity, dim)
        self._ids = np.empty(capacity, dtype=np.int64)
        self._rows: dict[int, int] = {}
        self._n = 0
        self._touched = 0  # rows ever written in the current matrix (its resident part)

    def __repr__(self) -> str:
        return f"ExactIndex(dim={self.dim}, len={self._n})"

    def __len__(self) -> int:
        """Number of live vectors."""
        return self._n

    @property
    def nbytes(self) -> int:
        """Resident bytes: the matrix (at its capacity on the heap; the rows ever written
        when on pages of its own, which the system provides as they are first touched), the
        ids and the id -> row map."""
        vectors = self._vectors.nbytes
        if vectors >= _MMAP_BYTES:
            vectors = self._touched * self.dim * 4
        return vectors + self._ids.nbytes + len(self._rows) * _ROW_BYTES

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace vectors under ``ids``; see ``VectorIndex.add``."""
        id_arr, vec = check_batch(ids, vectors, self.dim)
        with self._lock.write():
            rows = np.empty(id_arr.size, dtype=np.int64)
            fresh = [i for i, ident in enumerate(id_arr.tolist()) if ident not in self._rows]
            self._reserve(self._n + len(fresh))
            for i, ident in enumerate(id_arr.tolist()):
                row = self._rows.get(ident)
                if row is None:
                    row = self._n
                    self._rows[ident] = row
                    self._ids[row] = ident
                    self._n += 1
                rows[i] = row
            self._vectors[rows] = vec
            self._touched = max(self._touched, self._n)

    def remove(self, ids: np.ndarray) -> None:
        """Remove ``ids``; unknown ids are ignored."""
        id_arr = check_ids(ids)
        with self._lock.write():
            for ident in id_arr.tolist():
                row = self._rows.pop(ident, None)
                if row is None:
                    continue
                last = self._n - 1
                if row != last:
                    moved = int(self._ids[last])
                    self._vectors[row] = self._vectors[last]
                    self._ids[row] = moved
                    self._rows[moved] = row
                self._n = last

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Return the exact top ``k`` ``(id, similarity)`` pairs, most similar first."""
        query = check_query(vector, self.dim, k)
        with self._lock.read():
            n = self._n
            if n == 0:
                return []
            sims = self._vectors[:n] @ query
            k = min(k, n)
            top = np.argpartition(-sims, k - 1)[:k] if k < n else np.arange(n)
            top = top[np.argsort(-sims[top], kind="stable")]
            return [(int(i), float(s)) for i, s in zip(self._ids[top], sims[top], strict=True)]

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """A copy of the live ``(ids, vectors)``, in no particular order."""
        with self._lock.read():
            return self._ids[: self._n].copy(), self._vectors[: self._n].copy()

    def save(self, path: Path) -> None:
        """Write ``ids.npy``, ``vectors.npy`` and ``meta.json`` into the directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        ids, vectors = self.items()
        _save_npy(path / "ids.npy", ids)
        _save_npy(path / "vectors.npy", vectors)
        write_meta(path, {"kind": self.kind, "dim": self.dim, "count": int(ids.size)})

    @classmethod
    def load(cls, path: Path) -> ExactIndex:
        """Read a snapshot written by :meth:`save`; raise :class:`IndexError_` if it is not one."""
        path = Path(path)
        meta = read_meta(path, cls.kind)
        try:
            ids = np.load(path / "ids.npy")
            vectors = np.load(path / "vectors.npy")
        except (OSError, ValueError) as exc:
            raise IndexError_(f"damaged exact-index snapshot at {path}: {exc}") from exc
        if ids.shape != (meta["count"],) or vectors.shape != (meta["count"], meta["dim"]):
            raise IndexError_(f"damaged exact-index snapshot at {path}: shapes disagree with meta")
        index = cls(meta["dim"], capacity=max(64, ids.size))
        index.add(ids, vectors)
        return index

    def _reserve(self, needed: int) -> None:
        capacity = self._vectors.shape[0]
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        vectors = _matrix(capacity, self.dim)
        ids = np.empty(capacity, dtype=np.int64)
        vectors[: self._n] = self._vectors[: self._n]
        ids[: self._n] = self._ids[: self._n]
        self._vectors, self._ids, self._touched = vectors, ids, self._n
