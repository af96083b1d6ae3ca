"""Per-category counters of one cache since it was opened (lookups, hits, misses, stores,
evictions, expirations, errors, guard and verifier rejections), thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace

from prismcache.entry import UsageCount
from prismcache.results import CategoryStats

__all__ = ["Counters"]


class Counters:
    """One :class:`CategoryStats` per category, created on first use."""

    def __init__(self, categories: Iterable[str]) -> None:
        self._stats: dict[str, CategoryStats] = {name: CategoryStats() for name in categories}
        self._lock = threading.Lock()

    def count(self, category: str, field: str, extra: str | None = None, *, n: int = 1) -> None:
        """Add ``n`` to ``field`` (and to ``extra`` when given) of ``category``."""
        with self._lock:
            stat = self._stat(category)
            setattr(stat, field, getattr(stat, field) + n)
            if extra is not None:
                setattr(stat, extra, getattr(stat, extra) + n)

    def rejections(self, category: str, guards: Iterable[str], verifier: int) -> None:
        """Count candidates a guard (by name) or the verifier rejected."""
        with self._lock:
            stat = self._stat(category)
            stat.verifier_rejections += verifier
            for name in guards:
                stat.guard_rejections[name] = stat.guard_rejections.get(name, 0) + 1

    def copy(self, category: str) -> CategoryStats:
        """A snapshot of one category's counters (without the guard breakdown)."""
        with self._lock:
            return replace(self._stat(category), guard_rejections={})

    def merged(self, usage: Mapping[str, UsageCount]) -> dict[str, CategoryStats]:
        """Snapshots of every category's counters, with the entries and bytes in ``usage``."""
        with self._lock:
            out = {}
            for name in sorted(set(self._stats) | set(usage)):
                s = self._stats.get(name) or CategoryStats()
                copy = replace(s, guard_rejections=dict(s.guard_rejections))
                if (u := usage.get(name)) is not None:
                    copy.entries, copy.bytes = u.entries, u.bytes
                out[name] = copy
        return out

    def _stat(self, category: str) -> CategoryStats:
        stat = self._stats.get(category)
        if stat is None:
            stat = self._stats[category] = CategoryStats()
        return stat
