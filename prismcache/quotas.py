"""Work-conserving quotas: which category gives up an entry when the cache is full.

A category's ``quota`` is the share of the cache's capacity it is *guaranteed* under
contention, not a ceiling while space is free:

* a category may grow into capacity nobody else uses (it *borrows* what it holds above its
  share);
* when the whole cache is over ``capacity.entries`` (or ``capacity.bytes``), the next victim
  comes from the category that borrows the most (usage / capacity - share, in the exceeded
  dimension), and within it the store takes the entry its eviction policy ranks lowest
  (LRU, LFU or GDSF priority);
* a category at or below its share loses entries only to its own admissions: when no
  category borrows (quotas summing to more than 1), the admitting category evicts its own;
* an optional ``max_share`` is a hard ceiling, enforced first, whatever space is free.

:meth:`Quotas.next_victim` is the one statement of the rule; the memory and SQLite stores call
it in their eviction loop, and the Redis store's Lua script restates it (the store contract
suite checks that the three agree).

>>> q = Quotas(capacity_entries=10, capacity_bytes=None, shares={"a": 0.5, "b": 0.5})
>>> q.next_victim({"a": (9, 0)}, "a") is None          # free space: a borrows
True
>>> q.next_victim({"a": (9, 0), "b": (2, 0)}, "b")     # full: the borrower gives way
'a'
>>> q.next_victim({"a": (5, 0), "b": (6, 0)}, "b")     # b now borrows: it evicts its own
'b'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prismcache.config import CacheConfig
from prismcache.entry import UsageCount

__all__ = ["Quotas", "Usage"]

#: entries and bytes per category, as a store counts them
Usage = Mapping[str, tuple[int, int]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Quotas:
    """The capacity of the cache and each category's guaranteed share and ceiling.

    Attributes:
        capacity_entries: entries the whole cache may hold.
        capacity_bytes: bytes the whole cache may hold, or ``None``.
        shares: guaranteed share (0-1) per category; unnamed categories have 0.
        ceilings: hard ceiling (``max_share``, 0-1) of the categories that have one.
    """

    capacity_entries: int
    capacity_bytes: int | None
    shares: Mapping[str, float]
    ceilings: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, config: CacheConfig) -> Quotas:
        """The quotas a config declares (``quota`` and ``max_share`` of every category)."""
        return cls(
            capacity_entries=config.capacity_entries,
            capacity_bytes=config.capacity_bytes,
            shares={name: p.quota for name, p in config.categories.items()},
            ceilings={name: p.max_share for name, p in config.categories.items()
                      if p.max_share is not None},
        )

    def limit(self, share: float) -> tuple[int, int | None]:
        """Entries and bytes that ``share`` of the capacity allows (rounded down)."""
        cap_bytes = self.capacity_bytes
        return (int(share * self.capacity_entries),
                None if cap_bytes is None else int(share * cap_bytes))

    def next_victim(self, usage: Usage, admitting: str) -> str | None:
        """The category to evict one entry from now, or ``None`` when every limit holds.

        ``usage`` is what the store holds (entries, bytes) per category, after admitting an
        entry of ``admitting``. First a category over its ceiling; then, when the cache is
        over capacity, the category furthest above its share (ties: the smaller name); when
        no category is above its share, ``admitting`` itself.
        """
        for name in sorted(usage):
            ceiling = self.ceilings.get(name)
            if ceiling is not None and _over(usage[name], *self.limit(ceiling)):
                return name
        entries = sum(n for n, _ in usage.values())
        size = sum(b for _, b in usage.values())
        cap_bytes = self.capacity_bytes
        full_entries = entries > self.capacity_entries
        full_bytes = cap_bytes is not None and size > cap_bytes
        if not (full_entries or full_bytes):
            return None
        victim, most = None, 0.0
        for name in sorted(usage):
            n, b = usage[name]
            share = self.shares.get(name, 0.0)
            above = -1.0
            if full_entries:
                above = n / self.capacity_entries - share
            if full_bytes and cap_bytes is not None:
                above = max(above, b / cap_bytes - share)
            if above > most:
                victim, most = name, above
        if victim is None and usage.get(admitting, (0, 0))[0] > 0:
            return admitting
        return victim

    def borrowed(self, usage: Mapping[str, UsageCount]) -> dict[str, UsageCount]:
        """Entries and bytes each category holds above its guaranteed share (0 when at or
        below it): the capacity it would give back first under contention."""
        out = {}
        for name, used in usage.items():
            n, b = self.limit(self.shares.get(name, 0.0))
            out[name] = UsageCount(entries=max(0, used.entries - n),
                                   bytes=0 if b is None else max(0, used.bytes - b))
        return out


def _over(used: tuple[int, int], max_entries: int, max_bytes: int | None) -> bool:
    return used[0] > max_entries or (max_bytes is not None and used[1] > max_bytes)
