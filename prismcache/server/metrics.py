"""Prometheus metrics in the text exposition format, written by hand (no dependency).

Every metric the proxy exports is declared in :class:`ProxyMetrics`; ``docs/proxy.md`` lists
them. Label values are bounded whatever clients send: a ``tenant`` label is a configured
tenant name or ``other`` (pass-through tenants, hashed client keys, are never labels), a
``category`` label a configured category, ``unknown`` or ``other``, and endpoints come from a
fixed table.

Metrics are updated on the event loop only, so they need no lock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from prismcache.results import CategoryStats

__all__ = ["OTHER", "BoundedLabels", "Counter", "Histogram", "ProxyMetrics"]

OTHER = "other"  # the label of every value outside a label's bounded set
MODEL_LABELS = 64
Clamp = Mapping[str, Callable[[str], str]]  # label name -> maps a value into its bounded set

# Seconds: from a sub-millisecond hit to a slow generation.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0)


class BoundedLabels:
    """A label whose values clients choose (the model a request names): the first ``limit``
    distinct values keep their name, later ones are :data:`OTHER`.

    >>> models = BoundedLabels(2)
    >>> [models(m) for m in ("a", "b", "c", "a")]
    ['a', 'b', 'other', 'a']
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self._limit:
            self._seen.add(value)
            return value
        return OTHER


class Counter:
    """A monotonically increasing value per label tuple."""

    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str],
                 clamp: Clamp | None = None) -> None:
        """``clamp`` maps some labels' values into a bounded set before they are counted."""
        self.name, self.help, self.labels = name, help, tuple(labels)
        self.values: dict[tuple[str, ...], float] = {}
        self._clamp = _clamper(self.labels, clamp)

    def inc(self, *labels: str, by: float = 1.0) -> None:
        """Add ``by`` (>= 0) to the series named by ``labels`` (in declaration order)."""
        labels = self._clamp(labels)
        self.values[labels] = self.values.get(labels, 0.0) + by

    def value(self, *labels: str) -> float:
        """The current value of one series (0.0 if never incremented)."""
        return self.values.get(self._clamp(labels), 0.0)

    def samples(self) -> Iterable[str]:
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.labels, labels)} {_number(value)}"


class Histogram:
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labels: Sequence[str],
                 buckets: Sequence[float] = LATENCY_BUCKETS, clamp: Clamp | None = None) -> None:
        """``clamp`` as for :class:`Counter`."""
        self.name, self.help, self.labels = name, help, tuple(labels)
        self.buckets = tuple(buckets)
        self.series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., sum, count
        self._clamp = _clamper(self.labels, clamp)

    def observe(self, value: float, *labels: str) -> None:
        """Record one observation (seconds) in the series named by ``labels``."""
        labels = self._clamp(labels)
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.buckets) + 2)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                series[i] += 1
        series[-2] += value
        series[-1] += 1

    def count(self, *labels: str) -> int:
        """How many observations one series has."""
        series = self.series.get(self._clamp(labels))
        return int(series[-1]) if series else 0

    def samples(self) -> Iterable[str]:
        for labels, series in sorted(self.series.items()):
            for bound, n in zip(self.buckets, series, strict=False):
                le = _labels(self.labels + ("le",), labels + (_number(bound),))
                yield f"{self.name}_bucket{le} {_number(n)}"
            inf = _labels(self.labels + ("le",), labels + ("+Inf",))
            yield f"{self.name}_bucket{inf} {_number(series[-1])}"
            yield f"{self.name}_sum{_labels(self.labels, labels)} {_number(series[-2])}"
            yield f"{self.name}_count{_labels(self.labels, labels)} {_number(series[-1])}"


