"""Cache economics per category: does caching this category pay, measured live?

A lookup costs time on every miss (classify + embed + search: the *miss overhead* ``O``) and
saves, on every hit, the upstream call (``U`` seconds, ``usd`` dollars) less the time to serve
the hit (``H``). :class:`EconomicsTracker` keeps these per category over a moving window (fed by
the proxy, or by :meth:`EconomicsTracker.lookup` for library callers) and computes

* the **break-even hit rate** ``O / (U - H)`` (as ``DESIGN.md`` defines it; the exact root of
  the saving below is ``O / (U - H + O)``, so this errs towards flagging), and
* the **net saving** per request ``h (U - H) - (1 - h) O`` seconds and ``h x usd`` dollars,
  and per hour at the window's request rate.

A category whose hit rate stays below break-even over a full ``window`` with at least
``min_requests`` requests is *flagged*. With ``auto_disable`` (globally or for the category)
it is also *disabled*: the tracker, installed as the cache's policy hook, turns the category's
policy off, so lookups stop before embedding and searching (a category only the embedding
classifier can name is still embedded once, to be named). While disabled, one lookup in
``shadow_sample`` runs in **shadow mode**: the full lookup runs, a hit is counted as a
would-be hit but not served, and a miss is stored so the shadow cache keeps learning. Sampling
on the request path was chosen over an off-path lookup of every request because it bounds the
extra CPU to 1/N on a machine the cache shares with the proxy, and works the same in the library
and the proxy. Its estimate is conservative (the shadow cache holds only sampled entries plus
those from before the category was disabled), which errs towards staying off. The category is
re-enabled when the shadow hit rate reaches ``reenable_margin`` x break-even (hysteresis: the
margin, plus a full window of data before it can be flagged again).

    economics:
      window: 10m
      min_requests: 200
      auto_disable: false          # or per category below
      shadow_sample: 10
      min_shadow: 30
      reenable_margin: 1.25
      categories: {general: {auto_disable: true}}
      admission: {...}             # see prismcache.admission
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from prismcache.admission import Admission, AdmissionSettings
from prismcache.config import CacheConfig, CategoryPolicy, parse_duration
from prismcache.decision import MissReason
from prismcache.errors import ConfigError
from prismcache.results import Hit, LookupResult, Miss

__all__ = ["Admission", "AdmissionSettings", "CategoryEconomics", "EconomicsSettings",
           "EconomicsTracker"]

log = logging.getLogger("prismcache.economics")
T = TypeVar("T")
_BUCKETS = 10
_FIELDS = ("lookups", "hits", "hit_n", "hit_s", "over_n", "over_s", "up_n", "up_s", "usd",
           "shadow_n", "shadow_hits", "skipped")


@dataclass(frozen=True, slots=True, kw_only=True)
class EconomicsSettings:
    """The ``economics:`` section (``window`` in seconds); see the module docstring."""

    window: float = 600.0
    min_requests: int = 200
    auto_disable: bool = False
    shadow_sample: int = 10
    min_shadow: int = 30
    reenable_margin: float = 1.25
    categories: Mapping[str, bool] = field(default_factory=dict)  # category -> auto_disable

    def __post_init__(self) -> None:
        if self.window <= 0 or self.min_requests < 1 or self.shadow_sample < 1 \
                or self.min_shadow < 1 or self.reenable_margin < 1.0:
            raise ConfigError("economics: need window > 0, min_requests, shadow_sample, "
                              "min_shadow >= 1 and reenable_margin >= 1")

    def auto_disables(self, category: str) -> bool:
        """Whether a flagged ``category`` is disabled (its own setting, else the global)."""
        return self.categories.get(category, self.auto_disable)

    @classmethod
    def from_config(cls, config: CacheConfig) -> EconomicsSettings:
        """Validate ``config.sections["economics"]`` (absent: the defaults)."""
        raw = dict(config.sections.get("economics") or {})
        raw.pop("admission", None)  # validated by prismcache.admission
        allowed = {"window", "min_requests", "auto_disable", "shadow_sample", "min_shadow",
                   "reenable_margin", "categories"}
        if unknown := set(raw) - allowed:
            raise ConfigError(f"economics: unknown keys {sorted(unknown)}; "
                              f"allowed: {sorted(allowed | {'admission'})}")
        if "window" in raw:
            window = parse_duration(raw["window"], key="economics.window")
            if window is None:
                raise ConfigError("economics.window must be a duration")
            raw["window"] = window.total_seconds()
        categories = {}
        for name, spec in (raw.pop("categories", None) or {}).items():
            if name not in config.categories:
                raise ConfigError(f"economics.categories: unknown category {name!r}")
            if not isinstance(spec, Mapping) or set(spec) - {"auto_disable"}:
                raise ConfigError(f"economics.categories.{name}: only auto_disable is allowed")
            categories[name] = bool(spec.get("auto_disable", False))
        try:
            return cls(**raw, categories=categories)
        except TypeError as exc:
            raise ConfigError(f"economics: {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class CategoryEconomics:
    """One row of the economics table (seconds, USD; rates per request over the window)."""

    category: str
    requests: int
    hit_rate: float
    miss_overhead_s: float
    hit_s: float
    upstream_s: float
    usd_per_call: float
    break_even_hit_rate: float | None
    net_s_per_request: float
    net_usd_per_request: float
    net_s_per_hour: float
    net_usd_per_hour: float
    flagged: bool
    disabled: bool
    auto_disable: bool
    shadow_lookups: int
    shadow_hit_rate: float | None


class _State:
    def __init__(self, now: float, bucket: int) -> None:
        self.buckets: dict[int, dict[str, float]] = {}
        self.total = dict.fromkeys(_FIELDS, 0.0)
        self.bucket = bucket  # the newest bucket fed; ``window`` sums the buckets up to it
        self.window = dict.fromkeys(_FIELDS, 0.0)
        self.first_seen = self.enabled_since = now
        self.flagged = self.disabled = False

    def roll(self, bucket: int) -> None:
        """Move the window to end at ``bucket``: drop older buckets, re-sum what is left."""
        self.bucket = bucket
        for old in [b for b in self.buckets if b <= bucket - _BUCKETS]:
            del self.buckets[old]
        self.window = _summed(self.buckets, bucket)


class EconomicsTracker:
    """Live economics per category, and the policy hook that disables categories that do not
    pay. Thread-safe. ``clock`` (seconds) and ``rng`` are injectable; ``timer`` times lookups.

    ``policies`` supplies the fallbacks (``upstream_latency``, ``price_per_1k_tokens`` x
    ``tokens``) used until the upstream has been measured for a category.
    """

    def __init__(self, settings: EconomicsSettings, policies: Mapping[str, CategoryPolicy], *,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 timer: Callable[[], float] = time.perf_counter, tokens: int = 200) -> None:
        self.settings, self._policies = settings, dict(policies)
        self._clock, self._rng, self._timer, self._tokens = clock, rng or random.Random(0), \
            timer, tokens
        self._lock = threading.Lock()
        self._cats: dict[str, _State] = {}
        self._off: dict[str, CategoryPolicy] = {}

    # -- feeding -----------------------------------------------------------------------------

    def record_lookup(self, category: str, *, hit: bool, seconds: float | None = None) -> None:
        """A lookup decided (``seconds``: its hit serving time, or its miss overhead)."""
        self._add(category, lookups=1, hits=int(hit), **(
            {} if seconds is None else {"hit_n": 1, "hit_s": seconds} if hit
            else {"over_n": 1, "over_s": seconds}))

    def record_hit_time(self, category: str, seconds: float) -> None:
        """Time to serve one hit, end to end (the proxy measures it)."""
        self._add(category, hit_n=1, hit_s=seconds)

    def record_overhead(self, category: str, seconds: float) -> None:
        """Time one miss spent in the cache/proxy, not waiting upstream."""
        self._add(category, over_n=1, over_s=seconds)

    def record_upstream(self, category: str, seconds: float, usd: float | None = None) -> None:
        """One upstream call of ``category``: its latency and (if known) its price."""
        if usd is None:
            policy = self._policy(category)
            usd = policy.price_per_1k_tokens * self._tokens / 1000
        self._add(category, up_n=1, up_s=seconds, usd=usd)

    def record_shadow(self, category: str, *, would_hit: bool, seconds: float | None = None
                      ) -> None:
        """A shadow lookup of a disabled category (``seconds``: its overhead)."""
        self._add(category, shadow_n=1, shadow_hits=int(would_hit),
                  **({} if seconds is None else {"over_n": 1, "over_s": seconds}))

    # -- the switch the cache's PolicyResolver reads, and the library gate ----------------------

    def disabled(self, category: str) -> bool:
        """Whether ``category`` is disabled by the economics now."""
        state = self._cats.get(category)
        return state is not None and state.disabled

    def shadow_now(self) -> bool:
        """Draw whether this request of a disabled category runs in shadow mode (1 in N)."""
        with self._lock:
            return self._rng.random() * self.settings.shadow_sample < 1.0

    def lookup(self, cache: Any, body: Any, *, tenant: str = "default",
               category: str | None = None, timed: bool = True) -> LookupResult:
        """``cache.lookup`` with the economics applied and recorded: a disabled category gets
        ``Miss(ECONOMICS_OFF, cacheable=False)``, or in shadow mode ``Miss(SHADOW_HIT |
        SHADOW_MISS, cacheable=True)`` — store its answer with ``cache.store(...,
        shadow=True)``. ``cache`` must resolve its policies through this tracker."""
        t = self._timer()
        result = cache.lookup(body, tenant=tenant, category=category)
        return self.judge(cache, body, result, tenant=tenant, category=category,
                          seconds=self._timer() - t if timed else None)

    def judge(self, cache: Any, body: Any, result: LookupResult, *, tenant: str = "default",
              category: str | None = None, seconds: float | None = None) -> LookupResult:
        """What :meth:`lookup` answers for ``result``, a ``cache.lookup`` of ``body`` made
        by the caller (the proxy runs its phases apart), which took ``seconds`` (``None``:
        not timed). May run a shadow lookup (blocking), as ``lookup`` does."""
        timed = seconds is not None
        name = result.category
        if name is None or isinstance(result, Miss) and not result.cacheable \
                and not self.disabled(name):
            return result
        if isinstance(result, Miss) and result.reason is MissReason.DISABLED \
                and self.disabled(name):
            if not self.shadow_now():
                self._add(name, skipped=1)
                return Miss(reason=MissReason.ECONOMICS_OFF, category=name, cacheable=False)
            t = self._timer()
            shadow = cache.lookup(body, tenant=tenant, category=category, shadow=True)
            self.record_shadow(name, would_hit=shadow.hit,
                               seconds=self._timer() - t if timed else None)
            return Miss(reason=MissReason.SHADOW_HIT if shadow.hit else MissReason.SHADOW_MISS,
                        category=name,
                        similarity=shadow.similarity, cacheable=True)
        self.record_lookup(name, hit=isinstance(result, Hit), seconds=seconds)
        return result

    # -- the table -------------------------------------------------------------------------------

    def table(self) -> list[CategoryEconomics]:
        """One row per category seen, over the current window (flags brought up to date)."""
        now = self._clock()
        with self._lock:
            return [self._evaluate(name, state, now) for name, state in sorted(self._cats.items())]

    def as_json(self) -> dict[str, Any]:
        """The table and settings as JSON (what ``GET /admin/economics`` answers)."""
        return {"window_s": self.settings.window, "min_requests": self.settings.min_requests,
                "categories": [asdict(row) for row in self.table()]}

    def metric_lines(self) -> list[str]:
        """Prometheus gauges: break-even hit rate, and whether each category is disabled."""
        rows = self.table()
        lines = ["# HELP prismcache_break_even_hit_rate Hit rate a category needs to pay.",
                 "# TYPE prismcache_break_even_hit_rate gauge"]
        lines += [f'prismcache_break_even_hit_rate{{category="{r.category}"}} '
                  f"{r.break_even_hit_rate:.6g}" for r in rows if r.break_even_hit_rate is not None]
        lines += ["# HELP prismcache_category_disabled 1 while economics disable a category.",
                  "# TYPE prismcache_category_disabled gauge"]
        lines += [f'prismcache_category_disabled{{category="{r.category}"}} {int(r.disabled)}'
                  for r in rows]
        return lines

    # -- internals -----------------------------------------------------------------------------

    def _policy(self, category: str) -> CategoryPolicy:
        return self._policies.get(category) or next(iter(self._policies.values()),
                                                     CategoryPolicy())

    def _add(self, category: str, **counts: float) -> None:
        now = self._clock()
        bucket = int(now // (self.settings.window / _BUCKETS))
        with self._lock:
            state = self._cats.get(category)
            if state is None:
                state = self._cats[category] = _State(now, bucket)
            if bucket != state.bucket:
                state.roll(bucket)
            counters = state.buckets.setdefault(bucket, dict.fromkeys(_FIELDS, 0.0))
            window, total = state.window, state.total
            for key, value in counts.items():
                counters[key] += value
                total[key] += value
                window[key] += value
            self._judge(category, state, now, window)

    def _evaluate(self, name: str, state: _State, now: float) -> CategoryEconomics:
        """The row of ``name`` over the window ending now (its flags brought up to date)."""
        w = _summed(state.buckets, int(now // (self.settings.window / _BUCKETS)))
        policy = self._policy(name)
        overhead, hit_s, upstream, break_even, lookups, h = self._judge(name, state, now, w)
        usd = _mean(w, state.total, "usd", "up_n",
                    policy.price_per_1k_tokens * self._tokens / 1000)
        saved = upstream - hit_s
        shadow_rate = w["shadow_hits"] / w["shadow_n"] if w["shadow_n"] else None
        rate_h = h if not state.disabled else 0.0
        net_s = rate_h * saved - (1 - rate_h) * overhead if lookups else 0.0
        span = max(1.0, min(self.settings.window, now - state.first_seen))
        per_hour = (lookups + w["skipped"] + w["shadow_n"]) * 3600.0 / span
        return CategoryEconomics(
            category=name, requests=lookups, hit_rate=h, miss_overhead_s=overhead, hit_s=hit_s,
            upstream_s=upstream, usd_per_call=usd, break_even_hit_rate=break_even,
            net_s_per_request=net_s, net_usd_per_request=rate_h * usd,
            net_s_per_hour=net_s * per_hour, net_usd_per_hour=rate_h * usd * per_hour,
            flagged=state.flagged, disabled=state.disabled,
            auto_disable=self.settings.auto_disables(name),
            shadow_lookups=int(w["shadow_n"]), shadow_hit_rate=shadow_rate)

    def _judge(self, name: str, state: _State, now: float, w: dict[str, float]
               ) -> tuple[float, float, float, float | None, int, float]:
        """Bring ``name``'s flagged/disabled state up to date from the window sums ``w``;
        returns (miss overhead, hit time, upstream time, break-even, lookups, hit rate).
        Runs on every record, so it reads sums only (no pass over the buckets)."""
        s = self.settings
        policy = self._policy(name)
        overhead = _mean(w, state.total, "over_s", "over_n", 0.0)
        hit_s = _mean(w, state.total, "hit_s", "hit_n", 0.0)
        upstream = _mean(w, state.total, "up_s", "up_n", policy.upstream_latency)
        saved = upstream - hit_s
        break_even = overhead / saved if saved > 0 else None
        lookups = int(w["lookups"])
        h = w["hits"] / lookups if lookups else 0.0
        shadow_rate = w["shadow_hits"] / w["shadow_n"] if w["shadow_n"] else None
        below = break_even is None or h < break_even
        if not state.disabled:
            state.flagged = (lookups >= s.min_requests and below
                             and now - state.enabled_since >= s.window)
            if state.flagged and s.auto_disables(name):
                state.disabled = True
                log.warning("disabling category %s: hit rate %.3f below break-even "
                            "%s over %d requests; shadow mode 1 in %d", name, h,
                            _fmt(break_even), lookups, s.shadow_sample)
        elif (w["shadow_n"] >= s.min_shadow and shadow_rate is not None
              and break_even is not None and shadow_rate >= break_even * s.reenable_margin):
            state.disabled = state.flagged = False
            state.enabled_since = now
            log.warning("re-enabling category %s: shadow hit rate %.3f >= %.2f x "
                        "break-even %.3f", name, shadow_rate, s.reenable_margin, break_even)
        return overhead, hit_s, upstream, break_even, lookups, h


def _summed(buckets: dict[int, dict[str, float]], current: int) -> dict[str, float]:
    """Each field summed over the buckets of the window ending at bucket ``current``."""
    w = dict.fromkeys(_FIELDS, 0.0)
    for bucket, counters in buckets.items():
        if current - _BUCKETS < bucket <= current:
            for key in _FIELDS:
                w[key] += counters[key]
    return w


def _mean(window: dict[str, float], total: dict[str, float], s: str, n: str,
          default: float) -> float:
    if window[n]:
        return window[s] / window[n]
    return total[s] / total[n] if total[n] else default


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
