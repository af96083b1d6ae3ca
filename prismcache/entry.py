"""The cache's unit of storage, and the small value types the seams exchange.

An :class:`Entry` is one stored response together with everything needed to serve it, expire
it, evict it and rebuild the vector index from the store alone (its vector travels with it).
Times are wall-clock epoch seconds (``time.time()``), because entries outlive processes and are
shared between machines.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Entry", "EntryRef", "UsageCount", "new_entry_id"]

_ID_BITS = 63


def new_entry_id() -> int:
    """Return a fresh random entry id: a positive integer below 2**63.

    Ids are random rather than sequential so that several processes sharing one store never
    collide without coordination; 63 bits keep them valid as SQLite INTEGER and hnswlib labels.
    """
    return secrets.randbits(_ID_BITS) or 1


@dataclass(slots=True, kw_only=True)
class Entry:
    """One cached response.

    Attributes:
        id: positive integer below 2**63; also the label of the entry's vector in the index.
        tenant: the tenant that stored it; entries are never served across tenants.
        partition: hex digest of the exact partition key (tenant, model, system prompt, tools,
            sampling class, prior conversation); lookups never cross partitions.
        category: the category whose policy governs the entry.
        model: the model named in the request (kept for invalidation by model).
        exact_key: hex digest of (partition, normalised last user turn): the exact tier's key.
        query: the last user turn, as sent.
        request: the request body (JSON-compatible).
        response: the response body (JSON-compatible), as returned to a non-streaming client.
        chunks: the recorded stream chunks when the response was streamed, else ``None``.
        vector: the unit-norm float32 embedding of ``query``, or ``None`` for exact-only entries.
        embedder: ``"name:dim"`` of the embedder that made ``vector``.
        context_vector: the unit-norm embedding of the conversation before ``query`` (see
            :func:`prismcache.decision.context_vector`) when its category compares contexts by
            meaning, else ``None`` (then it is recomputed from ``request`` when needed).
        created: epoch seconds when stored.
        expires: epoch seconds after which the entry must not be served; ``None`` for never.
        hits: times served.
        last_access: epoch seconds of the last store or hit.
        cost: upstream money one hit saves (USD).
        latency: upstream seconds one hit saves.
        size: bytes the entry occupies in the store (request + response + chunks).
        priority: eviction priority; the lowest is evicted first within a category.
    """

    id: int
    tenant: str
    partition: str
    category: str
    model: str
    exact_key: str
    query: str
    request: dict[str, Any]
    response: dict[str, Any]
    chunks: list[dict[str, Any]] | None = None
    vector: np.ndarray | None = None
    embedder: str = ""
    context_vector: np.ndarray | None = None
    created: float = 0.0
    expires: float | None = None
    hits: int = 0
    last_access: float = 0.0
    cost: float = 0.0
    latency: float = 0.0
    size: int = 0
    priority: float = 0.0

    def expired(self, now: float) -> bool:
        """True when the entry must no longer be served at epoch time ``now``."""
        return self.expires is not None and now >= self.expires

    def ref(self) -> EntryRef:
        """The small reference by which the cache's in-memory structures know this entry."""
        return EntryRef(
            id=self.id,
            partition=self.partition,
            category=self.category,
            exact_key=self.exact_key,
            size=self.size,
            priority=self.priority,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryRef:
    """What the in-memory tiers need to drop an entry the store removed."""

    id: int
    partition: str
    category: str
    exact_key: str
    size: int = 0
    priority: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageCount:
    """Entries and bytes a category occupies in the store."""

    entries: int = 0
    bytes: int = 0


