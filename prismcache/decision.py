"""The hit/miss decision, in one place: candidates in, a verdict out.

Everything that decides whether a stored answer may be served for a request lives here, as
pure functions of their arguments (no store, no index, no clock of their own). The cache
(:class:`~prismcache.SemanticCache`), ``prismcache eval``, ``replay`` and ``calibrate`` all
call :func:`decide`, so the rule measured is the rule served.

A semantic decision looks at the ``k`` nearest candidates of the request's partition and
category, best cosine first, and sorts each into one of three zones of its category's policy:

=============================  ================================================================
zone                           what happens
=============================  ================================================================
cosine < ``verify_low``         rejected: too far (``below-threshold``)
``verify_low`` <= cosine        the **verifier** gives the probability that the candidate's
< ``verify_high``               answer serves the query; served when it reaches ``cutoff``
cosine >= ``verify_high``       served without the verifier (near-verbatim), guards permitting,
                               unless the two texts share content words in another order
                               (:func:`~prismcache.verifiers.features.reordered`: swapped
                               roles, "18 in California, 2 in Nevada" / "18 in Nevada, 2 in
                               California"); then the verifier decides as in the grey zone
=============================  ================================================================

A request with a conversation before its last user turn (a :class:`~prismcache.request.Context`)
is compared on that context first, by its category's ``context`` rule (:func:`context_check`):
``exact`` needs the same turns byte for byte; ``semantic`` needs the two contexts' embeddings
within ``context_threshold`` and the lexical guards to pass on the two conversations' text. A
request without a context never matches an entry with one, nor the other way round. A context
that cannot be compared by meaning (tool turns, a user turn past the embedder's window) is
compared exactly whatever the category says.

Hard **guards** (:mod:`prismcache.guards`) run on every candidate of every zone first. Among the
candidates that may be served, the one with the highest probability wins (the upper zone counts
as probability 1); ties go to the higher cosine. With the verifier ``none`` the grey zone is
empty and the rule is the classic one: ``cosine >= threshold`` plus the guards.

>>> from prismcache.config import CategoryPolicy
>>> policy = CategoryPolicy(threshold=0.9, verifier="none", guards=("negation",))
>>> q = Query(text="cancel my plan")
>>> decide(q, [Candidate(entry_id=1, text="don't cancel my plan", similarity=0.95)],
...        policy).reason
<MissReason.GUARD: 'guard'>
>>> decide(q, [Candidate(entry_id=2, text="cancel my plan please", similarity=0.95)],
...        policy).served
2
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from prismcache import guards
from prismcache.verifiers.features import reordered

if TYPE_CHECKING:
    from prismcache.config import CategoryPolicy
    from prismcache.request import Context
    from prismcache.verifiers.base import Verifier

__all__ = ["CONTEXT_GUARDS", "Candidate", "Decision", "MissReason", "Outcome", "Query",
           "context_check", "context_embedding", "context_vector", "decide"]

#: the guards that compare two conversations' earlier turns (of those the policy enables):
#: a different name, number, negation or opposite anywhere in them changes what a follow-up
#: ("cancel it", "and in euros?") refers to. ``question`` and ``scope`` are left out: the
#: earlier turns are not the question being asked.
CONTEXT_GUARDS = ("numbers", "negation", "entities", "antonyms")


class MissReason(StrEnum):
    """Why a lookup missed. The value is stable (metrics, headers, JSON reports); what varies
    goes in :attr:`~prismcache.results.Miss.detail`."""

    EMPTY = "empty"  #: the partition holds no candidate of the category
    BELOW_THRESHOLD = "below-threshold"  #: every candidate is below the lower bound
    GUARD = "guard"  #: a guard rejected every candidate near enough (detail: the guard)
    CONTEXT = "context"  #: every candidate near enough was of another conversation context
    VERIFIER = "verifier"  #: the verifier rejected every grey-zone candidate (detail: best p)
    DISABLED = "disabled"  #: the category is switched off
    EXACT_ONLY = "exact-only"  #: only verbatim repeats may be served for this request
    BYPASS = "bypass"  #: the request must neither be served nor stored (detail: why)
    ERROR = "error"  #: the cache failed open (detail: the exception type)
    ECONOMICS_OFF = "economics-off"  #: the economics disabled the category
    SHADOW_HIT = "shadow-hit"  #: disabled category, shadow lookup would have hit
    SHADOW_MISS = "shadow-miss"  #: disabled category, shadow lookup would have missed
    EXPLORED = "explored"  #: a grey-zone hit sent upstream to be labelled (prismcache.labels)
    FAR = "far"  #: the static pre-filter found nothing near: the embedder did not run
    BUSY = "busy"  #: the embedder's queue was over the proxy's lookup budget: not looked up


class Outcome(StrEnum):
    """What the decision made of one candidate (see :class:`Decision.outcomes`)."""

    SERVED = "served"
    ACCEPTED = "accepted"  #: could have been served, another candidate won
    BELOW = "below-threshold"
    CONTEXT = "context"
    GUARD = "guard"
    VERIFIER = "verifier"


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """The request side of a decision: the last user turn (and, for the verifier, its
    vector), and the conversation before it with its embedding (:func:`context_vector`) when
    there is one."""

    text: str
    vector: np.ndarray | None = None
    context: Context | None = None
    context_vector: np.ndarray | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """One stored entry near the query: its id, its query text and cosine similarity (and
    its vector, for verifiers that need it), and its conversation context as :class:`Query`'s."""

    entry_id: int
    text: str
    similarity: float
    vector: np.ndarray | None = None
    context: Context | None = None
    context_vector: np.ndarray | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The verdict on a list of candidates.

    Attributes:
        served: the entry id to serve, or ``None`` for a miss.
        similarity: cosine of the served candidate, else the best cosine seen (or ``None``).
        probability: the verifier's probability for the served candidate (``1.0`` above the
            upper bound, ``None`` when no verifier ran).
        reason: why it missed (``None`` on a hit).
        detail: the guard's name, or the best rejected probability, for a miss.
        outcomes: per candidate, in the order given: ``(outcome, probability or None,
            detail)`` — what ``explain`` shows an operator.
    """

    served: int | None
    similarity: float | None = None
    probability: float | None = None
    reason: MissReason | None = None
    detail: str = ""
    outcomes: tuple[tuple[Outcome, float | None, str], ...] = field(default=())

    @property
    def hit(self) -> bool:
        """Whether a candidate is served."""
        return self.served is not None


def bounds(policy: CategoryPolicy, verifier: Verifier | None) -> tuple[float, float]:
    """The ``(lower, upper)`` cosine bounds of ``policy``'s grey zone. Without a verifier
    both are the policy's ``threshold`` (no grey zone)."""
    if verifier is None:
        return policy.threshold, policy.threshold
    return policy.verify_low, policy.verify_high


