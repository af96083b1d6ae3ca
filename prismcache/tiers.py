"""The in-memory tiers in front of the document store.

* the **exact tier**: 64-bit prefix of an entry's exact key -> entry id (a prefix collision is
  harmless: the stored entry's full exact key is compared before it is served);
* the **semantic tier**: one vector index per (partition, category), so a search can only ever
  return entries of the request's own tenant, model, conversation and category.

Nothing here is authoritative: the document store is. A vector whose document has gone is
dropped when a lookup finds it missing, and :meth:`Tiers.load` may be followed by adding what
the store gained since the snapshot was taken.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from prismcache.entry import Entry, EntryRef
from prismcache.errors import EmbedderMismatch
from prismcache.index import IndexSpec, VectorIndex, load_index, make_index

__all__ = ["Tiers"]

_SNAPSHOT_VERSION = 1
_CHUNK = 8192  # entries per batch when adding many (rebuilds)


def _exact_int(exact_key: str) -> int:
    return int(exact_key[:16], 16)


class Tiers:
    """Exact map and per-(partition, category) indexes for vectors of one embedder."""

    def __init__(self, *, dim: int, embedder_id: str, spec: IndexSpec) -> None:
        self.dim = dim
        self.embedder_id = embedder_id
        self._spec = spec
        self._exact: dict[int, int] = {}
        self._indexes: dict[tuple[str, str], VectorIndex] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Entries known to the exact tier."""
        return len(self._exact)

    @property
    def vectors(self) -> int:
        """Vectors held across all indexes."""
        with self._lock:
            indexes = list(self._indexes.values())
        return sum(len(index) for index in indexes)

    @property
    def partitions(self) -> int:
        """Number of (partition, category) indexes."""
        return len(self._indexes)

    def exact(self, exact_key: str) -> int | None:
        """The id of the entry stored under ``exact_key``, if any."""
        return self._exact.get(_exact_int(exact_key))

    def search(
        self, partition: str, category: str, vector: np.ndarray, k: int
    ) -> list[tuple[int, float]]:
        """Up to ``k`` ``(entry id, similarity)`` of the partition's category, best first."""
        index = self._indexes.get((partition, category))
        return index.search(vector, k) if index is not None else []

    def add(self, entries: Iterable[Entry]) -> None:
        """Add entries to the exact tier and, when they carry a vector, to their index.

        Consumes ``entries`` in chunks, so a rebuild streams from the store. Raises
        :class:`EmbedderMismatch` for a vector made by another embedder.
        """
        chunk: list[Entry] = []
        for entry in entries:
            chunk.append(entry)
            if len(chunk) == _CHUNK:
                self._add_chunk(chunk)
                chunk = []
        self._add_chunk(chunk)

    def _add_chunk(self, entries: list[Entry]) -> None:
        groups: dict[tuple[str, str], tuple[list[int], list[np.ndarray]]] = {}
        for entry in entries:
            if entry.vector is not None and entry.embedder != self.embedder_id:
                raise EmbedderMismatch(
                    f"entry {entry.id} was embedded by {entry.embedder!r}, but this cache embeds "
                    f"with {self.embedder_id!r}; open it with the same embedder, or use another "
                    "store (or invalidate the old entries)"
                )
            self._exact[_exact_int(entry.exact_key)] = entry.id
            if entry.vector is None:
                continue
            ids, vectors = groups.setdefault((entry.partition, entry.category), ([], []))
            ids.append(entry.id)
            vectors.append(entry.vector)
        # Adding under the lock makes "an index that became empty is dropped" (drop_vector)
        # atomic with adds: otherwise a vector added to an index just dropped would be lost.
        # Searches never take this lock.
        with self._lock:
            for key, (ids, vectors) in groups.items():
                self._index(key).add(np.asarray(ids, dtype=np.int64), np.stack(vectors))

    def drop(self, refs: Iterable[EntryRef]) -> None:
        """Forget entries the store no longer holds."""
        for ref in refs:
            exact = _exact_int(ref.exact_key)
            if self._exact.get(exact) == ref.id:
                del self._exact[exact]
            self.drop_vector(ref.partition, ref.category, ref.id)

    def drop_vector(self, partition: str, category: str, entry_id: int) -> None:
        """Remove one vector (for a stale id met during a search)."""
        key = (partition, category)
        with self._lock:
            index = self._indexes.get(key)
            if index is None:
                return
            index.remove(np.asarray([entry_id], dtype=np.int64))
            if len(index) == 0:
                del self._indexes[key]

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._exact.clear()
            self._indexes.clear()

    def _index(self, key: tuple[str, str]) -> VectorIndex:
        """The index of ``key``, created if absent. Call with ``self._lock`` held."""
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = make_index(self.dim, self._spec)
        return index

    # -- snapshots ---------------------------------------------------------------------------

    def save(self, path: Path, *, taken_at: float) -> None:
        """Write a snapshot to the directory ``path`` (replaced atomically by rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with self._lock:
            items = list(self._indexes.items())
            exact = list(self._exact.items())
        keys = np.fromiter((k for k, _ in exact), dtype=np.uint64, count=len(exact))
        ids = np.fromiter((v for _, v in exact), dtype=np.int64, count=len(exact))
        np.save(tmp / "exact_keys.npy", keys)
        np.save(tmp / "exact_ids.npy", ids)
        manifest = []
        for n, ((partition, category), index) in enumerate(items):
            index.save(tmp / f"index-{n}")
            manifest.append({"partition": partition, "category": category, "dir": f"index-{n}"})
        (tmp / "manifest.json").write_text(json.dumps({
            "version": _SNAPSHOT_VERSION, "embedder": self.embedder_id, "dim": self.dim,
            "taken_at": taken_at, "indexes": manifest,
        }))
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)

    @classmethod
    def load(cls, path: Path, *, embedder_id: str, spec: IndexSpec) -> tuple[Tiers, float]:
        """Reopen a snapshot; return the tiers and the time it was taken.

        Raises :class:`EmbedderMismatch` when it was made with another embedder, and
        ``OSError``/``ValueError`` when it is unreadable (callers rebuild from the store).
        """
        path = Path(path)
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {manifest.get('version')} is not supported")
        if manifest["embedder"] != embedder_id:
            raise EmbedderMismatch(
                f"snapshot {path} holds vectors of {manifest['embedder']!r}, "
                f"not {embedder_id!r}"
            )
        tiers = cls(dim=int(manifest["dim"]), embedder_id=embedder_id, spec=spec)
        keys = np.load(path / "exact_keys.npy")
        ids = np.load(path / "exact_ids.npy")
        tiers._exact = dict(zip(keys.tolist(), ids.tolist(), strict=True))
        for item in manifest["indexes"]:
            tiers._indexes[(item["partition"], item["category"])] = load_index(path / item["dir"])
        return tiers, float(manifest["taken_at"])
