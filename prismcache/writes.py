"""The cache's write path: admitting an answer, replacing a verbatim repeat, evicting within
the quotas, sweeping what expired, invalidating on request.

:class:`WritePath` is a base class of :class:`~prismcache.SemanticCache` and reads the state
the cache assembles (store, tiers, policies, counters, the write lock); it is not used alone.
Every write holds the cache's write lock: stores are serialised, lookups are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prismcache.classify import Classification
from prismcache.entry import Entry, new_entry_id
from prismcache.errors import FAIL_OPEN
from prismcache.eviction import eviction_policy
from prismcache.quotas import Quotas
from prismcache.request import Body, PreparedRequest, RequestKey
from prismcache.responses import completion_tokens, uncacheable_reason
from prismcache.results import Stored
from prismcache.stores.codec import sized

__all__ = ["WritePath"]

SWEEP_EVERY = 30.0  # seconds between sweeps of expired entries, piggybacked on stores


class WritePath:
    """The store and maintenance methods of :class:`~prismcache.SemanticCache`."""

    # -- store ---------------------------------------------------------------------------

    def store(
        self,
        body: Body | PreparedRequest,
        response: Mapping[str, Any],
        *,
        tenant: str = "default",
        category: str | None = None,
        chunks: list[dict[str, Any]] | None = None,
        cost: float | None = None,
        latency: float | None = None,
        allow_truncated: bool = False,
        shadow: bool = False,
    ) -> Stored:
        """Admit ``response`` as the answer to ``body`` (a body or a :class:`PreparedRequest`)
        for ``tenant``; ``shadow`` as in :meth:`lookup`.

        ``chunks`` are the stream chunks the response was assembled from, replayed to
        streaming clients on a hit. ``cost`` (USD) and ``latency`` (seconds) are what one hit
        saves; when omitted they are estimated from the response's tokens and the category's
        ``price_per_1k_tokens`` and ``upstream_latency``. A verbatim repeat replaces the
        earlier entry. Returns :class:`Stored`; raises only :class:`RequestError`.
        """
        request = self._prepared(body, tenant)
        key = request.key
        if key.bypass:
            return Stored(entry_id=None, reason=f"bypass:{key.bypass}")
        refused = uncacheable_reason(response, allow_truncated=allow_truncated)
        if refused is not None:
            return Stored(entry_id=None, reason=refused)
        classification = self._router.by_text(key.query, category or key.category)
        try:
            with self._write_lock:
                now = self._clock()
                classification, entry = self._make_entry(request, response, classification,
                                                         chunks, cost, latency, now, shadow)
                if now >= self._next_sweep:
                    self._sweep(now)
                if entry is None:
                    return Stored(entry_id=None, category=classification.category,
                                  reason="category disabled")
                refused = None if self.admission is None else self.admission(
                    entry, self._counters.copy(entry.category))
                if refused is not None:
                    return Stored(entry_id=None, category=entry.category,
                                  reason=f"admission:{refused}")
                self._admit(entry, key)
            return Stored(entry_id=entry.id, category=entry.category)
        except FAIL_OPEN as exc:
            self._fail_open("store", classification, exc, self._count)
            return Stored(entry_id=None, reason=f"error:{type(exc).__name__}")

    def _make_entry(
        self, prepared: PreparedRequest, response: Mapping[str, Any],
        classification: Classification | None, chunks: list[dict[str, Any]] | None,
        cost: float | None, latency: float | None, now: float, shadow: bool,
    ) -> tuple[Classification, Entry | None]:
        key = prepared.key
        vector = None
        if classification is None:
            vector = self._embed(key.query)
            classification = self._router.by_vector(vector)
        policy = self._policies.resolve(classification.category, key.model, shadow=shadow)
        if not policy.enabled:
            return classification, None
        semantic = key.semantic and not policy.exact_only
        if semantic and vector is None:
            vector = self._embed(key.query)
        context = key.context
        context_vector = self._context_vector(context, context, policy) \
            if semantic and context is not None else None
        request = dict(prepared.body)
        response = dict(response)
        entry = Entry(
            id=new_entry_id(), tenant=key.tenant, partition=key.partition,
            category=classification.category, model=key.model, exact_key=key.exact_key,
            query=key.query, request=request, response=response, chunks=chunks,
            vector=vector if semantic else None,
            embedder=self._embedder.id if semantic else "",
            context_vector=context_vector,
            created=now,
            # kept (not swept) through the stale_if_error window; served fresh only in the ttl
            expires=None if policy.ttl is None
            else now + policy.ttl.total_seconds() + policy.stale_if_error,
            last_access=now,
            cost=cost if cost is not None
            else completion_tokens(response) / 1000 * policy.price_per_1k_tokens,
            latency=latency if latency is not None else policy.upstream_latency,
        )
        # GDSF needs the size before the store sets it: ask the codec, which defines it (and
        # keeps the encodings, so the store does not encode the JSON again).
        entry = sized(entry)
        entry.priority = eviction_policy(policy.eviction).priority(
            entry, now=now, inflation=self._inflation.get(entry.category, 0.0))
        return classification, entry

    def _admit(self, entry: Entry, key: RequestKey) -> None:
        previous = self._tiers.exact(key.exact_key)
        if previous is not None:
            self._tiers.drop(self._store.delete([previous]))
            self._policies.forget([previous])
        self._store.put(entry)
        self._tiers.add([entry])
        self._count(entry.category, "stores")
        # Work-conserving quotas: the victims may be of any category (prismcache.quotas).
        evicted = self._store.evict_for(entry.category, Quotas.of(self.config))
        for ref in evicted:
            self._count(ref.category, "evictions")
            if (self.policy_for(ref.category, entry.model).eviction != "lru"
                    and ref.priority > self._inflation.get(ref.category, 0.0)):
                self._inflation[ref.category] = ref.priority
        self._tiers.drop(evicted)
        self._policies.forget(ref.id for ref in evicted)

    # -- maintenance -------------------------------------------------------------------------

    def sweep(self) -> int:
        """Delete every expired entry now; return how many. (Also runs every 30 s of
        stores.) Raises :class:`StoreError` if the store fails."""
        with self._write_lock:
            return self._sweep(self._clock())

    def _sweep(self, now: float) -> int:
        self._next_sweep = now + SWEEP_EVERY
        refs = self._store.expire(now)
        self._tiers.drop(refs)
        for ref in refs:
            self._count(ref.category, "expirations")
        return len(refs)

    def _expire_one(self, entry: Entry) -> None:
        self._tiers.drop(self._store.delete([entry.id]))
        self._count(entry.category, "expirations")

    def invalidate(
        self,
        *,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
        entry_id: int | None = None,
    ) -> int:
        """Delete the entries matching every given filter (or the one ``entry_id``); return
        how many were deleted. With no filter at all, deletes everything. Raises
        :class:`StoreError` if the store fails (an operator wants to know)."""
        with self._write_lock:
            if entry_id is not None:
                refs = self._store.delete([entry_id])
            else:
                refs = self._store.delete(
                    [r.id for r in self._store.find(tenant=tenant, category=category, model=model)]
                )
            self._tiers.drop(refs)
        return len(refs)
