"""When a stored entry may be served: fresh under the policy in force, or only stale (kept
through the category's ``stale_if_error`` window, servable on an upstream error alone).

One rule in one place for the cache's lookups (:mod:`prismcache.cache`) and the proxy's
near/stale answers (:mod:`prismcache.server.overload`).
"""

from __future__ import annotations

from dataclasses import replace

from prismcache.config import CategoryPolicy
from prismcache.entry import Entry
from prismcache.results import Miss

__all__ = ["expired_under", "stale_under", "with_stale"]


def expired_under(entry: Entry, policy: CategoryPolicy, now: float) -> bool:
    """Whether ``entry`` may no longer be served as a hit (nor as a ``near`` answer) under
    ``policy``: at its stored expiry less the ``stale_if_error`` window it is kept for (so a
    TTL extended at decision time never revives an entry kept only for errors), or at
    ``created + ttl`` of the policy in force (possibly adjusted), whichever comes first."""
    ttl = policy.ttl
    return (entry.expires is not None and now >= entry.expires - policy.stale_if_error) or (
        ttl is not None and now >= entry.created + ttl.total_seconds())


def stale_under(entry: Entry, policy: CategoryPolicy, now: float) -> bool:
    """Whether ``entry`` is :func:`expired_under` ``policy`` but within the category's
    ``stale_if_error`` window: kept, and servable only, marked ``stale``, on an upstream
    error."""
    ttl = policy.ttl
    return (policy.stale_if_error > 0 and ttl is not None and not entry.expired(now)
            and expired_under(entry, policy, now)
            and now < entry.created + ttl.total_seconds() + policy.stale_if_error)


def with_stale(miss: Miss, entry: Entry | None, category: str) -> Miss:
    """``miss`` naming the exact tier's stale verbatim entry (similarity 1.0), if any."""
    if entry is None or entry.category != category:
        return miss
    return replace(miss, stale_entry=entry.id, stale_similarity=1.0)
