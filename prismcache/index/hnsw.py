"""Approximate search with an hnswlib HNSW graph, guarded by a readers-writer lock.

The entries' ids are the hnswlib labels themselves, so the index keeps no per-entry Python
object: at 384 dimensions an entry costs its 1,536-byte vector plus about 200 bytes of graph
links, lookup table and lock inside hnswlib.

How hnswlib 0.8 treats ids, and what this class does about it (measured, see
``tests/test_index.py``):

* Adding an id that is live updates its vector in place (``updatePoint``), repairing its links.
* Removing uses ``mark_deleted``: the vector stays in the graph for routing but is never
  returned. Marking an unknown or already-deleted id raises ``RuntimeError``; both are ignored.
* The index is built with ``allow_replace_deleted=True`` and *new* ids are added with
  ``replace_deleted=True``, so the slots of removed entries are reused instead of growing the
  index forever under eviction churn.
* That mode has two traps. Plain ``add_items`` of a *deleted* id raises; and
  ``replace_deleted=True`` for an id that already exists puts it into a vacant slot *while its
  old slot stays live under the same label*, so the old vector keeps being returned. Hence each
  batch is split: ids the index knows (live, or deleted and first un-deleted) are updated in
  place without ``replace_deleted``; only ids it has never seen go through ``replace_deleted``.
* hnswlib does not count live elements and does not save ``ef``: both live in the JSON sidecar.
"""

from __future__ import annotations

import os
from pathlib import Path

import hnswlib
import numpy as np

from prismcache.errors import IndexError_
from prismcache.index.exact import check_batch, check_ids, check_query, read_meta, write_meta
from prismcache.index.rwlock import RWLock

__all__ = ["HnswIndex"]

_INDEX_FILE = "hnsw.bin"
# Resident bytes of an hnswlib 0.8 index (measured at 384-d, m=16; bench/capacity.py): a fixed
# 2.6 MB per graph (65,536 label-operation mutexes, whatever its size), ~176 bytes per slot
# allocated (a mutex, a level, a visited-list mark; unused slots' data pages are never touched)
# and, per slot used, its vector, level-0 links and label, plus upper-level links on average.
_GRAPH_BYTES = 65536 * 40
_SLOT_BYTES = 176
_ELEMENT_BYTES = 96  # per slot used besides vector and level-0 links (1,760 bytes in all)
_GROWTH = 1.5  # capacity grows by half when full: at most a third of the slots unused


