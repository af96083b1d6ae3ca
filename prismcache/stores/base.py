"""The document store seam: where entries live, the source of truth for the cache.

The vector index is held in process memory and can always be rebuilt from the store
(:meth:`DocumentStore.scan`). The store is read on a hit only; a miss never touches it except
to admit the new entry. Implementations translate their driver's errors into
:class:`~prismcache.errors.StoreError` subclasses in one place.

Backends are chosen by URL through :func:`prismcache.stores.open_store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from prismcache.entry import Entry, EntryRef, UsageCount
from prismcache.labels import MAX_LABELS_PER_TENANT, Label
from prismcache.quotas import Quotas

__all__ = ["DocumentStore"]


@runtime_checkable
class DocumentStore(Protocol):
    """Contract of every document store (memory, SQLite, Redis).

    All methods are thread-safe. Errors are raised as ``StoreError`` subclasses only. Entry ids
    may be given as any integer type, numpy integers included (index labels are). The contract
    is tested by ``tests/store_contract.py``.
    """

    def put(self, entry: Entry) -> None:
        """Insert ``entry``, replacing any entry with the same id. Entries keep their vector.

        The store sets ``size`` (see :mod:`prismcache.stores.codec`); the caller's value is
        ignored. A request, response or chunk JSON cannot represent raises ``StoreError``.
        """
        ...

    def get(self, entry_id: int) -> Entry | None:
        """Return the entry with ``entry_id`` (vector included), or ``None`` when absent.

        Expired entries may still be returned; callers check :meth:`Entry.expired`.
        """
        ...

    def touch(self, entry_id: int, *, now: float, priority: float) -> None:
        """Record a hit: ``hits += 1``, ``last_access = now``, ``priority = priority``.

        A missing id is ignored.
        """
        ...

    def delete(self, entry_ids: Iterable[int]) -> list[EntryRef]:
        """Delete the given ids; return refs of those that existed, each once."""
        ...

    def find(
        self,
        *,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
    ) -> list[EntryRef]:
        """Return refs of all entries matching every given filter (``None`` matches all)."""
        ...

    def evict_over(
        self, category: str, *, max_entries: int | None, max_bytes: int | None
    ) -> list[EntryRef]:
        """Delete lowest-priority entries of ``category`` until it holds at most
        ``max_entries`` entries and ``max_bytes`` bytes (``None``: no limit); return their refs.

        Ties in priority are broken by the older ``last_access`` first, then the lower id.
        Refs come in eviction order.
        """
        ...

    def evict_for(self, category: str, quotas: Quotas) -> list[EntryRef]:
        """After an entry of ``category`` was admitted, delete entries until every limit of
        ``quotas`` holds; return their refs in eviction order (any categories).

        The victim category of each step is :meth:`Quotas.next_victim` of the usage at that
        step; within it, the lowest priority goes first, ties as in :meth:`evict_over`. Within
        the limits it costs one read of the usage counters. Atomic per call where the backend
        is shared (SQLite transaction, Redis script).
        """
        ...

    def expire(self, now: float) -> list[EntryRef]:
        """Delete every entry with ``expires <= now``; return their refs."""
        ...

    def scan(self, *, since: float | None = None, documents: bool = True) -> Iterator[Entry]:
        """Yield every stored entry (only those with ``created >= since`` when ``since`` is
        given), vectors included, for rebuilding the index.

        With ``documents=False`` the ``request``, ``response`` and ``chunks`` are left empty
        (``{}``, ``{}``, ``None``) so a rebuild does not pay for decoding them. Entries present
        for the whole scan are yielded exactly once; entries added or deleted during it may or
        may not be.
        """
        ...

    def scan_partition(self, partition: str) -> Iterator[Entry]:
        """Yield the entries of one ``partition``, vectors included and documents left empty
        (as ``scan(documents=False)``): what loading one partition's index needs.

        Meant to cost in proportion to the partition, not the store (Redis keeps an id set per
        partition; SQLite and memory filter every entry, fine at their sizes). Entries present
        for the whole scan are yielded exactly once.
        """
        ...

    def usage(self) -> dict[str, UsageCount]:
        """Entries and bytes per category currently stored."""
        ...

    def add_label(self, label: Label, *, limit: int = MAX_LABELS_PER_TENANT) -> None:
        """Keep ``label`` under its tenant; past ``limit`` labels of that tenant the oldest go.
        Labels live apart from entries: deleting or evicting entries keeps them."""
        ...

    def labels(self, *, tenant: str | None = None,
               category: str | None = None) -> list[Label]:
        """The labels kept for ``tenant`` (``None``: every tenant's) and ``category``
        (``None``: all), oldest first within a tenant."""
        ...

    def delete_labels(self, *, tenant: str | None = None) -> int:
        """Delete ``tenant``'s labels (``None``: everyone's); return how many went."""
        ...

    def close(self) -> None:
        """Release connections and files; idempotent. Further calls may raise
        ``StoreUnavailable``."""
        ...
