"""Labels in Redis (:mod:`prismcache.labels`), beside the entries of a
:class:`~prismcache.stores.redis.RedisStore`, under the same prefix ``P``::

    P l:<tenant>   list    the tenant's labels as JSON, oldest first, trimmed to the bound
    P lt           set     tenants that have labels (so ``labels()`` of all need no SCAN)

Each is one key per command, so the layout works on one Redis, behind Sentinel and on a
Cluster alike. The caller (the store) translates redis-py's errors.
"""

from __future__ import annotations

from typing import Any

from prismcache.labels import Label

__all__ = ["add", "delete", "read"]


def add(client: Any, prefix: str, label: Label, limit: int) -> None:
    """Append ``label`` to its tenant's list and keep the newest ``limit``."""
    key = prefix + "l:" + label.tenant
    client.rpush(key, label.to_json().encode("utf-8"))
    client.ltrim(key, -int(limit), -1)
    client.sadd(prefix + "lt", label.tenant.encode("utf-8"))


def read(client: Any, prefix: str, tenant: str | None, category: str | None) -> list[Label]:
    """``tenant``'s labels (``None``: every tenant's, by tenant name) of ``category``."""
    tenants = [tenant] if tenant is not None else sorted(
        t.decode("utf-8") for t in client.smembers(prefix + "lt"))
    out: list[Label] = []
    for name in tenants:
        for raw in client.lrange(prefix + "l:" + name, 0, -1):
            label = Label.from_json(raw)
            if category is None or label.category == category:
                out.append(label)
    return out


def delete(client: Any, prefix: str, tenant: str | None) -> int:
    """Delete ``tenant``'s labels (``None``: everyone's); return how many went."""
    tenants = [tenant] if tenant is not None else [
        t.decode("utf-8") for t in client.smembers(prefix + "lt")]
    gone = 0
    for name in tenants:
        key = prefix + "l:" + name
        gone += int(client.llen(key))
        client.delete(key)
        client.srem(prefix + "lt", name.encode("utf-8"))
    return gone