class HnswIndex:
    """An HNSW graph over unit vectors (inner-product space); implements ``VectorIndex``.

    ``m`` is the graph degree, ``ef_construction`` the build-time beam and ``ef_search`` the
    query-time beam (raise it for recall, lower it for speed; queries use ``max(ef_search, k)``).
    ``capacity`` is the first allocation; it grows by half under the write lock when full.
    """

    kind = "hnsw"

    def __init__(
        self,
        dim: int,
        *,
        m: int = 16,
        ef_construction: int = 128,
        ef_search: int = 64,
        capacity: int = 1024,
    ) -> None:
        """An empty index; raises ``ValueError`` for non-positive parameters."""
        if min(dim, m, ef_construction, ef_search, capacity) < 1:
            raise ValueError("dim, m, ef_construction, ef_search and capacity must be positive")
        graph = hnswlib.Index(space="ip", dim=dim)
        graph.init_index(
            max_elements=capacity, M=m, ef_construction=ef_construction,
            allow_replace_deleted=True,
        )
        self._attach(graph, dim=dim, m=m, ef_construction=ef_construction, ef_search=ef_search)

    def _attach(
        self, graph: hnswlib.Index, *, dim: int, m: int, ef_construction: int, ef_search: int,
        live: int = 0,
    ) -> None:
        self.dim = dim
        self.m = m
        self.ef_construction = ef_construction
        self._ef_search = ef_search
        self._lock = RWLock()
        self._live = live
        self._index = graph
        self._index.set_ef(ef_search)  # hnswlib neither saves nor defaults it to ours

    def __repr__(self) -> str:
        return (f"HnswIndex(dim={self.dim}, m={self.m}, ef_construction={self.ef_construction}, "
                f"ef_search={self._ef_search}, len={self._live})")

    def __len__(self) -> int:
        """Number of live vectors."""
        return self._live

    @property
    def ef_search(self) -> int:
        """The query-time beam width."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, ef: int) -> None:
        if ef < 1:
            raise ValueError(f"ef_search must be positive, got {ef}")
        with self._lock.write():
            self._index.set_ef(ef)
            self._ef_search = ef

    @property
    def nbytes(self) -> int:
        """Resident bytes of the graph (estimated from its slots; see ``_GRAPH_BYTES``)."""
        used = self.dim * 4 + 2 * self.m * 4 + _ELEMENT_BYTES
        return (_GRAPH_BYTES + self._index.get_max_elements() * _SLOT_BYTES
                + self._index.element_count * used)

    @property
    def capacity(self) -> int:
        """Slots allocated (live + removed-but-not-yet-reused + free)."""
        return self._index.get_max_elements()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace vectors under ``ids``; see ``VectorIndex.add``."""
        id_arr, vec = check_batch(ids, vectors, self.dim)
        if id_arr.size == 0:
            return
        with self._lock.write():
            known = np.zeros(id_arr.size, dtype=bool)
            if self._index.element_count:
                for i, label in enumerate(id_arr.tolist()):
                    known[i] = self._revive(label)
            fresh_ids, fresh_vec = id_arr, vec  # no copy in the common all-new case
            if known.any():
                self._index.add_items(vec[known], id_arr[known])
                fresh_ids, fresh_vec = id_arr[~known], vec[~known]
            if fresh_ids.size:
                # Fresh ids fill removed slots first, so only the rest need new room.
                self._reserve(max(self._index.element_count, self._live + fresh_ids.size))
                self._index.add_items(fresh_vec, fresh_ids, replace_deleted=True)
                self._live += fresh_ids.size

    def remove(self, ids: np.ndarray) -> None:
        """Remove ``ids``; unknown and already-removed ids are ignored."""
        id_arr = check_ids(ids)
        with self._lock.write():
            for label in id_arr.tolist():
                if label <= 0:
                    continue
                try:
                    self._index.mark_deleted(label)
                except RuntimeError:
                    # "Label not found" / "already deleted": the contract says ignore.
                    continue
                self._live -= 1

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Return up to ``k`` approximate nearest ``(id, similarity)`` pairs, best first."""
        query = check_query(vector, self.dim, k)
        with self._lock.read():
            k = min(k, self._live)
            while k >= 1:
                try:
                    labels, distances = self._index.knn_query(query, k=k, num_threads=1)
                except RuntimeError:
                    # After many removals the graph may not reach k live vectors; ask for fewer.
                    if k == 1:
                        raise IndexError_("hnswlib found no live vector to return") from None
                    k //= 2
                    continue
                # hnswlib's 'ip' distance is 1 - inner product.
                return [(int(label), 1.0 - float(dist))
                        for label, dist in zip(labels[0], distances[0], strict=True)]
            return []

    def save(self, path: Path) -> None:
        """Write ``hnsw.bin`` (hnswlib's format) and ``meta.json`` into the directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (_INDEX_FILE + ".tmp")
        with self._lock.read():
            self._index.save_index(str(tmp))
            meta = {
                "kind": self.kind, "dim": self.dim, "m": self.m,
                "ef_construction": self.ef_construction, "ef_search": self._ef_search,
                "count": self._live,
            }
        os.replace(tmp, path / _INDEX_FILE)
        write_meta(path, meta)

    @classmethod
    def load(cls, path: Path) -> HnswIndex:
        """Read a snapshot written by :meth:`save`, with its ``ef_search`` restored."""
        path = Path(path)
        meta = read_meta(path, cls.kind)
        graph = hnswlib.Index(space="ip", dim=meta["dim"])
        try:
            graph.load_index(str(path / _INDEX_FILE), allow_replace_deleted=True)
        except RuntimeError as exc:
            raise IndexError_(f"damaged hnsw snapshot at {path}: {exc}") from exc
        index = cls.__new__(cls)
        index._attach(graph, dim=meta["dim"], m=meta["m"], ef_construction=meta["ef_construction"],
                      ef_search=meta["ef_search"], live=int(meta["count"]))
        return index

    def _revive(self, label: int) -> bool:
        """True if the index knows ``label``; a deleted one is un-deleted (to be overwritten)."""
        try:
            self._index.unmark_deleted(label)
        except RuntimeError:
            pass  # unknown, or live: tell them apart below
        else:
            self._live += 1
            return True
        try:
            self._index.get_items([label])
        except RuntimeError:
            return False
        return True

    def _reserve(self, needed: int) -> None:
        capacity = self._index.get_max_elements()
        if needed <= capacity:
            return
        while capacity < needed:
            capacity = max(capacity + 1, int(capacity * _GROWTH))
        self._index.resize_index(capacity)
