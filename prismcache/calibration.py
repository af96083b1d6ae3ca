"""Error-bounded online calibration: each category's verifier cut-off, learned from labels.

A category with ``target_precision`` set (say 0.99) has its ``cutoff`` (the verifier's
probability at or above which a grey-zone candidate is served) kept at the **loosest** value
whose **lower confidence bound** on precision still reaches the target, over the labels
(:mod:`prismcache.labels`) of that category. The rule, :func:`learn_cutoff`:

1. Only labels with a verifier probability count; fewer than ``min_labels`` of them: the
   configured ``cutoff`` stays.
2. Candidate cut-offs run from strict to loose on a grid (0.99, 0.98, ... 0.05). At each, the
   decisions it would make are the labels with probability >= it; their precision's **Wilson
   score lower bound at 95%** (one-sided z = 1.645) must reach the target. Walking down,
   cut-offs with fewer than ``min_labels`` decisions are passed over (no evidence either way);
   the walk stops at the first cut-off whose bound falls short (a *fixed-sequence* test: the
   cut-offs are tested in a fixed order and the first failure ends it, so scanning many
   cut-offs does not inflate the error).
3. The loosest cut-off passed is learned (raised to the lowest labelled probability among its
   decisions: it never reaches into probabilities no label has seen), looser **or tighter**
   than the configured one. When the very first cut-off with enough evidence already fails:
   if it is at or above the configured cut-off, the labels say the grey zone is not precise
   enough at the configured value or above: the cut-off becomes 1.0 (the grey zone serves
   nothing; cosine >= ``verify_high`` still does); below it, they say nothing about the
   configured value, which stays.

The labels are a biased sample, and the bias is on the cautious side: below the cut-off in
force every grey-zone miss is labelled, above it only explored requests (a few percent) and
feedback are; precision falls as the probability falls, so the labels over-weight the least
precise decisions of any looser cut-off.

The learned cut-off is one stage of :class:`~prismcache.policies.PolicyResolver` (after the
configured policy, before load-adaptive control). It is recomputed when a label arrives and
rebuilt from the stored labels when the cache opens, so it survives restarts; rolling back is
deleting the labels or unsetting ``target_precision``.

>>> learn_cutoff([(0.8, True)] * 10, configured=0.9, target=0.95, min_labels=50).cutoff
0.9
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from prismcache.config import CacheConfig, CategoryPolicy
from prismcache.errors import StoreError
from prismcache.evaluation.metrics import wilson_lower
from prismcache.labels import Label

if TYPE_CHECKING:
    from prismcache.stores.base import DocumentStore

__all__ = ["MIN_LABELS", "Calibrator", "Change", "Learned", "learn_cutoff"]

log = logging.getLogger("prismcache.calibration")
#: labels (with a probability) a category needs before its cut-off moves, and decisions a
#: candidate cut-off needs before its bound is tested
MIN_LABELS = 50
Z_95 = 1.645  # one-sided 95%
GRID = tuple(round(0.99 - i / 100, 2) for i in range(95))  # 0.99 ... 0.05
_KEEP = 50_000  # labels per category held in memory for recomputing
_HISTORY = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Learned:
    """What :func:`learn_cutoff` decided: the cut-off, the labels it used, the decisions and
    the precision bound at that cut-off (``None`` when it stayed for lack of labels), and why."""

    cutoff: float
    labels: int
    decisions: int = 0
    bound: float | None = None
    why: str = ""


def learn_cutoff(labels: Iterable[tuple[float, bool]], *, configured: float, target: float,
                 min_labels: int = MIN_LABELS) -> Learned:
    """The loosest cut-off whose lower bound on precision reaches ``target``, from
    ``(probability, same)`` labels (see the module docstring for the rule)."""
    scored = sorted(((p, s) for p, s in labels), key=lambda x: -x[0])
    if len(scored) < min_labels:
        return Learned(cutoff=configured, labels=len(scored),
                       why=f"too few labels ({len(scored)} < {min_labels})")
    best: Learned | None = None
    i = good = 0
    for cutoff in GRID:
        while i < len(scored) and scored[i][0] >= cutoff:
            good += scored[i][1]
            i += 1
        if i < min_labels:
            continue
        bound = wilson_lower(good, i, Z_95)
        if bound < target:
            break
        lowest = math.floor(scored[i - 1][0] * 1e6) / 1e6  # never past the labels' evidence
        best = Learned(cutoff=max(cutoff, lowest), labels=len(scored), decisions=i,
                       bound=bound, why=f"loosest with bound >= {target:g}")
    if best is not None:
        return best
    bound = wilson_lower(good, i, Z_95)
    if cutoff < configured:  # the evidence lies below the configured cut-off: say nothing
        return Learned(cutoff=configured, labels=len(scored), decisions=i, bound=bound,
                       why=f"first bound with evidence ({bound:.3f} at {cutoff:g}) is "
                           f"below {target:g}, under the configured cut-off")
    return Learned(cutoff=1.0, labels=len(scored), decisions=i, bound=bound,
                   why=f"no cut-off reaches {target:g} (bound {bound:.3f} at {cutoff:g}): "
                       "grey zone closed")


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One move of a category's learned cut-off."""

    t: float
    category: str
    old: float
    new: float
    labels: int
    bound: float | None
    why: str


