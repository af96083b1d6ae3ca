"""``prismcache eval``: how well the cache's decision separates labelled pairs.

A pair is served when the cache would serve the candidate's stored answer to the query: the
category enabled, and either the same conversation turns and the same normalised text (exact
tier) or what :func:`prismcache.decision.decide` rules for the candidate under the category's
policy — the very function lookups call, conversation context rule included (a pair whose
contexts that rule tells apart scores ``-inf``). Results at the configured policies are
reported three ways:
the full decision (``decision``: guards and the category's verifier), without the verifier
(``guarded``: cosine threshold and guards) and cosine alone (``unguarded``); the threshold
sweep varies cosine alone, with and without the guards.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prismcache import guards
from prismcache.config import CacheConfig, CategoryPolicy
from prismcache.decision import Candidate, Query, context_check, context_vector, decide
from prismcache.evaluation import metrics
from prismcache.evaluation.records import Pair, last_user_turn
from prismcache.evaluation.vectors import EmbeddingTable
from prismcache.request import Context, RequestLimits, context_of, normalise
from prismcache.verifiers import Verifier, open_verifier

__all__ = ["ScoredPairs", "evaluate", "score_pairs"]


@dataclass(frozen=True, slots=True)
class ScoredPairs:
    """Per-pair arrays, aligned with the input pairs.

    ``scores`` is the cosine similarity, ``+inf`` when the exact tier serves the pair and
    ``-inf`` when nothing can (different context, disabled category, exact-only policy);
    ``guard`` is the first guard that rejects the pair (``None`` when all pass); ``served``
    and ``served_guarded`` say whether the decision serves the pair with and without the
    category's verifier; ``probability`` is the verifier's (NaN where it did not run).
    """

    categories: list[str]
    kinds: list[str]
    labels: np.ndarray
    scores: np.ndarray
    guard: list[str | None]
    served: np.ndarray
    served_guarded: np.ndarray
    probability: np.ndarray

    @property
    def guards_pass(self) -> np.ndarray:
        """Boolean array: no guard rejects the pair."""
        return np.array([g is None for g in self.guard], dtype=bool)


def score_pairs(pairs: Sequence[Pair], config: CacheConfig, table: EmbeddingTable,
                verifiers: dict[str, Verifier | None] | None = None) -> ScoredPairs:
    """Embed (through ``table``) and score every pair under ``config``'s policies; the
    verifiers the policies name are opened unless given in ``verifiers`` (spec -> verifier)."""
    split = [(last_user_turn(p.query), last_user_turn(p.candidate)) for p in pairs]
    contexts = [(_context(p.query, config.limits), _context(p.candidate, config.limits))
                for p in pairs]
    table.ensure([text for (q, _), (c, _) in split for text in (q, c)]
                 + [t for pair in contexts for ctx in pair if ctx for t in ctx.turns])
    verifiers = dict(verifiers or {})
    scores = np.empty(len(pairs))
    served = np.zeros(len(pairs), dtype=bool)
    served_guarded = np.zeros(len(pairs), dtype=bool)
    probability = np.full(len(pairs), np.nan)
    rejected: list[str | None] = []
    limit = config.limits.max_semantic_chars
    for i, (pair, ((q, _), (c, _)), (q_ctx, c_ctx)) in enumerate(
            zip(pairs, split, contexts, strict=True)):
        policy = config.policy(pair.category)
        rejected.append(guards.check(q, c, policy.guards))
        query = Query(text=q, vector=table.vector(q), context=q_ctx,
                      context_vector=_context_vector(table, q_ctx, policy))
        candidate = [Candidate(entry_id=1, text=c, similarity=1.0, vector=table.vector(c),
                               context=c_ctx, context_vector=_context_vector(table, c_ctx,
                                                                             policy))]
        same_turns = (q_ctx.key if q_ctx else None) == (c_ctx.key if c_ctx else None)
        if not policy.enabled or (not same_turns
                                  and context_check(query, candidate[0], policy) is not None):
            scores[i] = -np.inf
        elif same_turns and normalise(q) == normalise(c):
            scores[i] = np.inf
            served[i] = served_guarded[i] = True
        elif policy.exact_only or len(q) > limit or len(c) > limit:
            scores[i] = -np.inf
        else:
            qv, cv = table.vector(q), table.vector(c)
            scores[i] = float(np.dot(qv.astype(np.float64), cv.astype(np.float64)))
            if policy.verifier not in verifiers:
                verifiers[policy.verifier] = open_verifier(policy.verifier)
            candidate = [dataclasses.replace(candidate[0], similarity=scores[i])]
            verdict = decide(query, candidate, policy, verifiers[policy.verifier])
            served[i] = verdict.hit
            if verdict.outcomes and verdict.outcomes[0][1] is not None:
                probability[i] = verdict.outcomes[0][1]
            served_guarded[i] = decide(query, candidate, policy).hit
    return ScoredPairs(categories=[p.category for p in pairs],
                       kinds=[p.kind or "unlabelled" for p in pairs],
                       labels=np.array([p.same for p in pairs], dtype=bool),
                       scores=scores, guard=rejected, served=served,
                       served_guarded=served_guarded, probability=probability)


def _context(value: Any, limits: RequestLimits) -> Context | None:
    return None if isinstance(value, str) else context_of({"messages": value}, limits=limits)


def _context_vector(table: EmbeddingTable, context: Context | None,
                    policy: CategoryPolicy) -> np.ndarray | None:
    if context is None or policy.context != "semantic" or not context.semantic:
        return None
    return context_vector(table.matrix(list(context.turns)), context)


def _at(served: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    tp = int((served & labels).sum())
    row = metrics._row(0.0, tp, int(served.sum()) - tp, int(labels.sum()), len(labels))
    del row["threshold"]
    return row


def _group(s: ScoredPairs, idx: np.ndarray, thresholds: np.ndarray, target: float,
           kinds: list[str]) -> dict[str, Any]:
    scores, labels = s.scores[idx], s.labels[idx]
    passes, everything = s.guards_pass[idx], np.ones(len(idx), dtype=bool)
    current = thresholds[idx]
    guarded_scores = np.where(passes, scores, -np.inf)
    by_guard: dict[str, Counter[str]] = defaultdict(Counter)
    above = scores >= current
    for j in np.flatnonzero(above & ~passes):
        name = s.guard[idx[j]]
        by_guard[str(name)]["same" if labels[j] else "different"] += 1
    kind_rows: dict[str, dict[str, Any]] = {}
    served, guarded = s.served[idx], s.served_guarded[idx]
    for kind in sorted(set(kinds)):
        mask = np.array([k == kind for k in kinds])
        kind_rows[kind] = {"pairs": int(mask.sum()), "same": int((mask & labels).sum()),
                           "served": int((mask & served).sum()),
                           "served_rate": float((mask & served).sum() / mask.sum()),
                           "served_rate_without_verifier": float((mask & guarded).sum()
                                                                 / mask.sum())}
    choices = {}
    for name, eligible in (("guarded", passes), ("unguarded", everything)):
        choice = metrics.best_threshold(scores, eligible, labels, target, bound="point")
        choices[name] = None if choice is None else {
            "threshold": choice.threshold, "precision": choice.precision,
            "recall": choice.recall}
    return {
        "pairs": len(idx), "positives": int(labels.sum()), "negatives": int((~labels).sum()),
        "roc_auc": metrics.roc_auc(np.where(np.isfinite(scores), scores,
                                            np.sign(scores) * 2), labels),
        "roc_auc_guarded": metrics.roc_auc(np.where(np.isfinite(guarded_scores),
                                                    guarded_scores,
                                                    np.sign(guarded_scores) * 2), labels),
        "at_target": {"target_precision": target, **choices},
        "at_configured": {"decision": _at(served, labels), "guarded": _at(guarded, labels),
                          "unguarded": _at(scores >= current, labels)},
        "guard_rejections_above_threshold": {k: dict(v) for k, v in sorted(by_guard.items())},
        "kinds": kind_rows,
        "sweep": metrics.sweep(scores, passes, labels),
        "sweep_unguarded": metrics.sweep(scores, everything, labels),
    }


def evaluate(pairs: Sequence[Pair], config: CacheConfig, table: EmbeddingTable, *,
             target_precision: float = 0.95) -> dict[str, Any]:
    """Metrics overall and per category: ``{"overall": {...}, "categories": {name: {...}},
    "embedder": id, "target_precision": p}``. Each group holds ``pairs``, ``positives``,
    ``negatives``, ``roc_auc`` (cosine alone), ``roc_auc_guarded``, ``at_target`` (lowest
    threshold whose measured precision meets the target, with and without guards),
    ``at_configured`` (each pair at its category's configured threshold, with and without
    guards), ``guard_rejections_above_threshold``, ``kinds`` and the ``sweep`` rows
    (``sweep_unguarded`` without guards). Raises ``ValueError`` on an empty input."""
    if not pairs:
        raise ValueError("no pairs to evaluate")
    scored = score_pairs(pairs, config, table)
    thresholds = np.array([config.policy(c).threshold for c in scored.categories])
    everything = np.arange(len(pairs))
    categories = {}
    for name in sorted(set(scored.categories)):
        idx = np.array([i for i, c in enumerate(scored.categories) if c == name])
        group = _group(scored, idx, thresholds, target_precision,
                       [scored.kinds[i] for i in idx])
        categories[name] = {"configured_threshold": config.policy(name).threshold, **group}
    return {"embedder": table.embedder.id, "target_precision": target_precision,
            "overall": _group(scored, everything, thresholds, target_precision, scored.kinds),
            "categories": categories}
