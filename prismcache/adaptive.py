"""Load-adaptive policies: when an upstream model is overloaded, the cache takes more load.

The proxy reports every upstream call to :class:`LoadSignals` (in-flight requests, latency —
time to the response head, which is the time to first token for streams — and 429/503
answers). :class:`LoadController` turns them into a *load level* in [0, 1] per model, with
hysteresis: the level rises while the load signal is at or above ``up_at``, falls while it is at
or below ``down_at``, holds in between, and rises faster than it falls. :class:`AdaptivePolicy`
is applied by the cache's :class:`~prismcache.policies.PolicyResolver`: at level ``x`` a category's
threshold (and, with a verifier, its ``verify_low`` and ``cutoff``) is lowered by
``x * max_threshold_drop`` and its TTL multiplied by
``1 + x * (max_ttl_factor - 1)``; both bounds are set per category, so the operator fixes how
much precision may be traded (0 and 1: never adjusted, the default).

The ``adaptive:`` config section (validated here, not in :mod:`prismcache.config`)::

    adaptive:
      enabled: true
      window: 30s             # moving window of latencies and answers
      inflight_high: 16       # in-flight calls per model that count as saturated
      latency_high: 2s        # p95 latency that counts as saturated
      error_rate_high: 0.05   # share of 429/503 answers in the window that counts as saturated
      up_at: 1.0              # load signal (max of the three ratios) at which the level rises
      down_at: 0.6            # ... at which it falls; in between it holds
      rise_per_second: 0.25
      fall_per_second: 0.05
      defaults: {max_threshold_drop: 0.0, max_ttl_factor: 1.0}
      categories:
        support: {max_threshold_drop: 0.05, max_ttl_factor: 4}

>>> from prismcache.config import CategoryPolicy
>>> now = [0.0]
>>> control = LoadController(AdaptiveSettings(inflight_high=2), clock=lambda: now[0])
>>> for _ in range(4): control.signals.started("m")
>>> for t in range(5):
...     now[0] = float(t)
...     level = control.level("m")
>>> level
1.0
>>> hook = AdaptivePolicy(control, {"faq": Bounds(max_threshold_drop=0.05)})
>>> hook("faq", CategoryPolicy(threshold=0.9), "m").threshold
0.85
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Any

from prismcache.config import CacheConfig, CategoryPolicy, parse_duration
from prismcache.errors import ConfigError

__all__ = ["AdaptivePolicy", "AdaptiveSettings", "Bounds", "LoadController", "LoadSignals"]

log = logging.getLogger("prismcache.adaptive")
OVERLOAD_STATUSES = frozenset({429, 503})
_MIN_SAMPLES = 5  # latencies before the p95 counts


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """How far one category's policy may move at load level 1."""

    max_threshold_drop: float = 0.0
    max_ttl_factor: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_threshold_drop < 1.0:
            raise ConfigError(f"max_threshold_drop must be in [0, 1), got {self.max_threshold_drop}")
        if not 1.0 <= self.max_ttl_factor <= 1000.0:
            raise ConfigError(f"max_ttl_factor must be in [1, 1000], got {self.max_ttl_factor}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveSettings:
    """The ``adaptive:`` section (durations in seconds); see the module docstring."""

    enabled: bool = True
    window: float = 30.0
    inflight_high: float = 16.0
    latency_high: float = 2.0
    error_rate_high: float = 0.05
    up_at: float = 1.0
    down_at: float = 0.6
    rise_per_second: float = 0.25
    fall_per_second: float = 0.05
    defaults: Bounds = Bounds()
    categories: Mapping[str, Bounds] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("window", "inflight_high", "latency_high", "error_rate_high",
                     "rise_per_second", "fall_per_second"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"adaptive.{name} must be positive")
        if not 0 <= self.down_at < self.up_at:
            raise ConfigError("adaptive: need 0 <= down_at < up_at (the hysteresis band)")

    def bounds(self, category: str) -> Bounds:
        """The bounds of ``category`` (the section's ``defaults`` when it names none)."""
        return self.categories.get(category, self.defaults)

    @classmethod
    def from_config(cls, config: CacheConfig) -> AdaptiveSettings | None:
        """Validate ``config.sections["adaptive"]``; ``None`` when absent or disabled.
        Raises :class:`ConfigError` naming the key."""
        raw = config.sections.get("adaptive")
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise ConfigError("adaptive: expected a mapping")
        allowed = {f.name for f in fields(cls)}
        if unknown := set(raw) - allowed:
            raise ConfigError(f"adaptive: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        values: dict[str, Any] = {k: v for k, v in raw.items()
                                  if k not in ("defaults", "categories")}
        for key in ("window", "latency_high"):
            if key in values:
                values[key] = _seconds(values[key], f"adaptive.{key}")
        defaults = _bounds(raw.get("defaults") or {}, "adaptive.defaults", Bounds())
        categories = {}
        for name, spec in (raw.get("categories") or {}).items():
            if name not in config.categories:
                raise ConfigError(f"adaptive.categories: unknown category {name!r}")
            categories[name] = _bounds(spec or {}, f"adaptive.categories.{name}", defaults)
        try:
            settings = cls(**values, defaults=defaults, categories=categories)
        except TypeError as exc:
            raise ConfigError(f"adaptive: {exc}") from None
        return settings if settings.enabled else None


class LoadSignals:
    """What the proxy observes of each upstream model, over a moving window. Thread-safe."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window, self._clock = window, clock
        self._lock = threading.Lock()
        self._inflight: dict[str, int] = {}
        self._answers: dict[str, deque[tuple[float, float, bool]]] = {}

    def started(self, model: str) -> None:
        """An upstream call to ``model`` began."""
        with self._lock:
            self._inflight[model] = self._inflight.get(model, 0) + 1

    def finished(self, model: str, seconds: float, status: int) -> None:
        """A call to ``model`` answered ``status`` after ``seconds`` (to the response head)."""
        with self._lock:
            self._inflight[model] = max(0, self._inflight.get(model, 0) - 1)
            answers = self._answers.setdefault(model, deque())
            answers.append((self._clock(), seconds, status in OVERLOAD_STATUSES))

    def cancelled(self, model: str) -> None:
        """A call to ``model`` ended without an answer (the client left): no sample."""
        with self._lock:
            self._inflight[model] = max(0, self._inflight.get(model, 0) - 1)

    def models(self) -> list[str]:
        """Every model seen so far."""
        with self._lock:
            return sorted(set(self._inflight) | set(self._answers))

    def snapshot(self, model: str) -> tuple[int, float | None, float, int]:
        """``(in-flight, p95 seconds or None, overload-answer rate, answers)`` in the window."""
        with self._lock:
            answers = self._answers.get(model, deque())
            horizon = self._clock() - self._window
            while answers and answers[0][0] < horizon:
                answers.popleft()
            latencies = sorted(s for _, s, _ in answers)
            errors = sum(e for _, _, e in answers)
            inflight = self._inflight.get(model, 0)
        p95 = (latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)]
               if len(latencies) >= _MIN_SAMPLES else None)
        return inflight, p95, errors / len(answers) if answers else 0.0, len(answers)


class LoadController:
    """Maps each model's load signals to a level in [0, 1], with hysteresis. Thread-safe.

    The load signal is the largest of in-flight / ``inflight_high``, p95 / ``latency_high``
    and overload-answer rate / ``error_rate_high``. The level integrates it: up at
    ``rise_per_second`` while the signal >= ``up_at``, down at ``fall_per_second`` while it
    <= ``down_at``. The level is brought up to date whenever it is read (every lookup reads it);
    a rise counts at most one second between two reads, so a spike seen once after a long quiet
    spell cannot jump the level. Level changes of 0.1 or more, and reaching 0 or 1, are logged at INFO.
    """

    def __init__(self, settings: AdaptiveSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self._clock = settings, clock
        self.signals = LoadSignals(settings.window, clock)
        self._lock = threading.Lock()
        self._levels: dict[str, tuple[float, float, float]] = {}  # model -> level, t, logged

    def signal(self, model: str) -> float:
        """The load signal of ``model`` now (1.0 = saturated by the configured marks)."""
        s = self.settings
        inflight, p95, error_rate, _ = self.signals.snapshot(model)
        return max(inflight / s.inflight_high, (p95 or 0.0) / s.latency_high,
                   error_rate / s.error_rate_high)

    def level(self, model: str | None = None) -> float:
        """The level of ``model`` now, or the highest of all models for ``None``/``""``."""
        if not model:
            return max((self.level(m) for m in self.signals.models()), default=0.0)
        signal, now, s = self.signal(model), self._clock(), self.settings
        with self._lock:
            level, since, logged = self._levels.get(model, (0.0, now, 0.0))
            dt = max(0.0, now - since)
            if signal >= s.up_at:  # one look at the signal raises the level by <= 1 s worth
                level = min(1.0, level + s.rise_per_second * min(dt, 1.0))
            elif signal <= s.down_at:
                level = max(0.0, level - s.fall_per_second * dt)
            if abs(level - logged) >= 0.1 or (level in (0.0, 1.0) and level != logged):
                log.info("load level of %s %.2f -> %.2f (signal %.2f)",
                         model, logged, level, signal)
                logged = level
            self._levels[model] = (level, now, logged)
        return level


class AdaptivePolicy:
    """A category's policy adjusted to its model's load level.

    ``bounds`` maps category names to :class:`Bounds` (unknown names: ``default``). Neither
    the threshold nor the TTL ever leaves ``[threshold - max_threshold_drop, threshold]`` and
    ``[ttl, ttl * max_ttl_factor]``.
    """

    def __init__(self, controller: LoadController, bounds: Mapping[str, Bounds] | None = None,
                 *, default: Bounds = Bounds()) -> None:
        self.controller = controller
        self._bounds = dict(bounds or {})
        self._default = default

    @classmethod
    def from_settings(cls, settings: AdaptiveSettings, *,
                      clock: Callable[[], float] = time.monotonic) -> AdaptivePolicy:
        """A controller and hook built from validated settings."""
        return cls(LoadController(settings, clock), settings.categories,
                   default=settings.defaults)

    def __call__(self, category: str, policy: CategoryPolicy, model: str) -> CategoryPolicy:
        return adjust(policy, self._bounds.get(category, self._default),
                      self.controller.level(model))

    def metric_lines(self, policies: Mapping[str, CategoryPolicy]) -> Iterable[str]:
        """Prometheus lines: level, signal and in-flight per model; the effective threshold and
        TTL per category (at the highest model level)."""
        models = self.controller.signals.models()
        yield "# HELP prismcache_load_level Load level of an upstream model (0 normal, 1 overloaded)."
        yield "# TYPE prismcache_load_level gauge"
        for m in models:
            yield f'prismcache_load_level{{model="{_esc(m)}"}} {self.controller.level(m):.4g}'
        yield "# HELP prismcache_upstream_inflight Upstream calls in flight per model."
        yield "# TYPE prismcache_upstream_inflight gauge"
        for m in models:
            yield f'prismcache_upstream_inflight{{model="{_esc(m)}"}} {self.controller.signals.snapshot(m)[0]}'
        yield "# HELP prismcache_effective_threshold Similarity threshold in force per category."
        yield "# TYPE prismcache_effective_threshold gauge"
        effective = {c: self(c, p, "") for c, p in sorted(policies.items())}
        for c, p in effective.items():
            yield f'prismcache_effective_threshold{{category="{_esc(c)}"}} {p.threshold:.6g}'
        yield "# HELP prismcache_effective_ttl_seconds TTL in force per category (absent: never)."
        yield "# TYPE prismcache_effective_ttl_seconds gauge"
        for c, p in effective.items():
            if p.ttl is not None:
                yield f'prismcache_effective_ttl_seconds{{category="{_esc(c)}"}} {p.ttl.total_seconds():.6g}'


def adjust(policy: CategoryPolicy, bounds: Bounds, level: float) -> CategoryPolicy:
    """``policy`` at load ``level`` (clamped to [0, 1]) within ``bounds``.

    >>> adjust(CategoryPolicy(threshold=0.9, ttl=timedelta(hours=1)),
    ...        Bounds(max_threshold_drop=0.1, max_ttl_factor=3), 0.5)
    CategoryPolicy(threshold=0.85, ttl=2h, quota=0.1, eviction='lru')
    """
    level = min(1.0, max(0.0, level))
    if level == 0.0 or (bounds.max_threshold_drop == 0.0 and bounds.max_ttl_factor == 1.0):
        return policy
    # round() keeps the reported threshold readable; max() keeps it inside (0, 1]
    threshold = max(round(policy.threshold - level * bounds.max_threshold_drop, 6), 1e-6)
    threshold = max(threshold, policy.threshold - bounds.max_threshold_drop)
    ttl = policy.ttl
    if ttl is not None:
        ttl = timedelta(seconds=ttl.total_seconds() * (1.0 + level * (bounds.max_ttl_factor - 1)))
    # With a verifier, the same drop widens the grey zone and lowers the cut-off.
    threshold = min(threshold, policy.threshold)
    drop = policy.threshold - threshold
    fallback = policy.fallback_threshold  # the near-answer bound stays under the threshold
    return replace(policy, threshold=threshold, ttl=ttl,
                   verify_low=max(policy.verify_low - drop, 1e-6),
                   cutoff=max(policy.cutoff - drop, 0.0),
                   fallback_threshold=None if fallback is None else min(fallback, threshold))


def _bounds(raw: Any, key: str, base: Bounds) -> Bounds:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: expected a mapping")
    allowed = {"max_threshold_drop", "max_ttl_factor"}
    if unknown := set(raw) - allowed:
        raise ConfigError(f"{key}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    try:
        return replace(base, **{k: float(v) for k, v in raw.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _seconds(value: Any, key: str) -> float:
    duration = parse_duration(value, key=key)
    if duration is None:
        raise ConfigError(f"{key} must be a duration")
    return duration.total_seconds()


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
