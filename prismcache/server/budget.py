"""How long a request's semantic lookup may wait for the embedder before it is skipped.

A semantic lookup is worth its wait while the wait is shorter than the upstream time it is
expected to save: the recent share of semantic lookups that hit times the recent upstream
latency (``server.lookup_budget_ms: auto``; the default, 0, never skips). Traffic that misses (new questions)
then skips a queued lookup at once and goes upstream; traffic that hits waits as long as a hit
is worth; in front of a model that answers in seconds the budget is seconds, and nothing is
skipped short of a pathological queue. A fixed number of milliseconds replaces the estimate;
0 never skips. The wait itself is the embedder's estimate
(:meth:`prismcache.embedders.BatchingEmbedder.backlog`), so a request on an idle proxy never
waits and is never skipped.

>>> budget = LookupBudget(None)
>>> budget.skip(0.5)   # no upstream call seen yet: nothing to weigh the wait against
False
>>> budget.upstream_took(0.05)
>>> for _ in range(100):
...     budget.looked_up(hit=False)
>>> budget.skip(0.010), budget.skip(0.0)
(True, False)
"""

from __future__ import annotations

__all__ = ["FLOOR", "LookupBudget"]

#: the least an automatic budget allows (seconds): a wait shorter than this is never worth
#: an upstream call
FLOOR = 0.002
#: weight of the newest sample in the moving averages (~the last 20 samples count)
WEIGHT = 0.05


class LookupBudget:
    """The budget of a semantic lookup's wait for the embedder. Used from the event loop
    only (its estimates are plain floats, read and written there)."""

    def __init__(self, fixed_ms: float | None) -> None:
        """``fixed_ms``: the budget in milliseconds (0: never skip), or ``None`` for the
        automatic one: recent hit rate of semantic lookups x recent upstream latency, at
        least :data:`FLOOR`."""
        if fixed_ms is not None and fixed_ms < 0:
            raise ValueError(f"a lookup budget must be >= 0 ms, got {fixed_ms!r}")
        self.fixed = None if fixed_ms is None else fixed_ms / 1000
        self.hit_rate = 1.0  # optimistic: look up until the traffic says it misses
        self.upstream = 0.0  # seconds; 0 until an upstream answer was timed

    def seconds(self) -> float | None:
        """The budget now, in seconds; ``None`` when nothing is ever skipped."""
        if self.fixed is not None:
            return self.fixed or None
        if not self.upstream:
            return None
        return max(FLOOR, self.hit_rate * self.upstream)

    def skip(self, backlog: float) -> bool:
        """Whether a lookup that would wait ``backlog`` seconds for the embedder is skipped."""
        budget = self.seconds()
        return budget is not None and backlog > budget

    def looked_up(self, *, hit: bool) -> None:
        """Record a semantic lookup that ran (not an exact hit, not a skipped one)."""
        self.hit_rate += WEIGHT * (float(hit) - self.hit_rate)

    def upstream_took(self, seconds: float) -> None:
        """Record the time an upstream call took to answer 200."""
        self.upstream = seconds if not self.upstream else \
            self.upstream + WEIGHT * (seconds - self.upstream)
