"""``prismcache replay``: run a trace through a fresh in-memory cache and count what it serves.

Requests are replayed in order on a fake clock (``t`` of each line). A miss stores the query
with its ``answer_key`` as the response; a hit is correct when the serving entry was stored for
the same ``answer_key``. Vectors come precomputed (:mod:`prismcache.evaluation.vectors`); every
embedder call the cache makes is counted and charged one draw from the real embedder's measured
single-query latency, so the miss overhead stays honest while 100k requests replay in minutes.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from prismcache.cache import SemanticCache
from prismcache.classify import load_examples
from prismcache.config import CacheConfig
from prismcache.evaluation.metrics import percentile
from prismcache.evaluation.records import TraceLine, last_user_turn
from prismcache.evaluation.vectors import EmbeddingTable, PrecomputedEmbedder
from prismcache.labels import probe_of
from prismcache.request import context_of
from prismcache.results import Hit, Miss, MissReason
from prismcache.stores.memory import MemoryStore

__all__ = ["COMPLETION_TOKENS", "Economics", "Online", "prepare_config", "replay"]

T0 = 1_800_000_000.0
#: assumed completion tokens of one upstream answer, per category (``default`` for the rest)
COMPLETION_TOKENS: dict[str, int] = {"code": 600, "creative": 500, "math": 300, "factual": 60,
                                     "support": 150, "default": 200}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Economics:
    """What one upstream call costs, per category. Unset categories fall back to the policy's
    ``upstream_latency`` and ``price_per_1k_tokens`` x :data:`COMPLETION_TOKENS`."""

    latency: Mapping[str, float] = dataclasses.field(default_factory=dict)
    price: Mapping[str, float] = dataclasses.field(default_factory=dict)
    tokens: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def upstream(self, category: str, config: CacheConfig) -> tuple[float, float]:
        """(seconds, USD) one upstream call of ``category`` costs."""
        policy = config.policy(category)
        seconds = self.latency.get(category, self.latency.get("default", policy.upstream_latency))
        tokens = {**COMPLETION_TOKENS, **self.tokens}
        usd = self.price.get(category, self.price.get("default", policy.price_per_1k_tokens
                             * tokens.get(category, tokens["default"]) / 1000))
        return float(seconds), float(usd)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Online:
    """``replay --online``: learn each category's verifier cut-off while replaying
    (:mod:`prismcache.calibration`). Labels come only from grey-zone misses and explored
    grey-zone hits, with ``answer_key`` equality standing in for answer agreement; an explored
    request is a miss (one upstream call). ``explore_rate`` ``None`` keeps the policies'."""

    target_precision: float = 0.99
    explore_rate: float | None = None
    #: learn per-entry cut-offs too (``False``: the category rule alone, for comparison)
    per_entry: bool = True


def prepare_config(config: CacheConfig, categories: Sequence[str], *,
                   threshold: float | None = None, online: Online | None = None) -> CacheConfig:
    """``config`` with a memory store, no snapshot, a policy for every name in ``categories``
    (a copy of the default category's when missing) and, if given, ``threshold`` everywhere
    and ``online``'s target precision (and explore rate) everywhere."""
    policies = dict(config.categories)
    for name in categories:
        policies.setdefault(name, config.policy(name))
    if threshold is not None:
        policies = {n: dataclasses.replace(p, threshold=threshold) for n, p in policies.items()}
    if online is not None:
        rate = {} if online.explore_rate is None else {"explore_rate": online.explore_rate}
        policies = {n: dataclasses.replace(p, target_precision=online.target_precision, **rate)
                    for n, p in policies.items()}
    return dataclasses.replace(config, store="memory://", snapshot=None, categories=policies)


def _response(answer_key: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer_key}}]}


def _body(line: TraceLine) -> dict[str, Any]:
    messages = ([{"role": "user", "content": line.query}] if isinstance(line.query, str)
                else line.query)
    return {"model": "replay", "messages": messages}


