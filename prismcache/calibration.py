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

**Per entry** (:func:`entry_cutoff`), from the labels of one stored entry (keyed by its id, in
its own tenant only; ids are random and never reused), the cut-off for that candidate alone:

- **tighter on evidence of error**: when the 95% Wilson *upper* bound on the entry's precision
  (all its labels, any probability) is below the target, the entry's grey zone is closed (its
  cut-off is 1.0; cosine >= ``verify_high`` still serves it). At 0.99 one disagreeing label
  does it while the entry has fewer than 23 labels. Closing serves nothing, so it can never
  serve a wrong answer: it needs neither ``min_labels`` nor agreement, and takes effect at once;
- **looser only on a bound**: with at least :func:`min_agreeing` labels with a probability
  (the fewest that, all agreeing, put the Wilson lower bound at the target: 268 at 0.99, 52 at
  0.95, 25 at 0.9, 11 at 0.8), :func:`learn_cutoff` runs on the entry's own labels with that
  minimum, and a cut-off below the category's is kept.

The category's bound is over the decisions of the combined rule: a label counts for its
category only when its entry was not closed by the labels before it (a predictable filter:
whether a label counts never depends on its own verdict), so the category cut-off may loosen
when closing the entries whose neighbours disagree removes the errors.

>>> learn_cutoff([(0.8, True)] * 10, configured=0.9, target=0.95, min_labels=50).cutoff
0.9
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from prismcache.config import CacheConfig, CategoryPolicy
from prismcache.errors import StoreError
from prismcache.evaluation.metrics import wilson_lower
from prismcache.labels import Label

if TYPE_CHECKING:
    from prismcache.stores.base import DocumentStore

__all__ = ["MAX_ENTRIES", "MIN_LABELS", "Calibrator", "Change", "Learned", "entry_cutoff",
           "learn_cutoff", "min_agreeing"]

log = logging.getLogger("prismcache.calibration")
#: labels (with a probability) a category needs before its cut-off moves, and decisions a
#: candidate cut-off needs before its bound is tested
MIN_LABELS = 50
Z_95 = 1.645  # one-sided 95%
GRID = tuple(round(0.99 - i / 100, 2) for i in range(95))  # 0.99 ... 0.05
_KEEP = 50_000  # labels per category held in memory for recomputing
_HISTORY = 200
#: entries whose labels are tracked for a per-entry cut-off; the least recently labelled go
MAX_ENTRIES = 50_000
_ENTRY_KEEP = 512  # labels per entry kept (more than min_agreeing(0.99) needs)
CLOSED = 1.0  # a cut-off no grey-zone probability reaches: the grey zone serves nothing


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


