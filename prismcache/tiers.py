"""The in-memory tiers in front of the document store.

* the **exact tier**: 64-bit prefix of an entry's exact key -> entry id (a prefix collision is
  harmless: the stored entry's full exact key is compared before it is served);
* the **semantic tier**: one vector index per (partition, category), so a search can only ever
  return entries of the request's own tenant, model, conversation and category.

Nothing here is authoritative: the document store is. A vector whose document has gone is
dropped when a lookup finds it missing, and :meth:`Tiers.load` may be followed by adding what
the store gained since the snapshot was taken.

**Within a memory budget** (``index.max_bytes``; :class:`Tiers` made with ``max_bytes`` and a
``loader``, the store's ``scan_partition``) the tiers hold only the partitions in use: a
partition is loaded from the store, on a background thread, the first time a lookup names it
(that lookup, and any other until the load ends, misses: it never waits), kept while it is
used, and dropped, least recently used first, when loading or growing another needs the room.
Adds (the store path, the change feed) apply only to partitions held or being loaded; the
others are read from the store when next needed. A partition's size is what its indexes
hold allocated (their ``nbytes``: an exact index's matrix at its capacity, an HNSW graph's
slots and its fixed 2.6 MB) plus an estimate per exact-tier item; :func:`entry_bytes` is the
per-entry figure for planning. :meth:`Tiers.budget_stats` counts loads, evictions, misses
while loading and partitions too large for the budget.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from prismcache.entry import Entry, EntryRef
from prismcache.errors import EmbedderMismatch
from prismcache.index import IndexSpec, VectorIndex, load_index, make_index
from prismcache.index.memory import fix_mmap_threshold
from prismcache.prefilter import Prefilter

__all__ = ["BudgetStats", "Tiers", "entry_bytes"]

log = logging.getLogger("prismcache")

_SNAPSHOT_VERSION = 1
_CHUNK = 8192  # entries per batch when adding many (rebuilds)
_LOAD_CHUNK = 1024  # entries per lock hold while loading one partition (lookups never wait)
_LOADERS = 2  # partitions loaded at once
_EXACT_BYTES = 120  # an exact-tier item: two Python ints and a dict slot (measured ~110)
_VECTOR_OVERHEAD = 96  # an index's per-vector bookkeeping besides vector and graph links
_REFUSED_FOR = 60.0  # seconds before a partition too large for the budget is tried again


def entry_bytes(dim: int, spec: IndexSpec) -> tuple[int, int]:
    """Estimated process memory of one entry: ``(exact tier, vector index)`` bytes.

    The vector's float32s, an HNSW graph's level-0 links (``2 * m`` int32; the tiered index
    builds one past ``promote_at``, which is counted from the start to stay on the safe side)
    and a fixed overhead. ``bench/cluster.py`` measures the real figure (RSS per entry).

    >>> entry_bytes(384, IndexSpec())
    (120, 1760)
    """
    graph = 0 if spec.kind == "exact" else 2 * spec.m * 4
    return _EXACT_BYTES, dim * 4 + graph + _VECTOR_OVERHEAD


@dataclass(slots=True)
class BudgetStats:
    """Counters of a memory-bounded :class:`Tiers` (all since it was made)."""

    max_bytes: int
    bytes: int = 0  #: estimated bytes held now
    partitions: int = 0  #: partitions held now
    loading: int = 0  #: partitions being loaded now
    loads: int = 0  #: partitions loaded
    loaded_entries: int = 0  #: entries read from the store by those loads
    load_seconds: float = 0.0  #: time spent loading
    evictions: int = 0  #: partitions dropped to make room
    load_misses: int = 0  #: lookups that missed because their partition was not held yet
    refused: int = 0  #: loads abandoned because the partition alone exceeds the budget
    load_errors: int = 0  #: loads that failed (the store failed): the partition misses

    def metric_lines(self) -> list[str]:
        """Prometheus text lines (gauges and counters ``prismcache_index_*``).

        >>> BudgetStats(max_bytes=10, loads=2).metric_lines()[2]
        'prismcache_index_max_bytes 10'
        """
        lines = []
        for name, kind, help in _METRICS:
            metric = f"prismcache_index_{name}"
            lines += [f"# HELP {metric} {help}", f"# TYPE {metric} {kind}",
                      f"{metric} {getattr(self, name.removesuffix('_total'))}"]
        return lines


_METRICS = (
    ("max_bytes", "gauge", "The per-process index memory budget (index.max_bytes)."),
    ("bytes", "gauge", "Estimated bytes of the partitions held."),
    ("partitions", "gauge", "Partitions whose index is held."),
    ("loading", "gauge", "Partitions being loaded from the store."),
    ("loads_total", "counter", "Partitions loaded from the store."),
    ("loaded_entries_total", "counter", "Entries read from the store by partition loads."),
    ("load_seconds_total", "counter", "Time spent loading partitions."),
    ("evictions_total", "counter", "Partitions dropped to stay within the budget."),
    ("load_misses_total", "counter", "Lookups that missed because their partition was loading."),
    ("refused_total", "counter", "Partitions too large for the budget on their own."),
    ("load_errors_total", "counter", "Partition loads that failed."),
)


def _exact_int(exact_key: str) -> int:
    return int(exact_key[:16], 16)


class Tiers:
    """Exact map and per-(partition, category) indexes for vectors of one embedder."""

    def __init__(self, *, dim: int, embedder_id: str, spec: IndexSpec,
                 max_bytes: int | None = None,
                 loader: Callable[[str], Iterable[Entry]] | None = None,
                 prefilter: Prefilter | None = None) -> None:
        """Empty tiers. With ``max_bytes`` (and ``loader``, which yields one partition's
        entries from the store) they hold only the partitions in use, within that many bytes
        (estimated); without, everything added. A budget fixes glibc's mmap threshold
        (:func:`~prismcache.index.memory.fix_mmap_threshold`, process-wide). A
        ``prefilter`` is kept in step with the semantic tier: every vector added, dropped or
        evicted here is added to, dropped from or evicted from it too."""
        if (max_bytes is None) != (loader is None):
            raise ValueError("max_bytes and loader go together")
        self.dim = dim
        self.embedder_id = embedder_id
        self._spec = spec
        self._exact: dict[int, int] = {}
        self._indexes: dict[tuple[str, str], VectorIndex] = {}
        self._lock = threading.Lock()
        self._loader = loader
        self._stats = None if max_bytes is None else BudgetStats(max_bytes=int(max_bytes))
        if max_bytes is not None:  # what a dropped partition frees must leave the process
            fix_mmap_threshold()
        self._exact_bytes, self._vector_bytes = entry_bytes(dim, spec)
        # Budget state, under _lru_lock (cheap: lookups take it). Transitions and sizes also
        # hold _lock, taken first.
        self._lru_lock = threading.Lock()
        self._held: OrderedDict[str, int] = OrderedDict()  # partition -> bytes, LRU first
        self._loading: set[str] = set()
        self._refused: dict[str, float] = {}
        self._exact_of: dict[str, set[int]] = {}  # partition -> its exact-tier keys
        self._categories_of: dict[str, set[str]] = {}
        self._slots = threading.BoundedSemaphore(_LOADERS)
        self.prefilter = prefilter

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

    def exact(self, exact_key: str, partition: str | None = None) -> int | None:
        """The id of the entry stored under ``exact_key``, if any. Within a budget, naming
        the ``partition`` marks it used (and starts loading it when it is not held)."""
        if partition is not None and self._stats is not None and not self._want(
                partition, count=False):
            return None
        return self._exact.get(_exact_int(exact_key))

    def search(
        self, partition: str, category: str, vector: np.ndarray, k: int
    ) -> list[tuple[int, float]]:
        """Up to ``k`` ``(entry id, similarity)`` of the partition's category, best first.
        Within a budget, ``[]`` while the partition is not held yet (its load is started)."""
        if self._stats is not None and not self._want(partition):
            return []
        index = self._indexes.get((partition, category))
        return index.search(vector, k) if index is not None else []

    def budget_stats(self) -> BudgetStats | None:
        """A copy of the budget's counters, or ``None`` when the tiers hold everything."""
        if self._stats is None:
            return None
        with self._lru_lock:
            stats = replace(self._stats)
            stats.bytes = sum(self._held.values())
            stats.partitions, stats.loading = len(self._held), len(self._loading)
        return stats

    def add(self, entries: Iterable[Entry]) -> None:
        """Add entries to the exact tier and, when they carry a vector, to their index.

        Consumes ``entries`` in chunks, so a rebuild streams from the store. Raises
        :class:`EmbedderMismatch` for a vector made by another embedder. Within a budget,
        entries of partitions neither held nor being loaded are ignored (read when needed).
        """
        chunk: list[Entry] = []
        for entry in entries:
            chunk.append(entry)
            if len(chunk) == _CHUNK:
                self._add_chunk(chunk)
                chunk = []
        self._add_chunk(chunk)

    def _add_chunk(self, entries: list[Entry]) -> None:
        if self._stats is None:
            self._add_entries(entries)
            return
        with self._lock:
            with self._lru_lock:
                kept = [e for e in entries if e.partition in self._held
                        or e.partition in self._loading]
            self._add_entries(kept, budgeted=True)
            self._make_room()

    def _add_entries(self, entries: list[Entry], *, budgeted: bool = False) -> None:
        """Add ``entries`` (taking ``_lock``); within a budget (``budgeted``) the caller holds
        it already and the partitions' sizes are recounted."""
        groups: dict[tuple[str, str], tuple[list[int], list[np.ndarray]]] = {}
        texts: dict[str, tuple[list[int], list[str]]] = {}  # the prefilter's, by partition
        for entry in entries:
            if entry.vector is not None and entry.embedder != self.embedder_id:
                raise EmbedderMismatch(
                    f"entry {entry.id} was embedded by {entry.embedder!r}, but this cache embeds "
                    f"with {self.embedder_id!r}; open it with the same embedder, or use another "
                    "store (or invalidate the old entries)"
                )
            self._exact[_exact_int(entry.exact_key)] = entry.id
            if budgeted:
                self._exact_of.setdefault(entry.partition, set()).add(
                    _exact_int(entry.exact_key))
            if entry.vector is None:
                continue
            ids, vectors = groups.setdefault((entry.partition, entry.category), ([], []))
            ids.append(entry.id)
            vectors.append(entry.vector)
            if self.prefilter is not None:
                known, queries = texts.setdefault(entry.partition, ([], []))
                known.append(entry.id)
                queries.append(entry.query)
        if budgeted:
            for key, (ids, vectors) in groups.items():
                self._index(key).add(np.asarray(ids, dtype=np.int64), np.stack(vectors))
                self._categories_of.setdefault(key[0], set()).add(key[1])
            self._add_static(texts, background=False)  # the budget counts what it holds
            self._resize({e.partition for e in entries})
            return
        # Adding under the lock makes "an index that became empty is dropped" (drop_vector)
        # atomic with adds: otherwise a vector added to an index just dropped would be lost.
        # Searches never take this lock.
        with self._lock:
            for key, (ids, vectors) in groups.items():
                self._index(key).add(np.asarray(ids, dtype=np.int64), np.stack(vectors))
            self._add_static(texts, background=len(entries) > 1)

    def _add_static(self, texts: dict[str, tuple[list[int], list[str]]], *,
                    background: bool) -> None:
        """The prefilter's share of an add (many entries at once, e.g. a rebuild from the
        store, in the ``background``). Call with ``_lock`` held."""
        if self.prefilter is not None:
            for partition, (ids, queries) in texts.items():
                self.prefilter.add(partition, ids, queries, background=background)

    def drop(self, refs: Iterable[EntryRef]) -> None:
        """Forget entries the store no longer holds."""
        touched = set()
        for ref in refs:
            exact = _exact_int(ref.exact_key)
            if self._exact.get(exact) == ref.id:
                del self._exact[exact]
                if self._stats is not None:
                    self._exact_of.get(ref.partition, set()).discard(exact)
                    touched.add(ref.partition)
            self.drop_vector(ref.partition, ref.category, ref.id)
        if touched:
            with self._lock:
                self._resize(touched)

    def drop_vector(self, partition: str, category: str, entry_id: int) -> None:
        """Remove one vector (for a stale id met during a search)."""
        key = (partition, category)
        with self._lock:
            if self.prefilter is not None:
                self.prefilter.remove(partition, entry_id)
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
            if self.prefilter is not None:
                self.prefilter.clear()
            with self._lru_lock:
                self._held.clear()
                self._exact_of.clear()
                self._categories_of.clear()

    # -- the memory budget ---------------------------------------------------------------------

    def _want(self, partition: str, *, count: bool = True) -> bool:
        """Whether ``partition`` is held (then marked most recently used); when not, start
        loading it unless that is under way or was refused lately, and count the miss."""
        assert self._stats is not None
        with self._lru_lock:
            if partition in self._held:
                self._held.move_to_end(partition)
                return True
            self._stats.load_misses += count
            if partition in self._loading or self._refused.get(partition, 0.0) > time.monotonic():
                return False
            self._loading.add(partition)
        threading.Thread(target=self._load, args=(partition,), daemon=True,
                         name="prismcache-index-load").start()
        return False

    def _load(self, partition: str) -> None:
        """Read ``partition`` from the store into the tiers (on a loader thread)."""
        assert self._stats is not None and self._loader is not None
        started, count, ok = time.monotonic(), 0, False
        with self._slots:
            try:
                chunk: list[Entry] = []
                for entry in self._loader(partition):
                    chunk.append(entry)
                    count += 1
                    if len(chunk) == _LOAD_CHUNK:
                        ok = self._load_chunk(partition, chunk)
                        if not ok:
                            return
                        chunk = []
                ok = self._load_chunk(partition, chunk)
            except Exception as exc:  # noqa: BLE001 - a failed load is a miss, counted and logged
                with self._lru_lock:
                    self._stats.load_errors += 1
                log.warning("prismcache: loading the index of partition %s failed (%s: %s); "
                            "its lookups miss until it loads", partition[:12],
                            type(exc).__name__, exc)
            finally:
                with self._lock:
                    with self._lru_lock:
                        self._loading.discard(partition)
                        if ok:
                            self._held[partition] = self._held.get(partition, 0)
                            self._stats.loads += 1
                            self._stats.loaded_entries += count
                            self._stats.load_seconds += time.monotonic() - started
                    if ok:
                        self._resize({partition})
                        self._make_room()
                    else:
                        self._evict(partition)

    def _load_chunk(self, partition: str, chunk: list[Entry]) -> bool:
        """Add one chunk of a loading partition; ``False`` (and the partition refused for a
        while) when it alone no longer fits the budget."""
        assert self._stats is not None
        with self._lock:
            self._add_entries(chunk, budgeted=True)
            size = self._size(partition)
            if size <= self._stats.max_bytes:
                self._make_room(loading=size)
                return True
            with self._lru_lock:
                self._stats.refused += 1
                self._refused[partition] = time.monotonic() + _REFUSED_FOR
        log.warning("prismcache: partition %s needs more than index.max_bytes (%d bytes) "
                    "alone; it is not held (lookups in it miss)", partition[:12],
                    self._stats.max_bytes)
        return False

    def _size(self, partition: str) -> int:
        """Bytes of ``partition`` now: its indexes' allocation (the pre-filter's static index
        too) and its exact-tier items. Call with ``_lock`` held."""
        indexed = sum(self._index_bytes(self._indexes[(partition, c)])
                      for c in self._categories_of.get(partition, ())
                      if (partition, c) in self._indexes)
        static = self.prefilter.index(partition) if self.prefilter is not None else None
        if static is not None:
            indexed += self._index_bytes(static)
        return len(self._exact_of.get(partition, ())) * self._exact_bytes + indexed

    def _index_bytes(self, index: VectorIndex) -> int:
        """``index.nbytes`` (the built-in indexes report their allocation), else the
        per-vector estimate."""
        nbytes = getattr(index, "nbytes", None)
        return int(nbytes) if nbytes is not None else len(index) * self._vector_bytes

    def _resize(self, partitions: Iterable[str]) -> None:
        """Recompute the sizes of held ``partitions``. Call with ``_lock`` held."""
        for partition in partitions:
            size = self._size(partition)
            with self._lru_lock:
                if partition in self._held:
                    self._held[partition] = size

    def _make_room(self, *, loading: int = 0) -> None:
        """Drop least recently used partitions until the held ones, plus ``loading`` bytes
        of a load under way, fit the budget. Call with ``_lock`` held."""
        assert self._stats is not None
        while True:
            with self._lru_lock:
                if sum(self._held.values()) + loading <= self._stats.max_bytes or len(
                        self._held) <= (0 if loading else 1):
                    return
                victim = next(iter(self._held))
                self._stats.evictions += 1
            self._evict(victim)

    def _evict(self, partition: str) -> None:
        """Forget everything of ``partition``. Call with ``_lock`` held."""
        for exact in self._exact_of.pop(partition, ()):
            self._exact.pop(exact, None)
        for category in self._categories_of.pop(partition, ()):
            self._indexes.pop((partition, category), None)
        if self.prefilter is not None:
            self.prefilter.forget(partition)
        with self._lru_lock:
            self._held.pop(partition, None)

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
    def load(cls, path: Path, *, embedder_id: str, spec: IndexSpec,
             prefilter: Prefilter | None = None) -> tuple[Tiers, float]:
        """Reopen a snapshot; return the tiers and the time it was taken. A snapshot holds no
        query texts: its partitions are incomplete to ``prefilter`` (never far).

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
        tiers = cls(dim=int(manifest["dim"]), embedder_id=embedder_id, spec=spec,
                    prefilter=prefilter)
        keys = np.load(path / "exact_keys.npy")
        ids = np.load(path / "exact_ids.npy")
        tiers._exact = dict(zip(keys.tolist(), ids.tolist(), strict=True))
        for item in manifest["indexes"]:
            tiers._indexes[(item["partition"], item["category"])] = load_index(path / item["dir"])
        if prefilter is not None:
            prefilter.incomplete([item["partition"] for item in manifest["indexes"]])
        return tiers, float(manifest["taken_at"])
