"""What the cache answers: dataclasses, never dicts or strings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from prismcache.decision import MissReason

__all__ = ["CategoryStats", "Hit", "LookupResult", "Miss", "MissReason", "Stored"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Hit:
    """A stored response that may be served for the request.

    Attributes:
        entry_id: the serving entry.
        similarity: cosine similarity of the query to the entry's query (1.0 for exact hits).
        category: the request's category.
        response: the stored OpenAI response body.
        chunks: the recorded stream chunks, when the response was stored from a stream.
        age: seconds since the entry was stored.
        tier: ``"exact"`` (verbatim repeat) or ``"semantic"``.
        probability: the verifier's probability that the entry's answer serves the request
            (``1.0`` above the category's ``verify_high``), ``None`` when no verifier ran.
    """

    entry_id: int
    similarity: float
    category: str
    response: dict[str, Any]
    chunks: list[dict[str, Any]] | None = None
    age: float = 0.0
    tier: Literal["exact", "semantic"] = "semantic"
    probability: float | None = None

    @property
    def hit(self) -> bool:
        """Always ``True``: lets callers write ``if result.hit``."""
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class Miss:
    """No stored response may be served.

    Attributes:
        reason: why, a :class:`MissReason` (a ``str`` enum: ``"empty"``,
            ``"below-threshold"``, ``"guard"``, ``"verifier"``, ``"disabled"``,
            ``"bypass"``, ``"error"`` when the cache failed open, ...).
        detail: what varies within the reason: the guard's name, the verifier's best
            probability, the bypass's cause, the exception type.
        category: the request's category, when it got that far.
        similarity: the best similarity seen, when a search ran.
        cacheable: whether the response may be stored afterwards.
        near_entry: the best candidate below the category's threshold but at or above its
            ``fallback_threshold`` (not read, not guard-checked): what
            :mod:`prismcache.server.overload` may serve, marked ``near``, when the upstream
            is overloaded. ``None`` when there is none or the policy sets no fallback.
        near_similarity: that candidate's similarity.
        stale_entry: the candidate that would have been served but is past its TTL, within
            the category's ``stale_if_error`` window (it passed the decision): what
            :mod:`prismcache.server.overload` may serve, marked ``stale``, when the upstream
            answers 429/5xx or times out. Never a hit. ``None`` when there is none.
        stale_similarity: that candidate's similarity (1.0 for a verbatim repeat).
        vector: the query's embedding, when a semantic search ran (the proxy matches it
            against requests in flight: :mod:`prismcache.server.coalesce`).
        grey_entry: the grey-zone candidate the verifier rejected with the highest
            probability (reason ``verifier``): what the proxy labels from the fresh answer
            (:mod:`prismcache.labels`). ``None`` otherwise.
        grey_similarity: its cosine.
        grey_probability: its probability.
    """

    reason: MissReason
    detail: str = ""
    category: str | None = None
    similarity: float | None = None
    cacheable: bool = True
    near_entry: int | None = None
    near_similarity: float | None = None
    stale_entry: int | None = None
    stale_similarity: float | None = None
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)
    grey_entry: int | None = None
    grey_similarity: float | None = None
    grey_probability: float | None = None

    @property
    def hit(self) -> bool:
        """Always ``False``."""
        return False

    @property
    def label(self) -> str:
        """``reason`` and ``detail`` as one readable string: ``"guard:numbers"``."""
        return f"{self.reason}:{self.detail}" if self.detail else str(self.reason)


LookupResult = Hit | Miss


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """The outcome of :meth:`SemanticCache.store`: ``entry_id`` is ``None`` when the response
    was not admitted, and ``reason`` says why."""

    entry_id: int | None
    category: str | None = None
    reason: str | None = None

    @property
    def stored(self) -> bool:
        """Whether the response was admitted."""
        return self.entry_id is not None


@dataclass(slots=True, kw_only=True)
class CategoryStats:
    """Counters of one category since the cache was opened, plus what the store holds
    (``entries``, ``bytes``) and how much of it is above the category's guaranteed share
    (``borrowed_entries``, ``borrowed_bytes``: :meth:`prismcache.quotas.Quotas.borrowed`)."""

    entries: int = 0
    bytes: int = 0
    borrowed_entries: int = 0
    borrowed_bytes: int = 0
    lookups: int = 0
    hits: int = 0
    exact_hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    expirations: int = 0
    errors: int = 0
    verifier_rejections: int = 0
    #: candidates rejected because their conversation context differs (docs/conversations.md)
    context_rejections: int = 0
    #: lookups of a ``context: semantic`` category whose context had to be compared exactly
    #: (a user turn past the embedder's window, tool turns, non-text content)
    exact_contexts: int = 0
    guard_rejections: dict[str, int] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        """hits / lookups (0.0 before any lookup)."""
        return self.hits / self.lookups if self.lookups else 0.0
