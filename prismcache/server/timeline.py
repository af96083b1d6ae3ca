"""The last hour of the proxy, in memory: a ring buffer of samples taken every few seconds.

The dashboard (``GET /dashboard``) draws its charts from it. Each :class:`Sample` holds what
changed since the one before it: per category, the lookups, hits and exact hits the cache
counted; per upstream model, the load level; and the miss overhead's p50 and p99 over the
interval, estimated from the ``prismcache_miss_overhead_seconds`` histogram's buckets the way
Prometheus' ``histogram_quantile`` does (linear within a bucket). Counters are cumulative at the
source, so a sample is a difference of two readings; a counter that went down (the cache was
reopened) counts from zero again.

Nothing here reads the proxy: :meth:`Timeline.record` takes the readings, so the buffer is
tested with a fake clock and the sampler that feeds it lives in
:mod:`prismcache.server.dashboard`.

>>> t = Timeline(capacity=3)
>>> t.record(Reading(now=10.0, categories={"faq": (4, 1, 1)}))  # the first reading: no sample
>>> t.record(Reading(now=15.0, categories={"faq": (10, 4, 2)}))
>>> [(s.t, s.categories["faq"].lookups, s.categories["faq"].hit_rate) for s in t.since(0)]
[(15.0, 6, 0.5)]
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CategoryDelta", "Reading", "Sample", "Timeline", "histogram_quantile"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """Cumulative counters read at ``now`` (wall-clock seconds).

    Attributes:
        categories: category -> ``(lookups, hits, exact hits)`` since the cache opened.
        overhead: the miss-overhead histogram summed over its series: cumulative counts per
            bucket bound (the last one, ``+Inf``, is the total count).
        bounds: the histogram's finite bucket bounds (seconds), ascending.
        levels: upstream model -> load level in [0, 1] now.
    """

    now: float
    categories: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    overhead: Sequence[float] = ()
    bounds: Sequence[float] = ()
    levels: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class CategoryDelta:
    """One category over one interval."""

    lookups: int
    hits: int
    exact_hits: int

    @property
    def hit_rate(self) -> float | None:
        """hits / lookups over the interval (``None`` without lookups)."""
        return self.hits / self.lookups if self.lookups else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """What changed over the ``seconds`` before ``t``."""

    t: float
    seconds: float
    categories: Mapping[str, CategoryDelta]
    levels: Mapping[str, float]
    misses: int  # miss-overhead observations in the interval
    overhead_p50: float | None
    overhead_p99: float | None

    def as_json(self) -> dict[str, Any]:
        """The sample as the dashboard's ``GET /admin/timeline`` sends it."""
        return {"t": self.t, "seconds": self.seconds,
                "categories": {name: {"lookups": d.lookups, "hits": d.hits,
                                      "exact_hits": d.exact_hits, "hit_rate": d.hit_rate}
                               for name, d in self.categories.items()},
                "levels": dict(self.levels), "misses": self.misses,
                "overhead_p50": self.overhead_p50, "overhead_p99": self.overhead_p99}


class Timeline:
    """A ring buffer of the last ``capacity`` samples (720 x 5 s = one hour). Thread-safe."""

    def __init__(self, capacity: int = 720) -> None:
        """An empty timeline; raises ``ValueError`` unless ``capacity >= 1``."""
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._samples: deque[Sample] = deque(maxlen=capacity)
        self._last: Reading | None = None
        self._lock = threading.Lock()

    def record(self, reading: Reading) -> None:
        """Append the sample between the previous reading and ``reading`` (the first reading
        only sets the baseline)."""
        with self._lock:
            last, self._last = self._last, reading
            if last is None or reading.now <= last.now:
                return
            categories = {}
            for name, (lookups, hits, exact) in sorted(reading.categories.items()):
                before = last.categories.get(name, (0, 0, 0))
                if lookups < before[0]:  # the counters restarted
                    before = (0, 0, 0)
                categories[name] = CategoryDelta(lookups=lookups - before[0],
                                                 hits=hits - before[1],
                                                 exact_hits=exact - before[2])
            counts, earlier = list(reading.overhead), list(last.overhead)
            if len(earlier) == len(counts) and (not counts or counts[-1] >= earlier[-1]):
                counts = [c - b for c, b in zip(counts, earlier, strict=True)]
            p50 = histogram_quantile(0.5, reading.bounds, counts)
            p99 = histogram_quantile(0.99, reading.bounds, counts)
            self._samples.append(Sample(
                t=reading.now, seconds=reading.now - last.now, categories=categories,
                levels=dict(reading.levels), misses=int(counts[-1]) if counts else 0,
                overhead_p50=p50, overhead_p99=p99))

    def since(self, t: float) -> list[Sample]:
        """The samples taken after ``t`` (all of them for ``t <= 0``), oldest first."""
        with self._lock:
            return [s for s in self._samples if s.t > t]

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]
                       ) -> float | None:
    """The ``q``-quantile (0 < q < 1) of a histogram: ``counts`` are cumulative per bound of
    ``bounds`` plus a last ``+Inf`` count. Linear within the bucket that holds the rank (from 0
    for the first); a rank in the ``+Inf`` bucket answers the highest finite bound. ``None``
    when the histogram is empty.

    >>> histogram_quantile(0.5, [1.0, 2.0], [0, 10, 10])
    1.5
    >>> histogram_quantile(0.99, [1.0, 2.0], [10, 10, 20])
    2.0
    """
    if not counts or counts[-1] <= 0 or len(counts) != len(bounds) + 1:
        return None
    rank = q * counts[-1]
    below, lower = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=False):
        if cumulative >= rank and cumulative > below:
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        below, lower = cumulative, bound
    return float(bounds[-1]) if bounds else None
