"""An in-process document store: the test double of every store, and the ``memory://`` backend.

Entries are kept in their encoded form (:mod:`prismcache.stores.codec`), exactly as SQLite and
Redis keep them, so every backend gives the same answers: a caller mutating an ``Entry`` after
``put`` cannot change what is stored, sizes are counted the same way, and a value JSON cannot
represent fails here as it would in production.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from prismcache.entry import Entry, EntryRef, UsageCount
from prismcache.errors import ConfigError, StoreUnavailable
from prismcache.labels import MAX_LABELS_PER_TENANT, Label
from prismcache.quotas import Quotas
from prismcache.stores.codec import Record, decode, encode, ref_of

__all__ = ["MemoryStore"]


class MemoryStore:
    """A :class:`~prismcache.stores.base.DocumentStore` held in dicts behind one lock.

    Costs, with ``n`` entries and ``c`` of them in the category concerned: ``put``, ``get``,
    ``touch``, ``usage`` O(1) (``usage`` O(categories)); ``delete`` O(ids); ``find`` and
    ``expire`` O(n); ``evict_over`` O(c + k log c) to evict ``k``; ``evict_for`` O(categories)
    within the limits, O(categories + c + k log c) to evict ``k``; ``scan`` copies the record
    references, O(n), then decodes lazily.

    >>> store = MemoryStore()
    >>> store.usage()
    {}
    >>> store.close()
    """

    #: reads are served in this process, no network round trip (``SemanticCache.reads_local``)
    local_reads = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[int, Record] = {}
        self._by_category: dict[str, set[int]] = {}
        self._usage: dict[str, tuple[int, int]] = {}
        self._labels: dict[str, deque[str]] = {}  # tenant -> labels as JSON, oldest first
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """Open the store named by ``memory://`` (nothing may follow the scheme)."""
        if url != "memory://":
            raise ConfigError(f"a memory store URL is exactly 'memory://', got {url!r}")
        return cls()

    def __repr__(self) -> str:
        return f"MemoryStore(entries={len(self._records)})"

    def put(self, entry: Entry) -> None:
        """Insert ``entry``, replacing any entry with the same id; size is recomputed."""
        record = encode(entry)
        with self._lock:
            self._check_open()
            self._remove(record.id)
            self._records[record.id] = record
            self._by_category.setdefault(record.category, set()).add(record.id)
            self._count(record, +1)

    def get(self, entry_id: int) -> Entry | None:
        """The entry with ``entry_id``, or ``None``; expired entries are still returned."""
        with self._lock:
            self._check_open()
            record = self._records.get(entry_id)
        return None if record is None else decode(record)

    def touch(self, entry_id: int, *, now: float, priority: float) -> None:
        """Record a hit on ``entry_id``; a missing id is ignored."""
        with self._lock:
            self._check_open()
            record = self._records.get(entry_id)
            if record is not None:
                self._records[entry_id] = record._replace(
                    hits=record.hits + 1, last_access=float(now), priority=float(priority)
                )

    def delete(self, entry_ids: Iterable[int]) -> list[EntryRef]:
        """Delete ``entry_ids``; return refs of those that existed (each id at most once)."""
        with self._lock:
            self._check_open()
            removed = (self._remove(entry_id) for entry_id in entry_ids)
            return [ref_of(record) for record in removed if record is not None]

    def find(
        self,
        *,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
    ) -> list[EntryRef]:
        """Refs of the entries matching every given filter (``None`` matches all)."""
        wanted = {
            name: value
            for name, value in (("tenant", tenant), ("category", category), ("model", model))
            if value is not None
        }
        with self._lock:
            self._check_open()
            candidates: Iterable[int] = (
                self._by_category.get(category, ()) if category is not None else self._records
            )
            records = [self._records[entry_id] for entry_id in candidates]
        return [ref_of(r) for r in records if all(getattr(r, k) == v for k, v in wanted.items())]

    def evict_over(
        self, category: str, *, max_entries: int | None, max_bytes: int | None
    ) -> list[EntryRef]:
        """Delete the lowest ``(priority, last_access, id)`` entries of ``category`` until it
        is within both limits (``None``: no limit); return their refs, in eviction order."""
        with self._lock:
            self._check_open()
            entries, size = self._usage.get(category, (0, 0))
            if _within(entries, size, max_entries, max_bytes):
                return []
            heap = self._eviction_heap(category)
            evicted = []
            while heap and not _within(entries, size, max_entries, max_bytes):
                _, _, entry_id = heapq.heappop(heap)
                record = self._records[entry_id]
                self._remove(entry_id)
                entries, size = entries - 1, size - record.size
                evicted.append(ref_of(record))
            return evicted

    def evict_for(self, category: str, quotas: Quotas) -> list[EntryRef]:
        """Delete entries until every limit of ``quotas`` holds, victims chosen by
        :meth:`Quotas.next_victim`; return their refs in eviction order."""
        with self._lock:
            self._check_open()
            heaps: dict[str, list[tuple[float, float, int]]] = {}
            evicted = []
            # _remove keeps self._usage current, so each step sees the usage left by the last.
            while (victim := quotas.next_victim(self._usage, category)) is not None:
                heap = heaps.get(victim)
                if heap is None:
                    heap = heaps[victim] = self._eviction_heap(victim)
                if not heap:
                    break
                record = self._remove(heapq.heappop(heap)[2])
                if record is not None:
                    evicted.append(ref_of(record))
            return evicted

    def expire(self, now: float) -> list[EntryRef]:
        """Delete every entry with ``expires <= now``; return their refs."""
        with self._lock:
            self._check_open()
            due = [
                r.id for r in self._records.values() if r.expires is not None and r.expires <= now
            ]
            return [ref_of(record) for record in map(self._remove, due) if record is not None]

    def scan(self, *, since: float | None = None, documents: bool = True) -> Iterator[Entry]:
        """Yield every entry stored when the scan began (a snapshot), vectors included;
        ``since`` and ``documents`` as in the protocol."""
        with self._lock:
            self._check_open()
            snapshot = [r for r in self._records.values() if since is None or r.created >= since]
        return (decode(record, documents=documents) for record in snapshot)

    def scan_partition(self, partition: str) -> Iterator[Entry]:
        """Yield the entries of ``partition`` stored when the scan began, without documents;
        O(n): the double filters every record."""
        with self._lock:
            self._check_open()
            snapshot = [r for r in self._records.values() if r.partition == partition]
        return (decode(record, documents=False) for record in snapshot)

    def usage(self) -> dict[str, UsageCount]:
        """Entries and bytes per category; categories with no entries are absent."""
        with self._lock:
            self._check_open()
            return {c: UsageCount(entries=n, bytes=b) for c, (n, b) in self._usage.items()}

    def add_label(self, label: Label, *, limit: int = MAX_LABELS_PER_TENANT) -> None:
        """Keep ``label`` under its tenant, at most ``limit`` per tenant (oldest dropped)."""
        text = label.to_json()
        with self._lock:
            self._check_open()
            kept = self._labels.setdefault(label.tenant, deque())
            kept.append(text)
            while len(kept) > limit:
                kept.popleft()

    def labels(self, *, tenant: str | None = None,
               category: str | None = None) -> list[Label]:
        """``tenant``'s labels (``None``: all tenants) of ``category`` (``None``: all)."""
        with self._lock:
            self._check_open()
            texts = [t for name, kept in sorted(self._labels.items())
                     if tenant is None or name == tenant for t in kept]
        found = map(Label.from_json, texts)
        return [x for x in found if category is None or x.category == category]

    def delete_labels(self, *, tenant: str | None = None) -> int:
        """Delete ``tenant``'s labels (``None``: everyone's); return how many went."""
        with self._lock:
            self._check_open()
            names = list(self._labels) if tenant is None else [tenant]
            return sum(len(self._labels.pop(name, ())) for name in names)

    def close(self) -> None:
        """Drop every entry; later calls raise :class:`StoreUnavailable`. Idempotent."""
        with self._lock:
            self._closed = True
            self._records.clear()
            self._by_category.clear()
            self._usage.clear()
            self._labels.clear()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- internals; all run under self._lock --------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the memory store is closed")

    def _eviction_heap(self, category: str) -> list[tuple[float, float, int]]:
        heap = [
            (r.priority, r.last_access, r.id)
            for r in map(self._records.__getitem__, self._by_category.get(category, ()))
        ]
        heapq.heapify(heap)
        return heap

    def _remove(self, entry_id: int) -> Record | None:
        record = self._records.pop(entry_id, None)
        if record is not None:
            members = self._by_category[record.category]
            members.discard(entry_id)
            if not members:
                del self._by_category[record.category]
            self._count(record, -1)
        return record

    def _count(self, record: Record, sign: int) -> None:
        entries, size = self._usage.get(record.category, (0, 0))
        entries, size = entries + sign, size + sign * record.size
        if entries:
            self._usage[record.category] = (entries, size)
        else:
            self._usage.pop(record.category, None)


def _within(entries: int, size: int, max_entries: int | None, max_bytes: int | None) -> bool:
    return (max_entries is None or entries <= max_entries) and (
        max_bytes is None or size <= max_bytes
    )