def min_agreeing(target: float, z: float = Z_95) -> int:
    """The fewest labels that, all agreeing, put the Wilson lower bound at ``target``
    (``n / (n + z**2) >= target``): 268 at 0.99, 52 at 0.95, 25 at 0.9, 11 at 0.8.

    >>> [min_agreeing(t) for t in (0.99, 0.95, 0.9, 0.8)]
    [268, 52, 25, 11]
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    n = max(1, math.floor(target * z * z / (1.0 - target)))
    while wilson_lower(n, n, z) < target:
        n += 1
    return n


def entry_cutoff(labels: Sequence[tuple[float | None, bool]], *, category: float,
                 target: float) -> float | None:
    """One entry's cut-off from its ``(probability or None, same)`` labels, or ``None`` for
    its category's (``category``): :data:`CLOSED` when the Wilson upper bound on its precision
    is below ``target``; a looser one only from :func:`learn_cutoff` on its own labels with
    :func:`min_agreeing` as the minimum (see the module docstring).

    >>> entry_cutoff([(0.5, False)], category=0.9, target=0.99)
    1.0
    >>> entry_cutoff([(0.8, True)] * 267, category=0.9, target=0.99) is None
    True
    >>> entry_cutoff([(0.8, True)] * 268, category=0.9, target=0.99)
    0.8
    """
    if not labels:
        return None
    n = len(labels)
    wrong = sum(1 for _, same in labels if not same)
    if 1.0 - wilson_lower(wrong, n, Z_95) < target:  # upper bound on precision < target
        return CLOSED
    scored = [(p, same) for p, same in labels if p is not None]
    need = min_agreeing(target)
    if len(scored) < need:
        return None
    learned = learn_cutoff(scored, configured=category, target=target, min_labels=need)
    return learned.cutoff if learned.cutoff < category else None


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


@dataclass(slots=True, kw_only=True)
class _Tracked:
    """One entry's labels and the cut-off they give it (``None``: its category's)."""

    tenant: str
    category: str
    labels: deque[tuple[float | None, bool]]
    cutoff: float | None = None


class Calibrator:
    """Learned cut-offs per category, from the labels of a store (all tenants pooled: only
    the ``(probability, same)`` of each label counts, never its text), and per entry
    (:func:`entry_cutoff`, kept per tenant: :meth:`entry_cutoffs`).

    Args:
        config: the categories; those with ``target_precision`` set are calibrated.
        store: where labels are kept (``None``: in memory only, as ``replay --online`` does).
        clock: for the change log.
        min_labels: see :func:`learn_cutoff`.
        max_entries: entries tracked for a per-entry cut-off, least recently labelled dropped
            first (a dropped entry falls back to its category's cut-off); 0 turns the
            per-entry rule off (the category rule alone, as ``replay --online`` compares).
    """

    def __init__(self, config: CacheConfig, store: DocumentStore | None = None, *,
                 clock: Callable[[], float] = time.time, min_labels: int = MIN_LABELS,
                 max_entries: int = MAX_ENTRIES) -> None:
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
        self._entries: OrderedDict[int, _Tracked] = OrderedDict()  # LRU: oldest label first
        self._adjusted: dict[str, dict[int, float]] = {}  # tenant -> entry id -> cut-off
        self._max_entries = max_entries
        self._entry_changes = self._entries_dropped = 0
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
        self._prune()
        return used

    def _prune(self) -> None:
        """Forget adjusted entries the store no longer holds for their tenant (evicted
        while the cache was closed). A store that fails keeps them (ids are never reused)."""
        assert self._store is not None
        with self._lock:
            held = [(t, i) for t, adjusted in self._adjusted.items() for i in adjusted]
        try:
            gone = [i for t, i in held
                    if (entry := self._store.get(i)) is None or entry.tenant != t]
        except StoreError as exc:
            log.warning("could not check adjusted entries: %s", exc)
            return
        self.forget(gone)

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

    def entry_cutoffs(self, tenant: str) -> Mapping[int, float] | None:
        """``tenant``'s per-entry cut-offs (entry id -> cut-off replacing its category's for
        that candidate), ``None`` when it has none. Entries of other tenants are never in it."""
        return self._adjusted.get(tenant)

    @property
    def adjusted_entries(self) -> int:
        """How many entries (all tenants) have a cut-off of their own."""
        return sum(len(adjusted) for adjusted in self._adjusted.values())

    def forget(self, entry_ids: Iterable[int]) -> None:
        """Drop what was learned about entries the store evicted or replaced."""
        with self._lock:
            for entry_id in entry_ids:
                tracked = self._entries.pop(entry_id, None)
                if tracked is not None:
                    self._adjust(entry_id, tracked, None)

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
            moved = Counter((self._entries[i].category, c >= CLOSED)
                            for adjusted in self._adjusted.values() for i, c in adjusted.items())
            return {
                "categories": [{"category": n, "target_precision": p.target_precision,
                                "configured_cutoff": p.cutoff, "cutoff": lrn.cutoff,
                                "labels": lrn.labels, "decisions": lrn.decisions,
                                "bound": lrn.bound, "why": lrn.why,
                                "entries_closed": moved.get((n, True), 0),
                                "entries_looser": moved.get((n, False), 0),
                                "entry_min_labels": min_agreeing(p.target_precision)}
                               for n, p in sorted(self._policies.items())
                               for lrn in (self._learned[n],)],
                "entries": {"tracked": len(self._entries),
                            "adjusted": sum(moved.values()),
                            "changes": self._entry_changes, "dropped": self._entries_dropped},
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
        yield ("# HELP prismcache_adjusted_entries Entries whose own labels moved their cut-off: "
               "closed (grey zone off) or looser.")
        yield "# TYPE prismcache_adjusted_entries gauge"
        for row in state["categories"]:
            name = _esc(row["category"])
            yield f'prismcache_adjusted_entries{{category="{name}",direction="closed"}} ' \
                  f'{row["entries_closed"]}'
            yield f'prismcache_adjusted_entries{{category="{name}",direction="looser"}} ' \
                  f'{row["entries_looser"]}'
        yield "# HELP prismcache_tracked_entries Entries whose labels are tracked."
        yield "# TYPE prismcache_tracked_entries gauge"
        yield f'prismcache_tracked_entries {state["entries"]["tracked"]}'
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
        closed = self._track(label)
        if label.probability is None or closed:  # a closed entry's decisions are not served
            return False
        seen.append((label.probability, label.same))
        return True

    def _track(self, label: Label) -> bool:
        """Add ``label`` to its entry's labels and re-derive the entry's cut-off; return
        whether the entry was closed before this label (then its category does not count it)."""
        if self._max_entries <= 0:
            return False
        tracked = self._entries.get(label.entry_id)
        if tracked is None:
            tracked = self._entries[label.entry_id] = _Tracked(
                tenant=label.tenant, category=label.category, labels=deque(maxlen=_ENTRY_KEEP))
            while len(self._entries) > self._max_entries:
                old_id, old = self._entries.popitem(last=False)
                self._adjust(old_id, old, None)
                self._entries_dropped += 1
        elif tracked.tenant != label.tenant or tracked.category != label.category:
            return False  # an id is one entry of one tenant: not this entry's evidence
        else:
            self._entries.move_to_end(label.entry_id)
        closed = tracked.cutoff is not None and tracked.cutoff >= CLOSED
        tracked.labels.append((label.probability, label.same))
        policy = self._policies[label.category]
        assert policy.target_precision is not None  # only such policies are kept
        category = self._learned[label.category].cutoff if label.category in self._learned \
            else policy.cutoff
        self._adjust(label.entry_id, tracked, entry_cutoff(
            tracked.labels, category=category, target=policy.target_precision))
        return closed

    def _adjust(self, entry_id: int, tracked: _Tracked, cutoff: float | None) -> None:
        if cutoff == tracked.cutoff:
            return
        log.debug("entry %d (%s): cut-off %s -> %s", entry_id, tracked.category,
                  tracked.cutoff, cutoff)
        tracked.cutoff = cutoff
        self._entry_changes += 1
        adjusted = self._adjusted.get(tracked.tenant)
        if cutoff is not None:
            if adjusted is None:
                adjusted = self._adjusted[tracked.tenant] = {}
            adjusted[entry_id] = cutoff
        elif adjusted is not None:
            adjusted.pop(entry_id, None)
            if not adjusted:
                del self._adjusted[tracked.tenant]

    def _relearn(self, category: str) -> None:
        policy = self._policies[category]
        assert policy.target_precision is not None  # only such policies are kept
        learned = learn_cutoff(self._seen[category], configured=policy.cutoff,
                               target=policy.target_precision, min_labels=self._min)
        old = self._learned.get(category)
        self._learned[category] = learned
        before = policy.cutoff if old is None else old.cutoff
        if learned.cutoff != before:  # entries looser than before may no longer be looser
            for entry_id in [i for a in self._adjusted.values() for i, c in a.items()
                             if learned.cutoff <= c < CLOSED]:
                tracked = self._entries[entry_id]
                if tracked.category == category:
                    self._adjust(entry_id, tracked, None)
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

