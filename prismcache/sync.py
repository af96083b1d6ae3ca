"""Keeping several processes' in-memory tiers in step with one shared store.

Every process serving from one shared store (several ``prismcache serve`` behind a load
balancer, one Redis) holds its own vector index and exact tier. A store that keeps a **change
feed** — every put, delete, eviction, expiry and invalidation appended to an ordered log in the
same atomic step as the mutation, as :class:`~prismcache.stores.redis.RedisStore` does with a
Redis Stream — lets each process tail that log and apply it to its tiers:

* :class:`ChangeFeed` is the optional protocol such a store implements, besides
  :class:`~prismcache.stores.base.DocumentStore`.
* :class:`Follower` is the one daemon thread per cache that tails it. Its cursor is taken
  *before* the cache rebuilds its tiers from the store, so nothing written in between is lost
  (applying a change twice is harmless: adds replace, drops of unknown ids are ignored). When
  the feed reports that the cursor fell behind its retention, or that the log was recreated
  (Redis restarted empty, ``FLUSHDB``), the follower rebuilds the tiers from the store.
* Failures of the feed (the store is down) are logged, counted in :attr:`Follower.errors` and
  retried with exponential backoff; the cache meanwhile fails open on its own.
* On a Redis Cluster the feed is one stream per bucket of keys; the store reads them together
  (one pipeline per node) and its cursor covers all of them, so the follower is the same.
  Within an index memory budget (:class:`~prismcache.tiers.Tiers` with ``max_bytes``), the
  tiers apply changes only to the partitions they hold or are loading.

The guarantee is bounded staleness: another process's store becomes a hit here within one
round trip of the feed (measured in ``docs/deployment.md``); a delete may be seen late, but a
deleted document is never served, because a hit always reads the document from the store and
a missing one is a miss that drops the stale vector.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

from prismcache.entry import Entry, EntryRef
from prismcache.errors import StoreError

if TYPE_CHECKING:
    from prismcache.tiers import Tiers

__all__ = ["Change", "ChangeBatch", "ChangeFeed", "Follower"]

log = logging.getLogger("prismcache.sync")


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One mutation of the shared store, as a follower's tiers need it (no store read).

    ``op`` is ``"put"`` (``vector`` and ``embedder`` as stored; ``vector`` is ``None`` for an
    exact-only entry) or ``"delete"`` (any removal: delete, eviction, expiry, invalidation).
    """

    op: Literal["put", "delete"]
    ref: EntryRef
    embedder: str = ""
    vector: np.ndarray | None = None

    def entry(self) -> Entry:
        """The document-less :class:`Entry` that :meth:`Tiers.add` takes for a put."""
        ref = self.ref
        return Entry(id=ref.id, tenant="", partition=ref.partition, category=ref.category,
                     model="", exact_key=ref.exact_key, query="", request={}, response={},
                     vector=self.vector, embedder=self.embedder, size=ref.size,
                     priority=ref.priority)


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """What :meth:`ChangeFeed.read_changes` returns.

    ``changes`` in log order; ``cursor`` to pass to the next read; ``behind`` is true when
    changes after the given cursor are no longer in the log (trimmed past retention, or the log
    was recreated): the reader must rebuild from the store, starting from a fresh
    :meth:`ChangeFeed.latest_cursor` taken before the rebuild.
    """

    changes: list[Change]
    cursor: str
    behind: bool = False


@runtime_checkable
class ChangeFeed(Protocol):
    """A store's ordered log of its own mutations (optional, beside ``DocumentStore``).

    Cursors are opaque strings. Errors are ``StoreError`` subclasses, as for the store.
    """

    def latest_cursor(self) -> str:
        """A cursor after every change logged so far: reading from it returns only later ones."""
        ...

    def read_changes(self, cursor: str, *, block_ms: int = 250, limit: int = 1000) -> ChangeBatch:
        """Up to ``limit`` changes after ``cursor``; when there are none, wait up to
        ``block_ms`` milliseconds for some (an empty batch is a normal answer)."""
        ...