class _Group:
    def __init__(self) -> None:
        self.requests = self.hits = self.exact = self.false_hits = self.oracle = 0
        self.explored = 0
        self.hit_s: list[float] = []
        self.miss_s: list[float] = []
        self.lookup_s: list[float] = []
        self.reasons: Counter[str] = Counter()

    def report(self, upstream_s: float, usd: float) -> dict[str, Any]:
        n = max(self.requests, 1)
        hit_mean = float(np.mean(self.hit_s)) if self.hit_s else 0.0
        miss_mean = float(np.mean(self.miss_s)) if self.miss_s else 0.0
        net = upstream_s - hit_mean
        ms = {q: (None if v is None else v * 1000) for q, v in
              (("p50", percentile(self.miss_s, 50)), ("p99", percentile(self.miss_s, 99)))}
        return {
            "requests": self.requests, "hits": self.hits, "exact_hits": self.exact,
            "semantic_hits": self.hits - self.exact, "false_hits": self.false_hits,
            "hit_rate": self.hits / n, "false_hit_rate": self.false_hits / n,
            "precision": (self.hits - self.false_hits) / self.hits if self.hits else None,
            "oracle_hit_rate": self.oracle / n,
            "explored": self.explored, "explored_rate": self.explored / n,
            "lookup_ms": {"p50": _ms(percentile(self.lookup_s, 50)),
                          "p99": _ms(percentile(self.lookup_s, 99))},
            "miss_overhead_ms": {**ms, "mean": miss_mean * 1000},
            "hit_latency_ms": {"p50": _ms(percentile(self.hit_s, 50)),
                               "p99": _ms(percentile(self.hit_s, 99)), "mean": hit_mean * 1000},
            "upstream_latency_s": upstream_s, "price_per_request_usd": usd,
            "latency_saved_s": self.hits * net - len(self.miss_s) * miss_mean,
            "money_saved_usd": self.hits * usd,
            "break_even_hit_rate": miss_mean / net if net > 0 else None,
            "miss_reasons": dict(sorted(self.reasons.items())),
        }


def _charge(rng: np.random.Generator, draws: np.ndarray, calls: int) -> float:
    """Seconds ``calls`` real embedder calls would have taken (drawn from measurements)."""
    return float(rng.choice(draws, size=calls).sum()) if calls else 0.0


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def replay(trace: Sequence[TraceLine], config: CacheConfig, table: EmbeddingTable, *,
           use_trace_categories: bool = False, embed_latency: np.ndarray | None = None,
           economics: Economics | None = None, threshold: float | None = None,
           seed: int = 0, online: Online | None = None) -> dict[str, Any]:
    """Replay ``trace`` through a fresh cache opened with ``config`` (its store replaced by
    ``memory://``); vectors come from ``table`` (missing ones are embedded first).

    ``use_trace_categories`` passes each line's ``category`` to the cache (else the rules and
    the classifier decide); results are grouped by the line's category when it has one.
    ``embed_latency`` holds measured seconds per real embedder call, one of which is drawn per
    call the cache makes (none: embedding is free). ``threshold`` overrides every category's.
    ``online`` learns the cut-offs while replaying (:class:`Online`; adds ``"online"``).
    Returns ``{"overall": {...}, "categories": {...}, "requests", "seconds", "thresholds"}``.
    """
    names = sorted({line.category for line in trace if line.category})
    config = prepare_config(config, names, threshold=threshold, online=online)
    texts = [last_user_turn(line.query)[0] for line in trace]
    if use_trace_categories:  # the cache never embeds what only the exact tier may match
        texts = [text for text in texts if len(text) <= config.limits.max_semantic_chars]
    # ... and multi-turn requests' earlier user turns, which a semantic context rule embeds
    texts += [turn for line in trace if not isinstance(line.query, str)
              for turn in getattr(context_of({"messages": line.query}), "turns", ())]
    if config.classifier.examples is not None:
        texts += [text for text, _ in load_examples(config.classifier.examples)]
    table.ensure(texts)
    embedder = PrecomputedEmbedder(table)
    clock = _Clock()
    cache = SemanticCache.open(config, store=MemoryStore(), embedder=embedder, clock=clock)
    rng = np.random.default_rng(seed)
    draws = embed_latency if embed_latency is not None and len(embed_latency) else np.zeros(1)
    keys: dict[int, str] = {}
    if online is not None and not online.per_entry:
        from prismcache.calibration import Calibrator  # calibration imports evaluation.metrics
        cache.policies.calibration = Calibrator(config, max_entries=0)
    learner = _Learner(cache, keys, seed) if online is not None else None
    cached: set[tuple[str, str]] = set()
    groups: dict[str, _Group] = defaultdict(_Group)
    started = time.perf_counter()
    for i, line in enumerate(trace):
        clock.now = T0 + (line.t if line.t is not None else i * 0.1)
        tenant = line.tenant or "default"
        body = _body(line)
        explicit = line.category if use_trace_categories else None
        calls = embedder.calls
        t = time.perf_counter()
        result = cache.lookup(body, tenant=tenant, category=explicit)
        lookup = time.perf_counter() - t + _charge(rng, draws, embedder.calls - calls)
        group_name = line.category or result.category or config.default_category
        totals, group = groups["\x00overall"], groups[group_name]
        oracle = (tenant, line.answer_key) in cached
        elapsed = lookup
        explored = learner is not None and learner.learn(i, result, line, tenant)
        if explored:
            result = Miss(reason=MissReason.EXPLORED, category=result.category)
        if result.hit:
            wrong = keys.get(result.entry_id) != line.answer_key
        else:
            calls = embedder.calls
            t = time.perf_counter()
            stored = cache.store(body, _response(line.answer_key), tenant=tenant,
                                 category=explicit)
            elapsed += time.perf_counter() - t + _charge(rng, draws, embedder.calls - calls)
            if stored.entry_id is not None:
                keys[stored.entry_id] = line.answer_key
                cached.add((tenant, line.answer_key))
        for g in (totals, group):
            g.requests += 1
            g.lookup_s.append(lookup)
            g.oracle += oracle
            g.explored += explored
            if result.hit:
                g.hits += 1
                g.exact += result.tier == "exact"
                g.false_hits += wrong
                g.hit_s.append(elapsed)
            else:
                g.miss_s.append(elapsed)
                g.reasons[result.label] += 1
    seconds = time.perf_counter() - started
    cache.close()
    economics = economics or Economics()
    categories = {name: groups[name].report(*economics.upstream(name, config))
                  for name in sorted(groups) if name != "\x00overall"}
    overall = _overall(groups["\x00overall"], categories)
    if online is None:  # the shape of a plain replay stays as it was
        for report in (overall, *categories.values()):
            del report["explored"], report["explored_rate"]
    out = {"requests": len(trace), "seconds": seconds, "use_trace_categories":
           use_trace_categories, "thresholds": {n: p.threshold for n, p in
                                                sorted(config.categories.items())},
           "overall": overall, "categories": categories}
    if learner is not None and online is not None:
        out["online"] = learner.report(online)
    return out