class ProxyMetrics:
    """Every metric the proxy exports.

    ``tenants`` are the configured tenant names, the only tenants that are labels (every
    other tenant counts as ``other``); ``categories``, when given, bound the ``category``
    label the same way (``unknown`` and the empty label are kept).

    >>> m = ProxyMetrics(tenants=["acme"], categories=["code"])
    >>> m.requests.inc("chat", "key-0123456789abcdef", "nope", "miss")
    >>> m.requests.value("chat", "other", "other", "miss")
    1.0
    """

    def __init__(self, *, tenants: Collection[str] = (),
                 categories: Collection[str] | None = None) -> None:
        known_tenants = frozenset(tenants)
        clamp: dict[str, Callable[[str], str]] = {
            "tenant": lambda t: t if t in known_tenants else OTHER}
        if categories is not None:
            known = frozenset(categories) | {"unknown", ""}
            clamp["category"] = lambda c: c if c in known else OTHER
        tc = ("tenant", "category")
        self.requests = Counter(
            "prismcache_requests_total",
            "Requests by endpoint, tenant, category and cache outcome (hit, miss, bypass).",
            ("endpoint", "tenant", "category", "cache"), clamp)
        self.false_hits = Counter(
            "prismcache_false_hit_reports_total",
            "Hits reported wrong through POST /admin/feedback (the entry was removed).", tc,
            clamp)
        self.hit_seconds = Histogram(
            "prismcache_hit_seconds", "Time to answer a hit, from request to response.", tc,
            clamp=clamp)
        self.miss_overhead_seconds = Histogram(
            "prismcache_miss_overhead_seconds",
            "Time a miss spent in the proxy, not waiting on the upstream.", tc, clamp=clamp)
        self.upstream_seconds = Histogram(
            "prismcache_upstream_seconds", "Time waiting on the upstream, per call.", tc,
            clamp=clamp)
        self.tokens_saved = Counter(
            "prismcache_tokens_saved_total", "Upstream tokens not generated thanks to hits.", tc,
            clamp)
        self.usd_saved = Counter(
            "prismcache_usd_saved_total",
            "Estimated upstream spend saved by hits (USD, the category's price_per_1k_tokens).",
            tc, clamp)
        self.stores = Counter(
            "prismcache_stores_total",
            "Upstream answers offered to the cache, by outcome (stored, refused, error).",
            ("category", "outcome"), clamp)
        self.cache_errors = Counter(
            "prismcache_cache_errors_total",
            "Cache operations that failed open (the request was served from upstream).",
            ("operation",))
        self.upstream_errors = Counter(
            "prismcache_upstream_errors_total",
            "Upstream calls that failed or answered an error, by the status sent back.",
            ("endpoint", "status"))
        self.coalesced = Counter(
            "prismcache_coalesced_total",
            "Requests that shared another identical request's upstream call.", ("endpoint",))
        self.rejected = Counter(
            "prismcache_rejected_total",
            "Requests refused before reaching the cache (bad_request, unauthorized).",
            ("endpoint", "reason"))
        self.fallbacks = Counter(
            "prismcache_fallback_total",
            "Requests the upstream refused (429/503/timeout) answered from a near entry "
            "instead (kind=near); not counted as hits.", ("endpoint", "tenant", "category", "kind"),
            clamp)
        self.relief = Counter(
            "prismcache_relief_total",
            "Missed requests answered at once from a near or stale entry (kind) without an "
            "upstream call, while the upstream was saturated; not counted as hits.",
            ("endpoint", "tenant", "category", "kind"), clamp)
        self.shed = Counter(
            "prismcache_shed_total",
            "Work skipped to keep responses moving: semantic lookups whose embedding would "
            "have waited past server.lookup_budget_ms (what=lookup; a miss, reason busy), and "
            "stores after replies dropped: server.store_queue full, or the store of a busy "
            "miss still over that budget (what=store).",
            ("what",))
        self.inflight = 0
        # Models are named by clients: the load controller's per-model signals (and their
        # metric lines) keep the first MODEL_LABELS names and pool the rest as "other".
        self.models = BoundedLabels(MODEL_LABELS)

    def all(self) -> list[Counter | Histogram]:
        """Every metric, in exposition order."""
        return [self.requests, self.false_hits, self.hit_seconds, self.miss_overhead_seconds,
                self.upstream_seconds, self.tokens_saved, self.usd_saved, self.stores,
                self.cache_errors, self.upstream_errors, self.coalesced, self.rejected,
                self.fallbacks, self.relief, self.shed]

    def render(self, cache_stats: Mapping[str, CategoryStats] | None = None) -> str:
        """The text exposition of every metric, plus gauges per category of the cache's size
        (``prismcache_entries``, ``prismcache_bytes``) and of what each holds above its
        guaranteed share (``prismcache_borrowed_entries``, ``prismcache_borrowed_bytes``, as
        :meth:`SemanticCache.stats` computed them) when ``cache_stats`` is given."""
        lines: list[str] = []
        for metric in self.all():
            lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}"]
            lines += metric.samples()
        lines += ["# HELP prismcache_inflight_requests Requests being served now.",
                  "# TYPE prismcache_inflight_requests gauge",
                  f"prismcache_inflight_requests {self.inflight}"]
        if cache_stats is not None:
            for name, field, help in (("prismcache_entries", "entries", "Entries stored."),
                                      ("prismcache_bytes", "bytes", "Bytes stored.")):
                lines += [f"# HELP {name} {help} per category", f"# TYPE {name} gauge"]
                lines += [f'{name}{{category="{_escape(c)}"}} {getattr(s, field)}'
                          for c, s in sorted(cache_stats.items())]
            for name, field in (("prismcache_borrowed_entries", "entries"),
                                ("prismcache_borrowed_bytes", "bytes")):
                lines += [f"# HELP {name} {field.capitalize()} held above the category's "
                          "guaranteed share (given back first when the cache is full).",
                          f"# TYPE {name} gauge"]
                lines += [f'{name}{{category="{_escape(c)}"}} {getattr(s, "borrowed_" + field)}'
                          for c, s in sorted(cache_stats.items())]
        return "\n".join(lines) + "\n"


def _clamper(names: tuple[str, ...],
             clamp: Clamp | None) -> Callable[[tuple[str, ...]], tuple[str, ...]]:
    """A function bounding the values of the clamped labels of a label tuple."""
    slots = [(i, clamp[name]) for i, name in enumerate(names) if clamp and name in clamp]
    if not slots:
        return lambda labels: labels

    def bound(labels: tuple[str, ...]) -> tuple[str, ...]:
        out = list(labels)
        for i, fn in slots:
            out[i] = fn(out[i])
        return tuple(out)

    return bound


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))