class Calibrator:
    """Learned cut-offs per category, from the labels of a store (all tenants pooled: only
    the ``(probability, same)`` of each label counts, never its text).

    Args:
        config: the categories; those with ``target_precision`` set are calibrated.
        store: where labels are kept (``None``: in memory only, as ``replay --online`` does).
        clock: for the change log.
        min_labels: see :func:`learn_cutoff`.
    """

    def __init__(self, config: CacheConfig, store: DocumentStore | None = None, *,
                 clock: Callable[[], float] = time.time, min_labels: int = MIN_LABELS) -> None:
        self._policies = {n: p for n, p in config.categories.items()
                          if p.target_precision is not None}
        self._store = store
        self._clock = clock
        self._min = min_labels
        self._lock = threading.Lock()
        self._seen: dict[str, deque[tuple[float, bool]]] = {
            n: deque(maxlen=_KEEP) for n in self._policies}
        self._counts: dict[tuple[str, str, bool], int] = {}
        self._learned: dict[str, Learned] = {}
        self._applied: dict[str, tuple[CategoryPolicy, CategoryPolicy]] = {}
        self.history: deque[Change] = deque(maxlen=_HISTORY)
        for name in self._policies:
            self._relearn(name)

    @property
    def categories(self) -> list[str]:
        """The calibrated categories."""
        return sorted(self._policies)

    def load(self) -> int:
        """Read every stored label (at open: what the cut-offs learned survives restarts);
        return how many count. A store that fails is logged and leaves the configured values."""
        if self._store is None or not self._policies:
            return 0
        try:
            labels = self._store.labels()
        except StoreError as exc:
            log.warning("labels unavailable, cut-offs stay configured: %s", exc)
            return 0
        used = 0
        with self._lock:
            for label in labels:
                used += self._take(label)
            for name in self._policies:
                self._relearn(name)
        return used

    def record(self, label: Label) -> None:
        """Store ``label`` (when there is a store) and update its category's cut-off. Raises
        :class:`StoreError` when the store fails (the label is then not counted either)."""
        if self._store is not None:
            self._store.add_label(label)
        with self._lock:
            if self._take(label):
                self._relearn(label.category)

    def observe(self, labels: Sequence[Label]) -> None:
        """Count ``labels`` without storing them (for callers that keep labels elsewhere)."""
        with self._lock:
            touched = {x.category for x in labels if self._take(x)}
            for name in touched:
                self._relearn(name)

    def cutoff(self, category: str) -> float | None:
        """The learned cut-off of ``category``; ``None`` when it is not calibrated."""
        learned = self._learned.get(category)
        return None if learned is None else learned.cutoff

    def __call__(self, category: str, policy: CategoryPolicy) -> CategoryPolicy:
        """``policy`` with its learned cut-off (unchanged when not calibrated)."""
        cutoff = self.cutoff(category)
        if cutoff is None or policy.target_precision is None or cutoff == policy.cutoff:
            return policy
        memo = self._applied.get(category)  # one validated copy per (policy, cut-off)
        if memo is None or memo[0] is not policy or memo[1].cutoff != cutoff:
            memo = self._applied[category] = (policy, replace(policy, cutoff=cutoff))
        return memo[1]

    def as_json(self) -> dict[str, Any]:
        """Per category: configured and learned cut-off, labels, bound, target; the change
        log; label counts by source and verdict."""
        with self._lock:
            return {
                "categories": [{"category": n, "target_precision": p.target_precision,
                                "configured_cutoff": p.cutoff, "cutoff": lrn.cutoff,
                                "labels": lrn.labels, "decisions": lrn.decisions,
                                "bound": lrn.bound, "why": lrn.why}
                               for n, p in sorted(self._policies.items())
                               for lrn in (self._learned[n],)],
                "changes": [vars_of(c) for c in self.history],
                "labels": [{"category": c, "source": s, "same": same, "count": k}
                           for (c, s, same), k in sorted(self._counts.items())],
            }

    def metric_lines(self) -> Iterable[str]:
        """Prometheus lines: learned cut-off and its bound per category, labels by source."""
        state = self.as_json()
        yield "# HELP prismcache_learned_cutoff Verifier cut-off in force, learned from labels."
        yield "# TYPE prismcache_learned_cutoff gauge"
        for row in state["categories"]:
            name = _esc(row["category"])
            yield f'prismcache_learned_cutoff{{category="{name}"}} {row["cutoff"]:.6g}'
        yield ("# HELP prismcache_learned_precision_bound 95% lower bound on precision at the "
               "learned cut-off (absent: too few labels).")
        yield "# TYPE prismcache_learned_precision_bound gauge"
        for row in state["categories"]:
            if row["bound"] is not None:
                yield (f'prismcache_learned_precision_bound{{category="{_esc(row["category"])}"}}'
                       f' {row["bound"]:.6g}')
        yield ("# HELP prismcache_labels_total Labels counted: those stored when the cache opened, "
               "plus those recorded since.")
        yield "# TYPE prismcache_labels_total counter"
        for row in state["labels"]:
            yield (f'prismcache_labels_total{{category="{_esc(row["category"])}",source='
                   f'"{row["source"]}",same="{str(row["same"]).lower()}"}} {row["count"]}')

    # -- internals; under self._lock ----------------------------------------------------

    def _take(self, label: Label) -> bool:
        seen = self._seen.get(label.category)
        if seen is None:
            return False
        key = (label.category, label.source, label.same)
        self._counts[key] = self._counts.get(key, 0) + 1
        if label.probability is None:
            return False
        seen.append((label.probability, label.same))
        return True

    def _relearn(self, category: str) -> None:
        policy = self._policies[category]
        assert policy.target_precision is not None  # only such policies are kept
        learned = learn_cutoff(self._seen[category], configured=policy.cutoff,
                               target=policy.target_precision, min_labels=self._min)
        old = self._learned.get(category)
        self._learned[category] = learned
        before = policy.cutoff if old is None else old.cutoff
        if learned.cutoff != before:
            change = Change(t=self._clock(), category=category, old=before, new=learned.cutoff,
                            labels=learned.labels, bound=learned.bound, why=learned.why)
            self.history.append(change)
            log.info("category %s: verifier cut-off %g -> %g (%d labels; %s)", category,
                     before, learned.cutoff, learned.labels, learned.why)


def vars_of(change: Change) -> dict[str, Any]:
    """A :class:`Change` as a JSON-ready dict."""
    return {f: getattr(change, f) for f in Change.__dataclass_fields__}


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