def _overall(total: _Group, categories: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Overall metrics; upstream latency and price are the request-weighted means."""
    n = max(total.requests, 1)
    upstream = sum(c["upstream_latency_s"] * c["requests"] for c in categories.values()) / n
    usd = sum(c["price_per_request_usd"] * c["requests"] for c in categories.values()) / n
    report = total.report(upstream, usd)
    report["money_saved_usd"] = sum(c["money_saved_usd"] for c in categories.values())
    return report


class _Learner:
    """Labels for ``replay --online``: a grey-zone miss is labelled with its candidate; a
    grey-zone hit is explored (not served) ``explore_rate`` of the time and labelled."""

    def __init__(self, cache: SemanticCache, keys: Mapping[int, str], seed: int) -> None:
        calibrator = cache.policies.calibration
        assert calibrator is not None  # prepare_config set a target precision everywhere
        self.cache, self.calibrator, self.keys = cache, calibrator, keys
        self.rng = np.random.default_rng(seed + 1)
        self.labels: Counter[str] = Counter()
        self.timeline: dict[str, list[tuple[int, float]]] = {}
        self.entries: list[tuple[int, int]] = [(0, 0)]  # (request, entries with own cut-off)

    def learn(self, i: int, result: Hit | Miss, line: TraceLine, tenant: str) -> bool:
        """Record the label ``result`` gives (if any); whether it was explored."""
        category = result.category or ""
        probe = probe_of(result, self.cache.policy_for(category), tenant=tenant,
                         query=last_user_turn(line.query)[0], explore=self.rng.random)
        if probe is None:
            return False
        entry = self.cache.document_store.get(probe.entry_id)
        same = self.keys.get(probe.entry_id) == line.answer_key
        self.calibrator.record(probe.label("" if entry is None else entry.query, same,
                                           t=float(i)))
        source = probe.source
        self.labels[f"{source}:{'same' if same else 'different'}"] += 1
        cutoff = self.calibrator.cutoff(category)
        steps = self.timeline.setdefault(category, [(0, self.cache.config.policy(category)
                                                     .cutoff)])
        if cutoff is not None and cutoff != steps[-1][1]:
            steps.append((i, cutoff))
        if self.calibrator.adjusted_entries != self.entries[-1][1]:
            self.entries.append((i, self.calibrator.adjusted_entries))
        return source == "explored"

    def report(self, online: Online) -> dict[str, Any]:
        """Labels by source, the cut-off steps per category, the number of entries with a
        cut-off of their own over time, the calibrator's final state."""
        return {"target_precision": online.target_precision, "labels": dict(self.labels),
                "cutoffs": {c: [list(s) for s in steps] for c, steps in
                            sorted(self.timeline.items())},
                "entries": [list(s) for s in self.entries],
                "calibration": self.calibrator.as_json()}


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now