def decide(query: Query, candidates: Sequence[Candidate], policy: CategoryPolicy,
           verifier: Verifier | None = None,
           entry_cutoffs: Mapping[int, float] | None = None) -> Decision:
    """Decide which of ``candidates`` (best cosine first) may answer ``query`` under
    ``policy``; ``verifier`` scores the grey zone (``None``: cosine and guards only).
    ``entry_cutoffs`` (entry id -> cut-off, learned per entry of the request's tenant by
    :mod:`prismcache.calibration`) replaces ``policy.cutoff`` for those candidates only.

    Pure: no I/O, no clock; the caller has already dropped candidates that expired or whose
    document is gone. Raises whatever the verifier raises (callers fail open).
    """
    if not candidates:
        return Decision(served=None, reason=MissReason.EMPTY)
    low, high = bounds(policy, verifier)
    outcomes: list[tuple[Outcome, float | None, str]] = []
    grey: list[int] = []
    for candidate in candidates:
        if candidate.similarity < low:
            outcomes.append((Outcome.BELOW, None, ""))
            continue
        if query.context is not None or candidate.context is not None:
            rejected = context_check(query, candidate, policy)
            if rejected is not None:
                outcomes.append((Outcome.CONTEXT, None, rejected))
                continue
        rejected = guards.check(query.text, candidate.text, policy.guards)
        if rejected is not None:
            outcomes.append((Outcome.GUARD, None, rejected))
            continue
        if candidate.similarity >= high and (verifier is None
                                             or not reordered(query.text, candidate.text)):
            outcomes.append((Outcome.ACCEPTED, 1.0 if verifier is not None else None, ""))
        else:
            grey.append(len(outcomes))
            outcomes.append((Outcome.VERIFIER, None, ""))
    if grey and verifier is not None:
        scored = verifier.probabilities(query, [candidates[i] for i in grey])
        for i, p in zip(grey, scored, strict=True):
            p = float(p)
            cutoff = (policy.cutoff if not entry_cutoffs
                      else entry_cutoffs.get(candidates[i].entry_id, policy.cutoff))
            accepted = p >= cutoff
            outcomes[i] = (Outcome.ACCEPTED if accepted else Outcome.VERIFIER, p,
                           "" if accepted else f"p={p:.3f} < {cutoff:g}")
    best = _best(candidates, outcomes)
    if best is not None:
        outcomes[best] = (Outcome.SERVED, outcomes[best][1], outcomes[best][2])
        return Decision(served=candidates[best].entry_id,
                        similarity=candidates[best].similarity,
                        probability=outcomes[best][1], outcomes=tuple(outcomes))
    reason, detail = _miss_reason(outcomes)
    return Decision(served=None, similarity=candidates[0].similarity, reason=reason,
                    detail=detail, outcomes=tuple(outcomes))


