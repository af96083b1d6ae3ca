"""The category-aware semantic cache: the library's main entry point.

A lookup runs the steps of ``DESIGN.md``: key the request (partition + exact key), try the
exact tier, classify, embed once, search the partition's category index for the k nearest
entries, decide among them, and on a hit serve the document read from the store. A store
admits a complete response under its category's TTL and evicts within the quotas.

The decision itself (which candidate, if any, may be served: guards, then the verifier) is
:func:`prismcache.decision.decide`; the policy it applies is resolved once per lookup by the
cache's :class:`~prismcache.policies.PolicyResolver`.

The cache fails open: when the store, the embedder or the verifier breaks,
:meth:`SemanticCache.lookup` returns a :class:`~prismcache.results.Miss` with reason
``MissReason.ERROR`` (detail: the exception type), counts it and logs it, and
:meth:`SemanticCache.store` returns a :class:`~prismcache.results.Stored`
that was not admitted. Only a request the cache cannot key raises
(:class:`~prismcache.errors.RequestError`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prismcache import decision
from prismcache.classify import CategoryRouter, Classification, build_classifier
from prismcache.config import CacheConfig, CategoryPolicy, load_config
from prismcache.counters import Counters
from prismcache.decision import Candidate, MissReason, Query
from prismcache.embedders import Embedder, open_embedder
from prismcache.entry import Entry, EntryRef
from prismcache.errors import (
    FAIL_OPEN,
    StoreError,
    VerifierError,
)
from prismcache.eviction import eviction_policy
from prismcache.explain import Explanation
from prismcache.freshness import expired_under, stale_under, with_stale
from prismcache.index import IndexSpec
from prismcache.indexing import IndexPath
from prismcache.policies import PolicyResolver
from prismcache.quotas import Quotas
from prismcache.request import (
    Body,
    PreparedRequest,
    RequestKey,
    context_of,
    prepare_request,
)
from prismcache.results import CategoryStats, Hit, LookupResult, Miss
from prismcache.stores import DocumentStore, open_store, redact_url
from prismcache.sync import Follower
from prismcache.tiers import BudgetStats
from prismcache.verifiers import Verifier, open_verifier
from prismcache.writes import WritePath

if TYPE_CHECKING:
    from prismcache.adaptive import AdaptivePolicy
    from prismcache.economics import EconomicsTracker

__all__ = ["PendingLookup", "SemanticCache", "expired_under", "stale_under"]

log = logging.getLogger("prismcache")

#: ``(category, field, extra=None, *, n=1)``: bumps a counter (or, in a dry run, nothing)
_Counter = Callable[..., None]
#: ``(entry, category stats) -> reason or None``: refuses an entry before it is stored
AdmissionHook = Callable[[Entry, CategoryStats], str | None]
CONTEXT_WIDENING = 4  # x neighbours searched for a follow-up compared by meaning


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingLookup:
    """A lookup the exact tier did not answer (:meth:`SemanticCache.lookup_exact`): finished
    by :meth:`SemanticCache.lookup_rest`, or answered :meth:`busy` without it.

    Attributes:
        request: the request, parsed and keyed.
        shadow: resolve the policy as if the economics had not switched the category off.
        now: the lookup's time, read once.
        classification: the category metadata or rules gave, ``None`` when the embedding
            classifier must decide.
        stale: the exact tier's verbatim entry past its TTL but within ``stale_if_error``.
    """

    request: PreparedRequest
    shadow: bool
    now: float
    classification: Classification | None
    stale: Entry | None

    def busy(self) -> Miss:
        """The miss of a lookup skipped because the embedder cannot keep up (reason
        ``busy``; not counted by the cache: the caller that skipped it counts), naming the
        stale verbatim entry when the category is known."""
        if self.classification is None:
            return Miss(reason=MissReason.BUSY)
        name = self.classification.category
        return with_stale(Miss(reason=MissReason.BUSY, category=name), self.stale, name)


class SemanticCache(WritePath, IndexPath):
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
        policies: PolicyResolver | None = None,
        verifiers: Mapping[str, Verifier | None] | None = None,
    ) -> None:
        """Assemble a cache from its parts and rebuild the in-memory tiers from ``store``
        (or from the snapshot named in the config, then what the store gained since).

        ``policies`` resolves the policy in force per lookup (default: the configured ones,
        with the load-adaptive and economics controllers the config asks for).
        ``verifiers`` maps verifier specs to opened verifiers (default: every spec the
        categories name, opened here); raises :class:`ConfigError` for one that cannot open.
        """
        self.config = config
        self._store = store
        self._embedder = embedder
        self._clock = clock
        self._policies = policies or PolicyResolver.from_config(config, labels=store)
        self._verifiers = dict(verifiers) if verifiers is not None else _open_verifiers(config)
        self._index_spec = IndexSpec(**{k: v for k, v in config.index.items() if k != "max_bytes"})
        self._router = CategoryRouter(config, build_classifier(config.classifier, embedder))
        self._counters = Counters(config.categories)
        self._count = self._counters.count
        self._inflation: dict[str, float] = {}
        self._write_lock = threading.Lock()
        self._next_sweep = 0.0
        #: optional cost-aware admission (``economics.admission`` in the config)
        self.admission: AdmissionHook | None = _admission(config)
        # A shared store's change feed keeps the tiers current; its cursor is taken first.
        self._follower = Follower.of(store)
        self._init_vectors()
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
        adaptive: AdaptivePolicy | None = None,
        economics: EconomicsTracker | None = None,
    ) -> SemanticCache:
        """Open a cache from a YAML path, a mapping, a :class:`CacheConfig`, or ``None`` for
        the embedded default (bundled embedder, SQLite file ``prismcache.db``).

        ``store`` and ``embedder`` override the ones the config names (tests pass in-memory
        ones); ``adaptive`` and ``economics`` the live policy controllers the config's
        ``adaptive:`` and ``economics:`` sections would build (see
        :class:`~prismcache.policies.PolicyResolver`). Raises :class:`~prismcache.errors.ConfigError`,
        :class:`~prismcache.errors.StoreUnavailable` or
        :class:`~prismcache.errors.EmbedderMismatch` when the cache cannot start correctly.
        """
        if not isinstance(config, CacheConfig):
            config = load_config(config)
        embedder = embedder or open_embedder(config.embedder)
        store = store or open_store(config.store)
        try:
            policies = PolicyResolver.from_config(config, adaptive=adaptive, economics=economics,
                                                  labels=store)
            return cls(config, store=store, embedder=embedder, clock=clock, policies=policies)
        except BaseException:
            store.close()
            raise

    # -- lookup --------------------------------------------------------------------------

    def prepare(self, body: Body, *, tenant: str = "default") -> PreparedRequest:
        """Parse and key ``body`` once, for :meth:`lookup` and :meth:`store` to take as it is
        (the proxy prepares while it validates). Raises :class:`RequestError`."""
        return prepare_request(body, tenant=tenant, limits=self.config.limits)

    def lookup(
        self, body: Body | PreparedRequest, *, tenant: str = "default",
        category: str | None = None, shadow: bool = False,
    ) -> LookupResult:
        """Find a stored response that may be served for ``body`` in ``tenant``'s partition.

        ``body`` is a request body or a :class:`PreparedRequest` (then ``tenant`` is the one it
        was prepared for). ``category`` names the category explicitly (else the body's
        ``metadata.prism_category``, the rules, the classifier, the default). ``shadow``
        resolves the policy as if the economics had not switched the category off. Returns a
        :class:`Hit` or a :class:`Miss`; raises only :class:`RequestError` for a body that
        cannot be keyed.
        """
        return self._lookup(self._prepared(body, tenant), category, shadow=shadow, dry=False)[0]

    def explain(
        self, body: Body | PreparedRequest, *, tenant: str = "default",
        category: str | None = None,
    ) -> Explanation:
        """What :meth:`lookup` would answer for ``body`` now, and why, candidate by candidate
        (similarity, the verifier's probability, the outcome and its detail). Read-only: no
        counters, hits or expiries are recorded. Raises :class:`RequestError` as ``lookup``."""
        _, explanation = self._lookup(self._prepared(body, tenant), category, shadow=False,
                                      dry=True)
        assert explanation is not None  # a dry lookup always explains
        return explanation

    def _prepared(self, body: Body | PreparedRequest, tenant: str) -> PreparedRequest:
        return body if isinstance(body, PreparedRequest) else self.prepare(body, tenant=tenant)

    def lookup_exact(
        self, body: Body | PreparedRequest, *, tenant: str = "default",
        category: str | None = None, shadow: bool = False,
    ) -> LookupResult | PendingLookup:
        """The first phase of :meth:`lookup` (same arguments): key the request and try the
        exact tier only, a dict lookup plus, on a hit, one store read. Returns the lookup's
        final result (an exact hit, a bypass, or a failed-open miss), or a
        :class:`PendingLookup` that :meth:`lookup_rest` finishes (or that is answered
        :meth:`PendingLookup.busy` without the model). ``lookup`` is exactly the two phases
        in turn: each lookup is counted once, whichever phase ends it."""
        first = self._exact_phase(self._prepared(body, tenant), category, shadow, dry=False)
        return first if isinstance(first, PendingLookup) else first[0]

    def lookup_rest(self, pending: PendingLookup) -> LookupResult:
        """The rest of a lookup :meth:`lookup_exact` left pending: classify, embed, search and
        decide. Returns a :class:`Hit` or a :class:`Miss`, failing open as :meth:`lookup`."""
        return self._rest_phase(pending, dry=False)[0]

    def _lookup(self, request: PreparedRequest, category: str | None, *, shadow: bool,
                dry: bool) -> tuple[LookupResult, Explanation | None]:
        first = self._exact_phase(request, category, shadow, dry)
        return self._rest_phase(first, dry) if isinstance(first, PendingLookup) else first

    def _exact_phase(self, request: PreparedRequest, category: str | None, shadow: bool,
                     dry: bool) -> tuple[LookupResult, Explanation | None] | PendingLookup:
        key = request.key
        if key.bypass:
            return self._explained(Miss(reason=MissReason.BYPASS, detail=key.bypass,
                                        cacheable=False), None, [], dry)
        now = self._clock()
        # Text-only classification is cheap and needs no store: do it first, so a failure
        # below is counted under the request's category.
        classification = self._router.by_text(key.query, category or key.category)
        count = self._no_count if dry else self._count
        try:
            hit = self._exact_lookup(key, now, count, dry)
        except FAIL_OPEN as exc:
            return self._explained(self._fail_open("lookup", classification, exc, count),
                                   None, [], dry)
        if isinstance(hit, Hit):
            return self._explained(hit, None, [], dry)
        return PendingLookup(request=request, shadow=shadow, now=now,
                             classification=classification, stale=hit)

    def _rest_phase(self, pending: PendingLookup, dry: bool
                    ) -> tuple[LookupResult, Explanation | None]:
        key, now, hit = pending.request.key, pending.now, pending.stale
        classification = pending.classification
        count = self._no_count if dry else self._count
        try:
            vector: np.ndarray | None = None
            if classification is None:
                if self._far(key, dry, hit):
                    return self._explained(self._far_miss(None, count), None, [], dry)
                vector = self._embed(key.query)
                classification = self._router.by_vector(vector)
            name = classification.category
            policy = self._policies.resolve(name, key.model, shadow=pending.shadow)
            count(name, "lookups")
            if not policy.enabled:
                return self._explained(self._miss(name, MissReason.DISABLED, count,
                                                  cacheable=False), policy, [], dry)
            if policy.exact_only or not key.semantic:
                miss = with_stale(self._miss(name, MissReason.EXACT_ONLY, count), hit, name)
                return self._explained(miss, policy, [], dry)
            if key.context is not None and not key.context.semantic \
                    and policy.context == "semantic":
                count(name, "exact_contexts")
            if vector is None:
                if self._far(key, dry, hit):
                    return self._explained(self._far_miss(name, count), policy, [], dry)
                vector = self._embed(key.query)
            return self._semantic_lookup(key, name, policy, vector, now, count, dry, hit)
        except FAIL_OPEN as exc:
            return self._explained(self._fail_open("lookup", classification, exc, count),
                                   None, [], dry)

    def _far(self, key: RequestKey, dry: bool, stale: Entry | None) -> bool:
        """Whether the pre-filter proves nothing near ``key``'s query (so the embedder need
        not run); never for a dry run, a query the memo already holds, nor one whose stale
        verbatim entry the exact tier found (``stale``: the miss must name it)."""
        prefilter = self._tiers.prefilter
        return (prefilter is not None and not dry and key.semantic and stale is None
                and key.query not in self._memo and prefilter.far(key.partition, key.query))

    def _far_miss(self, category: str | None, count: _Counter) -> Miss:
        """The miss of a far lookup: a miss of ``category`` when the request, a rule or the
        default named it without the model (its lookup is counted already); ``None`` when
        only the embedding classifier could (uncounted: its category is not known)."""
        if category is not None:
            count(category, "misses")
        return Miss(reason=MissReason.FAR, category=category)

    def _exact_lookup(self, key: RequestKey, now: float, count: _Counter, dry: bool
                      ) -> Hit | Entry | None:
        """The exact tier's hit; or its verbatim entry when that is past its TTL but within
        ``stale_if_error`` (a stale candidate, never a hit); else ``None``."""
        entry_id = self._tiers.exact(key.exact_key, key.partition)
        if entry_id is None:
            return None
        entry = self._store.get(entry_id)
        if entry is None:
            if not dry:
                self._tiers.drop([EntryRef(id=entry_id, partition=key.partition, category="",
                                           exact_key=key.exact_key)])
            return None
        policy = self._policies.resolve(entry.category, key.model)
        if entry.exact_key != key.exact_key or not policy.enabled:
            return None
        if expired_under(entry, policy, now):
            if not stale_under(entry, policy, now):
                if not dry:
                    self._expire_one(entry)
                return None
            return entry
        count(entry.category, "lookups")
        return self._serve(entry, policy, 1.0, None, "exact", now, count, dry)

    def _semantic_lookup(
        self, key: RequestKey, category: str, policy: CategoryPolicy, vector: np.ndarray,
        now: float, count: _Counter, dry: bool, stale_exact: Entry | None = None,
    ) -> tuple[LookupResult, Explanation | None]:
        verifier = self.verifier_for(policy)
        k = self.config.neighbours
        if key.context is not None and policy.context == "semantic":
            # Follow-ups share their words across conversations ("how long does that take?"):
            # the nearest last turns tie, and the one of a matching context may rank past k.
            k *= CONTEXT_WIDENING
        found = self._tiers.search(key.partition, category, vector, k)
        low, _ = decision.bounds(policy, verifier)
        entries: dict[int, Entry] = {}
        candidates: list[Candidate] = []
        stale: list[Candidate] = []  # past their TTL, within stale_if_error: never hits
        for entry_id, similarity in found:
            if similarity < low and not dry:
                break  # best first: the rest are further still; their documents stay unread
            entry = self._store.get(entry_id)
            if entry is None:  # deleted elsewhere: the vector is stale
                if not dry:
                    self._tiers.drop_vector(key.partition, category, entry_id)
                continue
            if expired_under(entry, policy, now):
                if stale_under(entry, policy, now):
                    stale.append(Candidate(entry_id=entry_id, text=entry.query,
                                           similarity=similarity, vector=entry.vector))
                elif not dry:
                    self._expire_one(entry)
                continue
            entries[entry_id] = entry
            context = context_of(entry.request, limits=self.config.limits)
            candidates.append(Candidate(
                entry_id=entry_id, text=entry.query, similarity=similarity, vector=entry.vector,
                context=context, context_vector=self._context_vector(
                    key.context, context, policy, stored=entry.context_vector)))
        try:
            # The request's own context is embedded only when a candidate's must be compared.
            compared = any(c.context_vector is not None for c in candidates)
            query = Query(text=key.query, vector=vector, context=key.context,
                          context_vector=self._context_vector(key.context, key.context, policy)
                          if compared else None)
            verdict = decision.decide(query, candidates, policy, verifier,
                                      self._policies.entry_cutoffs(key.tenant))
        except VerifierError as exc:
            failed = self._fail_open("verifier", Classification(category, "verifier"), exc,
                                     count)
            return self._explained(failed, policy, candidates, dry)
        if not dry:
            self._count_rejections(category, verdict)
        if verdict.served is not None:
            hit = self._serve(entries[verdict.served], policy, verdict.similarity or 0.0,
                              verdict.probability, "semantic", now, count, dry)
            return self._explained(hit, policy, candidates, dry, verdict)
        best = found[0][1] if found else None
        reason = verdict.reason or MissReason.EMPTY
        if reason is MissReason.EMPTY and best is not None and best < low:
            reason = MissReason.BELOW_THRESHOLD  # the search found some, all too far
        miss = replace(self._miss(category, reason, count, detail=verdict.detail,
                                  similarity=best), vector=vector)
        rejected = [(p, c) for c, (o, p, _) in zip(candidates, verdict.outcomes, strict=False)
                    if o is decision.Outcome.VERIFIER and p is not None]
        if rejected:  # the near candidate a fresh answer can label (prismcache.labels)
            p, grey = max(rejected, key=lambda pc: pc[0])
            miss = replace(miss, grey_entry=int(grey.entry_id),
                           grey_similarity=float(grey.similarity), grey_probability=float(p))
        floor = policy.fallback_threshold  # the near candidate overload.py may serve
        if floor is not None:
            guarded = {c.entry_id for c, (o, _, _) in zip(candidates, verdict.outcomes,
                                                           strict=False)
                       if o in (decision.Outcome.GUARD, decision.Outcome.CONTEXT)}
            for entry_id, similarity in found:
                if similarity >= floor and entry_id not in guarded:
                    miss = replace(miss, near_entry=int(entry_id),
                                   near_similarity=float(similarity))
                    break
        miss = with_stale(miss, stale_exact, category)
        if miss.stale_entry is None and stale and not dry:
            miss = self._stale_candidate(miss, Query(text=key.query, vector=vector), stale,
                                         policy, verifier)
        return self._explained(miss, policy, candidates, dry, verdict)

    def _stale_candidate(self, miss: Miss, query: Query, stale: list[Candidate],
                         policy: CategoryPolicy, verifier: Verifier | None) -> Miss:
        """``miss`` with the stale candidate the decision would have served (guards and
        verifier included), if any: overload.py serves it only on an upstream error."""
        try:
            verdict = decision.decide(query, stale, policy, verifier)
        except VerifierError as exc:  # no stale answer then; the lookup itself stands
            log.warning("stale candidate not verified (%s: %s)", type(exc).__name__, exc)
            return miss
        if verdict.served is None:
            return miss
        return replace(miss, stale_entry=int(verdict.served),
                       stale_similarity=float(verdict.similarity or 0.0))

    def _explained(self, result: LookupResult, policy: CategoryPolicy | None,
                   candidates: list[Candidate], dry: bool,
                   verdict: decision.Decision | None = None,
                   ) -> tuple[LookupResult, Explanation | None]:
        if not dry:
            return result, None
        return result, Explanation.of(result, policy, candidates, verdict)

    def _count_rejections(self, category: str, verdict: decision.Decision) -> None:
        guarded = [d for o, _, d in verdict.outcomes if o is decision.Outcome.GUARD]
        verified = sum(1 for o, p, _ in verdict.outcomes
                       if o is decision.Outcome.VERIFIER and p is not None)
        if guarded or verified:
            self._counters.rejections(category, guarded, verified)
        contexts = sum(1 for o, _, _ in verdict.outcomes if o is decision.Outcome.CONTEXT)
        if contexts:
            self._count(category, "context_rejections", n=contexts)

    def _serve(self, entry: Entry, policy: CategoryPolicy, similarity: float,
               probability: float | None, tier: str, now: float, count: _Counter,
               dry: bool) -> Hit:
        if not dry:
            entry.hits += 1
            priority = eviction_policy(policy.eviction).priority(
                entry, now=now, inflation=self._inflation.get(entry.category, 0.0))
            try:
                self._store.touch(entry.id, now=now, priority=priority)
            except StoreError as exc:  # the document was read: serving it is still correct
                log.warning("could not record a hit on entry %d: %s", entry.id, exc)
        count(entry.category, "hits", "exact_hits" if tier == "exact" else None)
        return Hit(entry_id=entry.id, similarity=similarity, category=entry.category,
                   response=entry.response, chunks=entry.chunks, age=max(0.0, now - entry.created),
                   tier=tier, probability=probability)  # type: ignore[arg-type]

    def _miss(self, category: str, reason: MissReason, count: _Counter, *, detail: str = "",
              similarity: float | None = None, cacheable: bool = True) -> Miss:
        count(category, "misses")
        return Miss(reason=reason, detail=detail, category=category, similarity=similarity,
                    cacheable=cacheable)

    def verifier_for(self, policy: CategoryPolicy) -> Verifier | None:
        """The verifier ``policy`` names, opened once by this cache (``None`` for ``none``):
        what its lookups use, for callers that decide beside it (semantic coalescing)."""
        return self._verifiers.get(policy.verifier)

    def policy_for(self, category: str, model: str = "") -> CategoryPolicy:
        """The policy a decision about ``category`` (for a request to ``model``) uses now, as
        the cache's :class:`~prismcache.policies.PolicyResolver` resolves it."""
        return self._policies.resolve(category, model)

    @property
    def policies(self) -> PolicyResolver:
        """The resolver of the policies in force (configured, load-adaptive, economics)."""
        return self._policies

    def stats(self) -> dict[str, CategoryStats]:
        """Per-category counters since opening, with the entries and bytes the store holds."""
        try:
            usage = self._store.usage()
        except StoreError as exc:
            log.warning("store usage unavailable: %s", exc)
            usage = {}
        stats = self._counters.merged(usage)
        for name, borrowed in Quotas.of(self.config).borrowed(usage).items():
            stats[name].borrowed_entries = borrowed.entries
            stats[name].borrowed_bytes = borrowed.bytes
        return stats

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
    def index_budget(self) -> BudgetStats | None:
        """Counters of the index memory budget (``index.max_bytes``), ``None`` without one."""
        return self._tiers.budget_stats()

    @property
    def reads_local(self) -> bool:
        """Whether the store's reads are served in this process (memory, SQLite: their
        ``local_reads``), so that :meth:`lookup_exact` costs less than a hop to a thread;
        ``False`` for a store read over the network (Redis) or one that does not say."""
        return bool(getattr(self._store, "local_reads", False))

    @property
    def document_store(self) -> DocumentStore:
        """The document store (the source of truth)."""
        return self._store

    # -- internals -------------------------------------------------------------------------

    def _fail_open(self, what: str, classification: Classification | None,
                   exc: Exception, count: _Counter) -> Miss:
        category = classification.category if classification else self.config.default_category
        count(category, "errors")
        if count is not self._no_count:  # a dry run (explain) logs nothing
            log.warning("%s failed open (%s: %s)", what, type(exc).__name__, exc)
        return Miss(reason=MissReason.ERROR, detail=type(exc).__name__, category=category)

    @staticmethod
    def _no_count(category: str, field: str, extra: str | None = None, *, n: int = 1) -> None:
        """The counter of a dry run (:meth:`explain`): counts nothing."""


def _open_verifiers(config: CacheConfig) -> dict[str, Verifier | None]:
    """Every verifier the categories name, opened once and shared between them."""
    specs = {policy.verifier for policy in config.categories.values()}
    return {spec: open_verifier(spec) for spec in sorted(specs)}


def _admission(config: CacheConfig) -> AdmissionHook | None:
    section = config.sections.get("economics")
    if not isinstance(section, Mapping) or not section.get("admission"):
        return None
    from prismcache.economics import Admission  # only configs that ask for it pay the import

    return Admission.from_config(config)
