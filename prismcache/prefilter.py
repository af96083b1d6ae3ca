"""The miss-path pre-filter (``prefilter.enabled``): prove "nothing near" before the model runs.

Beside the semantic tier's indexes, :class:`Prefilter` keeps one index per partition (all
categories together) of *static* vectors of the stored queries
(:class:`~prismcache.embedders.static.StaticEmbedder`: a tokenizer call and a gather, ~0.05 ms).
A lookup that passed the exact tier asks :meth:`Prefilter.far`; when the best static cosine in
its partition is below ``bound``, the request is a miss (``MissReason.FAR``) and the model does
not run. Its full vector is made when its answer is stored (after the reply, in the proxy).

The bound is chosen on training traces so that at most ~0.5% of the requests the full decision
would serve fall below it (``bench/prefilter.py``, ``docs/prefilter.md``); a request it loses
is a miss, never a wrong answer.

It never guesses about a partition it does not fully know: a vector added without its query
text (the change feed of a shared store carries none; a snapshot holds none) marks the
partition *incomplete*, and :meth:`far` is then ``False`` for it (the model runs as before)
until the partition is forgotten.

Many entries at once (a cache opening over its store) are indexed in the **background**
(``add(..., background=True)``): a tokenizer call per text and an index insert cost ~0.5-1 ms
per entry, which would otherwise lengthen the start-up ~2-3x. Until a partition's queued
texts are indexed, :meth:`far` is ``False`` for it; :meth:`wait` waits for the queue.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Sequence

import numpy as np

from prismcache.embedders.static import StaticEmbedder
from prismcache.index import IndexSpec, VectorIndex, make_index

__all__ = ["Prefilter"]

log = logging.getLogger(__name__)


class Prefilter:
    """Static-vector indexes per partition and the bound below which a lookup is far.

    Thread-safe: writers hold a lock; :meth:`far` searches without it (indexes are safe to
    search beside a writer). Background work runs on one thread at a time, started when work
    is queued and ending when the queue is empty.
    """

    def __init__(self, embedder: StaticEmbedder, *, bound: float,
                 spec: IndexSpec | None = None) -> None:
        """Raises ``ValueError`` unless ``-1 <= bound <= 1``."""
        if not -1.0 <= bound <= 1.0:
            raise ValueError(f"prefilter bound must be a cosine in [-1, 1], got {bound!r}")
        self.embedder = embedder
        self.bound = float(bound)
        self._spec = spec or IndexSpec()
        self._indexes: dict[str, VectorIndex] = {}
        self._incomplete: set[str] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        # background work: (partition, its generation when queued, [(id, text)])
        self._queue: deque[tuple[str, int, list[tuple[int, str]]]] = deque()
        self._pending: Counter[str] = Counter()  # queued batches per partition
        self._generations: Counter[str] = Counter()  # bumped when a partition is dropped
        self._worker: threading.Thread | None = None
        self.skipped = 0  #: lookups called far (a model call saved each)

    def add(self, partition: str, ids: Sequence[int], texts: Sequence[str], *,
            background: bool = False) -> None:
        """Index the queries ``texts`` of entries ``ids`` (entries with a full vector) in
        ``partition``; an empty text (not known) marks the partition incomplete. With
        ``background``, queue them for the background thread (the partition is never far
        until they are indexed) and return at once."""
        known = [(i, t) for i, t in zip(ids, texts, strict=True) if t]
        with self._lock:
            if len(known) < len(ids):
                self._incomplete.add(partition)
            if not known or partition in self._incomplete:
                return
            if not background:
                self._insert(partition, known, self.embedder.embed([t for _, t in known]))
                return
            self._queue.append((partition, self._generations[partition], known))
            self._pending[partition] += 1
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, daemon=True,
                                                name="prismcache-prefilter")
                self._worker.start()

    def _insert(self, partition: str, known: list[tuple[int, str]],
                vectors: np.ndarray) -> None:
        """Add ``vectors`` of ``known`` to the index of ``partition``. Call with the lock."""
        index = self._indexes.get(partition)
        if index is None:
            index = self._indexes[partition] = make_index(self.embedder.dim, self._spec)
        index.add(np.asarray([i for i, _ in known], dtype=np.int64), vectors)

    def _work(self) -> None:
        """The background thread: index queued texts (embedding outside the lock) until the
        queue is empty. A batch whose partition was dropped meanwhile is discarded; one that
        fails marks its partition incomplete (never far), logged."""
        while True:
            with self._lock:
                if not self._queue:
                    self._worker = None
                    self._idle.notify_all()
                    return
                partition, generation, known = self._queue.popleft()
            try:
                vectors = self.embedder.embed([t for _, t in known])
                with self._lock:
                    if (self._generations[partition] == generation
                            and partition not in self._incomplete):
                        self._insert(partition, known, vectors)
            except Exception as exc:  # noqa: BLE001 - the partition is then never called far
                log.warning("prismcache: static vectors of partition %s failed (%s: %s); "
                            "it is not pre-filtered", partition[:12], type(exc).__name__, exc)
                with self._lock:
                    self._incomplete.add(partition)
                    self._indexes.pop(partition, None)
            finally:
                with self._lock:
                    self._pending[partition] -= 1
                    if self._pending[partition] <= 0:
                        del self._pending[partition]

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no background work is queued or running; ``False`` if ``timeout``
        seconds passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._worker is None, timeout)

    def remove(self, partition: str, entry_id: int) -> None:
        """Forget one entry's static vector (unknown ids are ignored)."""
        with self._lock:
            index = self._indexes.get(partition)
            if index is not None:
                index.remove(np.asarray([entry_id], dtype=np.int64))

    def incomplete(self, partitions: Sequence[str]) -> None:
        """Mark ``partitions`` as holding vectors whose texts are unknown (never far)."""
        with self._lock:
            self._incomplete.update(partitions)
            for partition in partitions:
                self._indexes.pop(partition, None)
                self._generations[partition] += 1

    def forget(self, partition: str) -> None:
        """Drop everything of ``partition`` (the tiers dropped it too)."""
        with self._lock:
            self._indexes.pop(partition, None)
            self._incomplete.discard(partition)
            self._generations[partition] += 1

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            for partition in {*self._indexes, *self._pending}:
                self._generations[partition] += 1
            self._indexes.clear()
            self._incomplete.clear()

    def index(self, partition: str) -> VectorIndex | None:
        """The static index of ``partition`` (``None`` when it holds none): what the memory
        budget counts beside the partition's semantic indexes."""
        return self._indexes.get(partition)

    def far(self, partition: str, text: str) -> bool:
        """Whether ``text`` has no stored query of ``partition`` within the bound (static
        cosine); ``False`` for an incomplete partition and for one with texts queued for the
        background thread. An empty partition is far."""
        if partition in self._incomplete or partition in self._pending:
            return False
        index = self._indexes.get(partition)
        if index is not None and len(index):
            found = index.search(self.embedder.embed([text])[0], 1)
            if found and found[0][1] >= self.bound:
                return False
        self.skipped += 1
        return True

    def __repr__(self) -> str:
        return f"Prefilter(embedder={self.embedder!r}, bound={self.bound})"