class Follower:
    """The daemon thread that applies a :class:`ChangeFeed` to one cache's tiers.

    Made by :meth:`of` before the tiers are built (it takes the cursor then), started with
    :meth:`start` once they are, stopped with :meth:`stop` (idempotent). Counters:
    :attr:`applied`, :attr:`rebuilds`, :attr:`errors`.

    >>> from prismcache.stores.memory import MemoryStore
    >>> Follower.of(MemoryStore()) is None      # no change feed: nothing to follow
    True
    """

    def __init__(self, feed: ChangeFeed, cursor: str, *, block_ms: int = 250,
                 backoff: tuple[float, float] = (0.05, 2.0)) -> None:
        self._feed = feed
        self._cursor = cursor
        self._block_ms = block_ms
        self._backoff = backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.applied = 0
        self.rebuilds = 0
        self.errors = 0
        self.last_error: str | None = None

    @classmethod
    def of(cls, store: object, **options: object) -> Follower | None:
        """A follower of ``store``'s change feed, its cursor taken now; ``None`` when the
        store keeps no feed. Raises ``StoreError`` if the feed cannot be read."""
        if not isinstance(store, ChangeFeed):
            return None
        return cls(store, store.latest_cursor(), **options)  # type: ignore[arg-type]

    @property
    def cursor(self) -> str:
        """The position after the last change applied."""
        return self._cursor

    def start(self, tiers: Callable[[], Tiers], *, reload: Callable[[], None],
              lock: threading.Lock | None = None) -> None:
        """Start tailing: apply changes to ``tiers()`` (read anew for every batch, so a
        reload's replacement is used), holding ``lock`` while applying; call ``reload()`` to
        rebuild the tiers from the store when the feed says the cursor fell behind."""
        if self._thread is not None:
            raise RuntimeError("follower already started")
        self._thread = threading.Thread(target=self._run, args=(tiers, reload, lock),
                                        name="prismcache-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it; idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self, tiers: Callable[[], Tiers], reload: Callable[[], None],
             lock: threading.Lock | None) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            try:
                batch = self._feed.read_changes(self._cursor, block_ms=self._block_ms)
                if batch.behind:
                    cursor = self._feed.latest_cursor()  # before the rebuild: no gap
                    log.warning("change feed fell behind at %s; rebuilding the "
                                "index from the store", self._cursor)
                    reload()
                    self._cursor = cursor
                    self.rebuilds += 1
                elif batch.changes:
                    if lock is None:
                        apply_changes(tiers(), batch.changes)
                    else:
                        with lock:
                            apply_changes(tiers(), batch.changes)
                    self.applied += len(batch.changes)
                    self._cursor = batch.cursor
                else:
                    self._cursor = batch.cursor
                if self.last_error is not None:
                    log.warning("change feed readable again after %d errors",
                                self.errors)
                    self.last_error = None
                delay = self._backoff[0]
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure
                self.errors += 1
                first = self.last_error is None
                self.last_error = f"{type(exc).__name__}: {exc}"
                if first or not isinstance(exc, StoreError):
                    log.warning("change feed failed (%s); retrying with backoff",
                                self.last_error, exc_info=not isinstance(exc, StoreError))
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff[1])


def apply_changes(tiers: Tiers, changes: Iterable[Change]) -> None:
    """Apply ``changes`` to ``tiers`` in order. Idempotent; puts whose vector was made by
    another embedder are skipped with a warning (the cache could not search them anyway)."""
    run: list[Change] = []
    for change in changes:
        if run and run[-1].op != change.op:
            _apply_run(tiers, run)
            run = []
        run.append(change)
    _apply_run(tiers, run)


def _apply_run(tiers: Tiers, run: list[Change]) -> None:
    if not run:
        return
    if run[0].op == "delete":
        tiers.drop(change.ref for change in run)
        return
    entries = []
    for change in run:
        if change.vector is not None and change.embedder != tiers.embedder_id:
            log.warning("entry %d from the change feed was embedded by %r, not %r; "
                        "not indexed", change.ref.id, change.embedder, tiers.embedder_id)
            continue
        entries.append(change.entry())
    tiers.add(entries)
