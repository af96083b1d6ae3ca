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
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from prismcache.embedders.static import StaticEmbedder
from prismcache.index import IndexSpec, VectorIndex, make_index

__all__ = ["Prefilter"]


class Prefilter:
    """Static-vector indexes per partition and the bound below which a lookup is far.

    Thread-safe: writers hold a lock; :meth:`far` searches without it (indexes are safe to
    search beside a writer).
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
        self.skipped = 0  #: lookups called far (a model call saved each)

    def add(self, partition: str, ids: Sequence[int], texts: Sequence[str]) -> None:
        """Index the queries ``texts`` of entries ``ids`` (entries with a full vector) in
        ``partition``; an empty text (not known) marks the partition incomplete."""
        known = [(i, t) for i, t in zip(ids, texts, strict=True) if t]
        with self._lock:
            if len(known) < len(ids):
                self._incomplete.add(partition)
            if not known or partition in self._incomplete:
                return
            index = self._indexes.get(partition)
            if index is None:
                index = self._indexes[partition] = make_index(self.embedder.dim, self._spec)
            index.add(np.asarray([i for i, _ in known], dtype=np.int64),
                      self.embedder.embed([t for _, t in known]))

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

    def forget(self, partition: str) -> None:
        """Drop everything of ``partition`` (the tiers dropped it too)."""
        with self._lock:
            self._indexes.pop(partition, None)
            self._incomplete.discard(partition)

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._indexes.clear()
            self._incomplete.clear()

    def index(self, partition: str) -> VectorIndex | None:
        """The static index of ``partition`` (``None`` when it holds none): what the memory
        budget counts beside the partition's semantic indexes."""
        return self._indexes.get(partition)

    def far(self, partition: str, text: str) -> bool:
        """Whether ``text`` has no stored query of ``partition`` within the bound (static
        cosine); ``False`` for an incomplete partition. An empty partition is far."""
        if partition in self._incomplete:
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