def context_check(query: Query, candidate: Candidate, policy: CategoryPolicy) -> str | None:
    """Why ``candidate``'s conversation context differs from ``query``'s under ``policy``'s
    ``context`` rule, or ``None`` when it may be taken to mean the same. Pure.

    Without both contexts' vectors a semantic comparison falls back to the exact one."""
    q, c = query.context, candidate.context
    if q is None or c is None:
        return "only one has a context" if q is not c else None
    if q.key == c.key:
        return None
    if (policy.context != "semantic" or not (q.semantic and c.semantic)
            or query.context_vector is None or candidate.context_vector is None
            or query.context_vector.shape != candidate.context_vector.shape):
        return "different turns"
    similarity = float(np.dot(query.context_vector, candidate.context_vector))
    if similarity < policy.context_threshold:
        return f"similarity {similarity:.3f} < {policy.context_threshold:g}"
    rejected = guards.check(q.text, c.text, [g for g in CONTEXT_GUARDS if g in policy.guards])
    return None if rejected is None else f"guard {rejected}"


def context_embedding(query: Context | None, context: Context | None, policy: CategoryPolicy,
                      embed: Callable[[str], np.ndarray], *, stored: np.ndarray | None = None
                      ) -> np.ndarray | None:
    """The embedding of ``context`` when :func:`context_check` will compare it with the
    request's ``query`` context by meaning (semantic policy, both comparable, different
    turns), else ``None``: ``stored`` (an entry's) when there is one, else made from its
    turns with ``embed`` (entries stored while the category compared contexts exactly, or
    before contexts existed). A stored vector of another shape is told apart by
    :func:`context_check` as different turns."""
    if (policy.context != "semantic" or query is None or context is None
            or not (query.semantic and context.semantic)
            or (context is not query and context.key == query.key)):
        return None
    if stored is not None:
        return stored
    return context_vector(np.stack([embed(turn) for turn in context.turns]), context)


def context_vector(turn_vectors: np.ndarray, context: Context) -> np.ndarray:
    """The unit-norm embedding of a context: its user turns' unit vectors (rows of
    ``turn_vectors``, oldest first) averaged with :meth:`Context.weights` — most recent and
    substantive turns weigh most."""
    weights = np.asarray(context.weights(), dtype=np.float64)
    mixed = weights @ np.asarray(turn_vectors, dtype=np.float64)
    norm = float(np.linalg.norm(mixed))
    return (mixed / norm if norm > 0 else mixed).astype(np.float32)


def _best(candidates: Sequence[Candidate],
          outcomes: list[tuple[Outcome, float | None, str]]) -> int | None:
    accepted = [i for i, (o, _, _) in enumerate(outcomes) if o is Outcome.ACCEPTED]
    if not accepted:
        return None
    return max(accepted, key=lambda i: (outcomes[i][1] or 0.0, candidates[i].similarity))


def _miss_reason(outcomes: list[tuple[Outcome, float | None, str]]) -> tuple[MissReason, str]:
    verified = [p for o, p, _ in outcomes if o is Outcome.VERIFIER and p is not None]
    if verified:
        return MissReason.VERIFIER, f"p={max(verified):.3f}"
    guarded = [d for o, _, d in outcomes if o is Outcome.GUARD]
    if guarded:
        return MissReason.GUARD, guarded[0]
    other = [d for o, _, d in outcomes if o is Outcome.CONTEXT]
    if other:
        return MissReason.CONTEXT, other[0]
    return MissReason.BELOW_THRESHOLD, ""
