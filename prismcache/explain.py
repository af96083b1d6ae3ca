"""``SemanticCache.explain``: what a lookup would answer, and why, candidate by candidate.

The question operators ask most when a hit looks wrong (or a paraphrase missed) is "what did
the cache see?". :class:`Explanation` answers it from the same :func:`prismcache.decision.decide`
the lookup runs: the category and the policy in force, the nearest candidates with their
similarity, the verifier's probability and the outcome (served, accepted, below the lower
bound, rejected by a guard or by the verifier), and the final result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prismcache.config import CategoryPolicy, format_duration
from prismcache.decision import Candidate, Decision, Outcome
from prismcache.results import Hit, LookupResult

__all__ = ["CandidateView", "Explanation"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CandidateView:
    """One candidate as the decision saw it."""

    entry_id: int
    query: str
    similarity: float
    probability: float | None
    outcome: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """The result a lookup would return now, with its reasons.

    Attributes:
        result: the :class:`Hit` or :class:`Miss` (nothing was counted or touched).
        category: the request's category (``None`` before classification, e.g. a bypass).
        policy: the category's policy in force, when one was resolved.
        candidates: the nearest candidates, best cosine first (exact hits list none).
    """

    result: LookupResult
    category: str | None
    policy: CategoryPolicy | None
    candidates: tuple[CandidateView, ...]

    @classmethod
    def of(cls, result: LookupResult, policy: CategoryPolicy | None,
           candidates: list[Candidate], verdict: Decision | None) -> Explanation:
        """Assemble an explanation from a dry lookup's parts."""
        outcomes = verdict.outcomes if verdict is not None else ()
        views = []
        for i, c in enumerate(candidates):
            outcome, p, detail = outcomes[i] if i < len(outcomes) else (Outcome.BELOW, None, "")
            views.append(CandidateView(entry_id=c.entry_id, query=c.text,
                                       similarity=c.similarity, probability=p,
                                       outcome=str(outcome), detail=detail))
        return cls(result=result, category=result.category, policy=policy,
                   candidates=tuple(views))

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the admin API and the dashboard show this)."""
        r = self.result
        result: dict[str, Any] = {"hit": r.hit, "similarity": r.similarity}
        if isinstance(r, Hit):
            result.update(entry_id=r.entry_id, tier=r.tier, probability=r.probability,
                          age_s=round(r.age, 3))
        else:
            result.update(reason=str(r.reason), detail=r.detail, cacheable=r.cacheable)
        policy = None if self.policy is None else {
            "threshold": self.policy.threshold, "verifier": self.policy.verifier,
            "verify_low": self.policy.verify_low, "verify_high": self.policy.verify_high,
            "cutoff": self.policy.cutoff, "guards": list(self.policy.guards),
            "ttl": format_duration(self.policy.ttl), "enabled": self.policy.enabled}
        return {"category": self.category, "result": result, "policy": policy,
                "candidates": [{"entry_id": str(c.entry_id), "query": c.query,
                                "similarity": round(c.similarity, 6),
                                "probability": None if c.probability is None
                                else round(c.probability, 6),
                                "outcome": c.outcome, "detail": c.detail}
                               for c in self.candidates]}
