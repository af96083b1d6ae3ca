"""Eviction within a category's quota, as a priority each entry carries in the store.

A policy is only an ordering: the store evicts the lowest ``priority`` first (ties: older
``last_access`` first), so each policy is the rule that sets an entry's priority when it is
stored and when it is hit.

* ``lru``: priority = time of the last access.
* ``lfu``: priority = L + accesses (LFU with dynamic ageing, Arlitt et al. 2000; the store
  counts as the first access; ties fall back to LRU order). A newcomer starts at L + 1, just
  above the last evicted entry, instead of below every entry ever hit once.
* ``gdsf`` (Greedy-Dual-Size-Frequency, Cherkasova 1998): priority = L + hits' x value / size,
  where value is the upstream cost one hit saves.

For ``lfu`` and ``gdsf``, L (the category's "inflation") rises to the priority of each evicted
entry, so entries that stop being hit age out instead of living on their old counts.

>>> from prismcache.entry import Entry
>>> e = Entry(id=1, tenant="t", partition="p", category="c", model="m", exact_key="k",
...           query="q", request={}, response={}, size=1000, cost=0.02)
>>> GDSF().priority(e, now=50.0, inflation=1.0)
1.00002
"""

from __future__ import annotations

from prismcache.entry import Entry

__all__ = ["GDSF", "LFU", "LRU", "EvictionPolicy", "eviction_policy"]


class EvictionPolicy:
    """Base: the priority an entry holds after being stored or hit at time ``now``."""

    name = "base"

    def priority(self, entry: Entry, *, now: float, inflation: float) -> float:
        """Priority of ``entry`` (with its ``hits`` already counting this access)."""
        raise NotImplementedError


class LRU(EvictionPolicy):
    """Least recently used first."""

    name = "lru"

    def priority(self, entry: Entry, *, now: float, inflation: float) -> float:
        return now


class LFU(EvictionPolicy):
    """Least frequently used first, with ageing."""

    name = "lfu"

    def priority(self, entry: Entry, *, now: float, inflation: float) -> float:
        return inflation + entry.hits + 1


class GDSF(EvictionPolicy):
    """Cheapest saving per byte first, with ageing through the category's inflation ``L``."""

    name = "gdsf"

    def priority(self, entry: Entry, *, now: float, inflation: float) -> float:
        value = entry.cost if entry.cost > 0 else max(entry.latency, 1e-3)
        return inflation + (entry.hits + 1) * value / max(entry.size, 1)


_POLICIES: dict[str, EvictionPolicy] = {p.name: p for p in (LRU(), LFU(), GDSF())}


def eviction_policy(name: str) -> EvictionPolicy:
    """The policy called ``name`` (``lru``, ``lfu`` or ``gdsf``); KeyError for others
    (config validation rejects them first)."""
    return _POLICIES[name]
