"""Cost-aware admission: refuse entries that are unlikely to pay back the space they take.

An entry pays back through its reuses. The expected reuses of a new entry in a category are
estimated from what the category's entries have done so far: ``hits / stores``, smoothed
(in steady state that is ``h / (1 - h)`` for hit rate ``h`` when every miss is stored). Each
reuse saves the entry's upstream cost (``Entry.cost`` in USD, or its upstream seconds valued at
``usd_per_second`` when the cost is unknown). Holding the entry costs its size at
``usd_per_mb`` — the opportunity cost of a megabyte of the category's quota. So::

    refuse  when  reuses x value < size / 1e6 x usd_per_mb

Before a category has ``min_lookups`` lookups there is no estimate and everything is admitted;
afterwards a share ``explore`` of the refused entries is admitted anyway, so a category whose
traffic starts repeating can earn its way back. Configured under ``economics.admission``::

    economics:
      admission:
        min_lookups: 100
        usd_per_mb: 0.01
        usd_per_second: 0.0002
        explore: 0.05
        categories: [general, creative]   # only these (default: every category)
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from prismcache.config import CacheConfig
from prismcache.entry import Entry
from prismcache.errors import ConfigError
from prismcache.results import CategoryStats

__all__ = ["Admission", "AdmissionSettings", "expected_reuses"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionSettings:
    """The ``economics.admission`` section; see the module docstring."""

    min_lookups: int = 100
    usd_per_mb: float = 0.01
    usd_per_second: float = 0.0002
    explore: float = 0.05
    categories: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.min_lookups < 0 or self.usd_per_mb < 0 or self.usd_per_second < 0:
            raise ConfigError("economics.admission: min_lookups, usd_per_mb and "
                              "usd_per_second must be >= 0")
        if not 0.0 <= self.explore <= 1.0:
            raise ConfigError(f"economics.admission.explore must be in [0, 1], got {self.explore}")

    @classmethod
    def parse(cls, raw: Any) -> AdmissionSettings:
        """Validate a mapping (``true`` means all defaults). Raises :class:`ConfigError`."""
        if raw is True:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError("economics.admission: expected true or a mapping")
        allowed = {f.name for f in fields(cls)}
        if unknown := set(raw) - allowed:
            raise ConfigError(f"economics.admission: unknown keys {sorted(unknown)}; "
                              f"allowed: {sorted(allowed)}")
        values = dict(raw)
        if values.get("categories") is not None:
            values["categories"] = tuple(values["categories"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"economics.admission: {exc}") from None


def expected_reuses(stats: CategoryStats) -> float:
    """Reuses a new entry of this category can expect: ``(hits + 1) / (stores + 2)`` so far
    (one imagined reuse in two imagined entries, so a category is never written off as 0)."""
    return (stats.hits + 1) / (stats.stores + 2)


class Admission:
    """The cache's ``admission`` hook: ``admission(entry, stats)`` returns ``None`` to admit,
    or why it refuses. Thread-safe; ``rng`` is injectable for tests.

    >>> from prismcache.entry import Entry
    >>> gate = Admission(AdmissionSettings(min_lookups=10, explore=0.0))
    >>> long = Entry(id=1, tenant="t", partition="p", category="c", model="m", exact_key="k",
    ...              query="q", request={}, response={}, size=50_000, cost=0.001)
    >>> gate(long, CategoryStats(lookups=100, hits=2, stores=98)) is not None   # one-off
    True
    >>> gate(long, CategoryStats(lookups=100, hits=60, stores=40)) is None      # repeats
    True
    """

    def __init__(self, settings: AdmissionSettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random(0)
        self._lock = threading.Lock()
        self.refused: dict[str, int] = {}

    @classmethod
    def from_config(cls, config: CacheConfig) -> Admission:
        """From ``config.sections["economics"]["admission"]``; unknown category names are a
        :class:`ConfigError`."""
        settings = AdmissionSettings.parse(config.sections["economics"]["admission"])
        for name in settings.categories or ():
            if name not in config.categories:
                raise ConfigError(f"economics.admission.categories: unknown category {name!r}")
        return cls(settings)

    def __call__(self, entry: Entry, stats: CategoryStats) -> str | None:
        s = self.settings
        if s.categories is not None and entry.category not in s.categories:
            return None
        if stats.lookups < s.min_lookups:
            return None
        value = entry.cost if entry.cost > 0 else entry.latency * s.usd_per_second
        saving = expected_reuses(stats) * value
        holding = entry.size / 1e6 * s.usd_per_mb
        if saving >= holding:
            return None
        with self._lock:
            if self._rng.random() < s.explore:
                return None
            self.refused[entry.category] = self.refused.get(entry.category, 0) + 1
        return f"expected saving {saving:.2g} USD < holding cost {holding:.2g} USD"
