"""The category-aware semantic cache: the library's main entry point.

A lookup runs the steps of ``DESIGN.md``: key the request (partition + exact key), try the
exact tier, classify, embed once, search the partition's category index, decide by the
category's threshold and guards, and on a hit read the document from the store. A store admits
a complete response under its category's TTL and quota, and evicts within that quota.

The cache fails open: when the store or the embedder breaks, :meth:`SemanticCache.lookup`
returns a :class:`~prismcache.results.Miss` whose reason starts with ``"error:"``, counts it
and logs it, and :meth:`SemanticCache.store` returns a :class:`~prismcache.results.Stored`
that was not admitted. Only a request the cache cannot key raises
(:class:`~prismcache.errors.RequestError`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from prismcache import guards
from prismcache.classify import (
    CategoryRouter,
    Classification,
    EmbeddingClassifier,
    examples_digest,
    load_examples,
)
from prismcache.config import CacheConfig, CategoryPolicy, load_config
from prismcache.embedders import Embedder, open_embedder
from prismcache.entry import Entry, EntryRef, new_entry_id
from prismcache.errors import EmbeddingError, IndexError_, StoreError
from prismcache.eviction import eviction_policy
from prismcache.index import IndexSpec
from prismcache.quotas import Quotas
from prismcache.request import RequestKey, key_request, parse_body
from prismcache.responses import completion_tokens, uncacheable_reason
from prismcache.results import CategoryStats, Hit, LookupResult, Miss, Stored
from prismcache.stores import DocumentStore, open_store, redact_url
from prismcache.stores.codec import encode
from prismcache.sync import Follower
from prismcache.tiers import Tiers

__all__ = ["SemanticCache"]

log = logging.getLogger("prismcache")

_FAIL_OPEN = (StoreError, EmbeddingError, IndexError_)
#: ``(category, policy, model) -> policy``: adjusts a category's policy at decision time
PolicyHook = Callable[[str, CategoryPolicy, str], CategoryPolicy]
#: ``(entry, category stats) -> reason or None``: refuses an entry before it is stored
AdmissionHook = Callable[[Entry, CategoryStats], str | None]
_MEMO_SIZE = 1024
_SWEEP_EVERY = 30.0  # seconds between sweeps of expired entries, piggybacked on stores
Body = Mapping[str, Any] | bytes | str


class SemanticCache:
    """A semantic cache for OpenAI-style requests, partitioned, categorised and bounded.

    Thread-safe: lookups run concurrently; stores are serialised.

    >>> cache = SemanticCache.open({"store": "memory://", "embedder": "hash:64",
    ...                              "classifier": {"examples": None}})
    >>> body = {"model": "m", "messages": [{"role": "user", "content": "How do I reset it?"}]}
    >>> cache.lookup(body, tenant="acme").hit
    False
    >>> reply = {"choices": [{"message": {"role": "assistant", "content": "Like so."},
    ...                       "finish_reason": "stop"}]}
    >>> cache.store(body, reply, tenant="acme").stored
    True
    >>> cache.lookup(body, tenant="acme").response["choices"][0]["message"]["content"]
    'Like so.'
    >>> cache.lookup(body, tenant="globex").hit   # another tenant never sees it
    False
    >>> cache.close()
    """

    def __init__(
        self,
        config: CacheConfig,
        *,
        store: DocumentStore,
        embedder: Embedder,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Assemble a cache from its parts and rebuild the in-memory tiers from ``store``
        (or from the snapshot named in the config, then what the store gained since)."""
        self.config = config
        self._store = store
        self._embedder = embedder
        self._clock = clock
        self._index_spec = IndexSpec(**config.index)
        self._router = CategoryRouter(config, self._train_classifier())
        self._stats: dict[str, CategoryStats] = {name: CategoryStats() for name in config.categories}
        self._inflation: dict[str, float] = {}
        self._stats_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memo_lock = threading.Lock()
        self._next_sweep = 0.0
        #: optional decision-time policy adjuster (load-adaptive control, economics)
        self.policy_hook: PolicyHook | None = None
        #: optional cost-aware admission (``economics.admission`` in the config)
        self.admission: AdmissionHook | None = _admission(config)
        # A shared store's change feed keeps the tiers current; its cursor is taken first.
        self._follower = Follower.of(store)
        self._tiers = self._load_tiers()
        if self._follower is not None:
            self._follower.start(lambda: self._tiers, lock=self._write_lock,
                                 reload=lambda: setattr(self, "_tiers", self._load_tiers()))

    @classmethod
    def open(
        cls,
        config: str | Path | Mapping[str, Any] | CacheConfig | None = None,
        *,
        store: DocumentStore | None = None,
        embedder: Embedder | None = None,
        clock: Callable[[], float] = time.time,
    ) -> SemanticCache:
        """Open a cache from a YAML path, a mapping, a :class:`CacheConfig`, or ``None`` for
        the embedded default (bundled embedder, SQLite file ``prismcache.db``).

        ``store`` and ``embedder`` override the ones the config names (tests pass in-memory
        ones). Raises :class:`~prismcache.errors.ConfigError`,
        :class:`~prismcache.errors.StoreUnavailable` or
        :class:`~prismcache.errors.EmbedderMismatch` when the cache cannot start correctly.
        """
        if not isinstance(config, CacheConfig):
            config = load_config(config)
        embedder = embedder or open_embedder(config.embedder)
        store = store or open_store(config.store)
        try:
            return cls(config, store=store, embedder=embedder, clock=clock)
        except BaseException:
            store.close()
            raise

    # -- lookup --------------------------------------------------------------------------

    def lookup(
        self, body: Body, *, tenant: str = "default", category: str | None = None
    ) -> LookupResult:
        """Find a stored response that may be served for ``body`` in ``tenant``'s partition.

        ``category`` names the category explicitly (else the body's
        ``metadata.prism_category``, the rules, the classifier, the default). Returns a
        :class:`Hit` or a :class:`Miss`; raises only :class:`RequestError` for a body that
        cannot be keyed.
        """
        key = key_request(body, tenant=tenant, limits=self.config.limits)
        if key.bypass:
            return Miss(reason=f"bypass:{key.bypass}", cacheable=False)
        now = self._clock()
        # Text-only classification is cheap and needs no store: do it first, so a failure
        # below is counted under the request's category.
        classification = self._router.by_text(key.query, category or key.category)
        try:
            hit = self._exact_lookup(key, now)
            if hit is not None:
                return hit
            vector: np.ndarray | None = None
            if classification is None:
                vector = self._embed(key.query)
                classification = self._router.by_vector(vector)
            name = classification.category
            policy = self.policy_for(name, key.model)
            self._count(name, "lookups")
            if not policy.enabled:
                return self._miss(name, "disabled", cacheable=False)
            if policy.exact_only or not key.semantic:
                return self._miss(name, "exact-only")
            if vector is None:
                vector = self._embed(key.query)
            return self._semantic_lookup(key, name, vector, now)
        except _FAIL_OPEN as exc:
            return self._fail_open("lookup", classification, exc)

    def _exact_lookup(self, key: RequestKey, now: float) -> Hit | None:
        entry_id = self._tiers.exact(key.exact_key)
        if entry_id is None:
            return None
        entry = self._store.get(entry_id)
        if entry is None:
            self._tiers.drop([EntryRef(id=entry_id, partition=key.partition, category="",
                                       exact_key=key.exact_key)])
            return None
        policy = self.policy_for(entry.category, key.model)
        if entry.exact_key != key.exact_key or not policy.enabled:
            return None
        if _expired(entry, policy, now):
            self._expire_one(entry)
            return None
        self._count(entry.category, "lookups")
        return self._serve(entry, 1.0, "exact", now)

    def _semantic_lookup(
        self, key: RequestKey, category: str, vector: np.ndarray, now: float
    ) -> LookupResult:
        policy = self.policy_for(category, key.model)
        candidates = self._tiers.search(key.partition, category, vector, self.config.neighbours)
        if not candidates:
            return replace(self._miss(category, "empty"), vector=vector)
        best = candidates[0][1]
        reason = "below-threshold"
        for entry_id, similarity in candidates:
            if similarity < policy.threshold:
                break
            entry = self._store.get(entry_id)
            if entry is None:  # deleted elsewhere: the vector is stale
                self._tiers.drop_vector(key.partition, category, entry_id)
                continue
            if _expired(entry, policy, now):
                self._expire_one(entry)
                continue
            rejected = guards.check(key.query, entry.query, policy.guards)
            if rejected is not None:
                reason = f"guard:{rejected}"
                with self._stats_lock:
                    rejections = self._stat(category).guard_rejections
                    rejections[rejected] = rejections.get(rejected, 0) + 1
                continue
            return self._serve(entry, similarity, "semantic", now)
        miss = replace(self._miss(category, reason, similarity=best), vector=vector)
        floor = policy.fallback_threshold  # the near candidate overload.py may serve
        for entry_id, similarity in candidates if floor is not None else ():
            if floor <= similarity < policy.threshold:
                return replace(miss, near_entry=int(entry_id), near_similarity=float(similarity))
        return miss

    def _serve(self, entry: Entry, similarity: float, tier: str, now: float) -> Hit:
        policy = self.policy_for(entry.category, entry.model)
        entry.hits += 1
        priority = eviction_policy(policy.eviction).priority(
            entry, now=now, inflation=self._inflation.get(entry.category, 0.0))
        try:
            self._store.touch(entry.id, now=now, priority=priority)
        except StoreError as exc:  # the document was read: serving it is still correct
            log.warning("prismcache: could not record a hit on entry %d: %s", entry.id, exc)
        self._count(entry.category, "hits", "exact_hits" if tier == "exact" else None)
        return Hit(entry_id=entry.id, similarity=similarity, category=entry.category,
                   response=entry.response, chunks=entry.chunks, age=max(0.0, now - entry.created),
                   tier=tier)  # type: ignore[arg-type]

    def _miss(self, category: str, reason: str, *, similarity: float | None = None,
              cacheable: bool = True) -> Miss:
        self._count(category, "misses")
        return Miss(reason=reason, category=category, similarity=similarity, cacheable=cacheable)

    # -- store ---------------------------------------------------------------------------

    def store(
        self,
        body: Body,
        response: Mapping[str, Any],
        *,
        tenant: str = "default",
        category: str | None = None,
        chunks: list[dict[str, Any]] | None = None,
        cost: float | None = None,
        latency: float | None = None,
        allow_truncated: bool = False,
    ) -> Stored:
        """Admit ``response`` as the answer to ``body`` for ``tenant``.

        ``chunks`` are the stream chunks the response was assembled from, replayed to
        streaming clients on a hit. ``cost`` (USD) and ``latency`` (seconds) are what one hit
        saves; when omitted they are estimated from the response's tokens and the category's
        ``price_per_1k_tokens`` and ``upstream_latency``. A verbatim repeat replaces the
        earlier entry. Returns :class:`Stored`; raises only :class:`RequestError`.
        """
        key = key_request(body, tenant=tenant, limits=self.config.limits)
        if key.bypass:
            return Stored(entry_id=None, reason=f"bypass:{key.bypass}")
        refused = uncacheable_reason(response, allow_truncated=allow_truncated)
        if refused is not None:
            return Stored(entry_id=None, reason=refused)
        classification = self._router.by_text(key.query, category or key.category)
        try:
            with self._write_lock:
                now = self._clock()
                classification, entry = self._make_entry(key, body, response, classification,
                                                         chunks, cost, latency, now)
                if now >= self._next_sweep:
                    self._sweep(now)
                if entry is None:
                    return Stored(entry_id=None, category=classification.category,
                                  reason="category disabled")
                refused = None if self.admission is None else self.admission(
                    entry, self._stat_copy(entry.category))
                if refused is not None:
                    return Stored(entry_id=None, category=entry.category,
                                  reason=f"admission:{refused}")
                self._admit(entry, key)
            return Stored(entry_id=entry.id, category=entry.category)
        except _FAIL_OPEN as exc:
            self._fail_open("store", classification, exc)
            return Stored(entry_id=None, reason=f"error:{type(exc).__name__}")

    def _make_entry(
        self, key: RequestKey, body: Body, response: Mapping[str, Any],
        classification: Classification | None, chunks: list[dict[str, Any]] | None,
        cost: float | None, latency: float | None, now: float,
    ) -> tuple[Classification, Entry | None]:
        vector = None
        if classification is None:
            vector = self._embed(key.query)
            classification = self._router.by_vector(vector)
        policy = self.policy_for(classification.category, key.model)
        if not policy.enabled:
            return classification, None
        semantic = key.semantic and not policy.exact_only
        if semantic and vector is None:
            vector = self._embed(key.query)
        request = dict(body) if isinstance(body, Mapping) else _decoded(body)
        response = dict(response)
        entry = Entry(
            id=new_entry_id(), tenant=key.tenant, partition=key.partition,
            category=classification.category, model=key.model, exact_key=key.exact_key,
            query=key.query, request=request, response=response, chunks=chunks,
            vector=vector if semantic else None,
            embedder=self._embedder.id if semantic else "",
            created=now,
            expires=None if policy.ttl is None else now + policy.ttl.total_seconds(),
            last_access=now,
            cost=cost if cost is not None
            else completion_tokens(response) / 1000 * policy.price_per_1k_tokens,
            latency=latency if latency is not None else policy.upstream_latency,
        )
        # GDSF needs the size before the store sets it: ask the codec, which defines it.
        entry.size = encode(entry).size
        entry.priority = eviction_policy(policy.eviction).priority(
            entry, now=now, inflation=self._inflation.get(entry.category, 0.0))
        return classification, entry

    def _admit(self, entry: Entry, key: RequestKey) -> None:
        previous = self._tiers.exact(key.exact_key)
        if previous is not None:
            self._tiers.drop(self._store.delete([previous]))
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

    # -- maintenance -------------------------------------------------------------------------

    def sweep(self) -> int:
        """Delete every expired entry now; return how many. (Also runs every 30 s of
        stores.) Raises :class:`StoreError` if the store fails."""
        with self._write_lock:
            return self._sweep(self._clock())

    def _sweep(self, now: float) -> int:
        self._next_sweep = now + _SWEEP_EVERY
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

    def policy_for(self, category: str, model: str = "") -> CategoryPolicy:
        """The policy a decision about ``category`` (for a request to ``model``) uses now: the
        configured one, passed through :attr:`policy_hook` when one is set."""
        policy = self.config.policy(category)
        hook = self.policy_hook
        return policy if hook is None else hook(category, policy, model)

    def stats(self) -> dict[str, CategoryStats]:
        """Per-category counters since opening, with the entries and bytes the store holds."""
        try:
            usage = self._store.usage()
        except StoreError as exc:
            log.warning("prismcache: store usage unavailable: %s", exc)
            usage = {}
        with self._stats_lock:
            out = {}
            for name in sorted(set(self._stats) | set(usage)):
                s = self._stats.get(name) or CategoryStats()
                u = usage.get(name)
                copy = replace(s, guard_rejections=dict(s.guard_rejections))
                if u is not None:
                    copy.entries, copy.bytes = u.entries, u.bytes
                out[name] = copy
        return out

    def save_snapshot(self, path: str | Path | None = None) -> Path:
        """Write the in-memory tiers to ``path`` (default: the config's ``snapshot``) so the
        next start skips rebuilding the index. Raises ``ValueError`` with no path."""
        target = path or self.config.snapshot
        if target is None:
            raise ValueError("no snapshot path: pass one or set `snapshot:` in the config")
        self._tiers.save(Path(target), taken_at=self._clock())
        return Path(target)

    def close(self) -> None:
        """Write the snapshot (if configured) and close the store."""
        if self._follower is not None:
            self._follower.stop()
        try:
            if self.config.snapshot:
                self.save_snapshot()
        finally:
            self._store.close()

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"SemanticCache(store={redact_url(self.config.store)!r}, "
                f"embedder={self._embedder.id!r}, entries={len(self._tiers)})")

    def categorise_vector(self, vector: np.ndarray) -> str:
        """The category the embedding classifier (or the default) gives a query vector —
        what a lookup uses when neither metadata nor rules decide."""
        return self._router.by_vector(vector).category

    @property
    def embedder(self) -> Embedder:
        """The embedder the cache's vectors are made with."""
        return self._embedder

    @property
    def document_store(self) -> DocumentStore:
        """The document store (the source of truth)."""
        return self._store

    # -- internals -------------------------------------------------------------------------

    def _embed(self, text: str) -> np.ndarray:
        with self._memo_lock:
            vector = self._memo.get(text)
            if vector is not None:
                self._memo.move_to_end(text)
                return vector
        vectors = self._embedder.embed([text])
        if vectors.shape != (1, self._embedder.dim):
            raise EmbeddingError(
                f"embedder {self._embedder.id} returned shape {vectors.shape}, "
                f"expected (1, {self._embedder.dim})")
        vector = vectors[0]
        with self._memo_lock:
            self._memo[text] = vector
            if len(self._memo) > _MEMO_SIZE:
                self._memo.popitem(last=False)
        return vector

    def _train_classifier(self) -> EmbeddingClassifier | None:
        spec = self.config.classifier
        if spec.examples is None:
            return None
        pairs = load_examples(spec.examples)
        if spec.examples == "builtin":
            # Shipped pre-trained for the bundled embedder: start-up embeds nothing.
            shipped = resources.files("prismcache").joinpath(f"data/classifier-{spec.kind}.npz")
            with resources.as_file(shipped) as path:
                model = EmbeddingClassifier.load(path, embedder_id=self._embedder.id,
                                                 digest=examples_digest(pairs))
            if model is not None:
                return model
        texts = [text for text, _ in pairs]
        vectors = self._embedder.embed(texts)  # embedders batch large inputs themselves
        return EmbeddingClassifier.fit(vectors, [c for _, c in pairs], kind=spec.kind)

    def _load_tiers(self) -> Tiers:
        dim, embedder_id = self._embedder.dim, self._embedder.id
        now = self._clock()
        if self.config.snapshot and Path(self.config.snapshot, "manifest.json").exists():
            try:
                tiers, taken_at = Tiers.load(Path(self.config.snapshot),
                                             embedder_id=embedder_id, spec=self._index_spec)
                tiers.add(self._store.scan(since=taken_at, documents=False))
                return tiers
            except (OSError, ValueError, KeyError) as exc:
                log.warning("prismcache: snapshot %s unusable (%s); rebuilding from the store",
                            self.config.snapshot, exc)
        tiers = Tiers(dim=dim, embedder_id=embedder_id, spec=self._index_spec)
        self._store.expire(now)
        tiers.add(self._store.scan(documents=False))
        return tiers

    def _count(self, category: str, field: str, extra: str | None = None, *, n: int = 1) -> None:
        with self._stats_lock:
            stat = self._stat(category)
            setattr(stat, field, getattr(stat, field) + n)
            if extra is not None:
                setattr(stat, extra, getattr(stat, extra) + n)

    def _stat_copy(self, category: str) -> CategoryStats:
        with self._stats_lock:
            return replace(self._stat(category), guard_rejections={})

    def _stat(self, category: str) -> CategoryStats:
        stat = self._stats.get(category)
        if stat is None:
            stat = self._stats[category] = CategoryStats()
        return stat

    def _fail_open(self, what: str, classification: Classification | None,
                   exc: Exception) -> Miss:
        category = classification.category if classification else self.config.default_category
        self._count(category, "errors")
        log.warning("prismcache: %s failed open (%s: %s)", what, type(exc).__name__, exc)
        return Miss(reason=f"error:{type(exc).__name__}", category=category)


def _decoded(body: bytes | str) -> dict[str, Any]:
    return dict(parse_body(body))


def _expired(entry: Entry, policy: CategoryPolicy, now: float) -> bool:
    # The decision-time TTL (possibly adjusted) may end an entry before its stored expiry.
    ttl = policy.ttl
    return entry.expired(now) or (ttl is not None and now >= entry.created + ttl.total_seconds())


def _admission(config: CacheConfig) -> AdmissionHook | None:
    section = config.sections.get("economics")
    if not isinstance(section, Mapping) or not section.get("admission"):
        return None
    from prismcache.economics import Admission  # only configs that ask for it pay the import

    return Admission.from_config(config)
