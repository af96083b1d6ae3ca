"""How :class:`~prismcache.stores.redis.RedisStore` names its keys and encodes its values:
bucket hash tags, 19-digit ids, eviction-order members, refs, entry hashes, feed events."""

from __future__ import annotations

import json
import secrets
import struct
from typing import Any

from prismcache.entry import EntryRef
from prismcache.errors import StoreError
from prismcache.stores.codec import FIELDS, Record
from prismcache.stores.codec import decode_vector as _decode_vector
from prismcache.sync import Change

__all__ = ["bucket_tags", "change", "is_cluster_client", "key", "member", "new_epoch", "record",
           "ref", "ref_json", "refs", "scalar", "text", "valid"]

_SLOTS = 16384
_MAX_ID = 2**63
_INTS = frozenset({"id", "hits", "size"})
_FLOATS = frozenset({"created", "expires", "last_access", "cost", "latency", "priority"})
_BYTES = frozenset({"request", "response", "chunks", "vector", "context_vector"})


def bucket_tags(count: int) -> list[str]:
    """The hash tags of ``count`` buckets: bucket ``b``'s tag hashes into the ``b``-th of
    ``count`` equal ranges of the 16384 cluster slots (``pc:b07``, or ``pc:b07.<n>`` for the
    first ``n`` that does).

    >>> bucket_tags(2)
    ['pc:b00.1', 'pc:b01']
    """
    from redis.crc import key_slot

    tags = []
    for bucket in range(count):
        low, high = bucket * _SLOTS // count, (bucket + 1) * _SLOTS // count
        n = 0
        while True:
            tag = f"pc:b{bucket:02d}" + (f".{n}" if n else "")
            if low <= key_slot(tag.encode()) < high:
                break
            n += 1
        tags.append(tag)
    return tags


def is_cluster_client(client: Any) -> bool:
    """Whether ``client`` is redis-py's cluster client (the store then tags its keys)."""
    try:
        from redis.cluster import RedisCluster
    except ImportError:
        return False
    return isinstance(client, RedisCluster)


def valid(entry_id: int) -> str | None:
    """The 19-digit key of a valid id, or ``None`` (such an id cannot be stored)."""
    value = int(entry_id)
    return f"{value:019d}" if 0 < value < _MAX_ID else None


def key(entry_id: int) -> str:
    return f"{entry_id:019d}"


def member(last_access: float, entry_id: int) -> str:
    """Eviction-order member: sortable hex of ``last_access`` then the 19-digit id, so equal
    priorities order by last access, then id (lexicographic order within a score)."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", last_access))
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | 1 << 63
    return f"{bits:016x}{entry_id:019d}"


def scalar(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return value


def ref_json(record: Record) -> str:
    return json.dumps(
        [record.category, record.partition, record.exact_key, str(record.size),
         repr(record.priority), record.tenant, record.model,
         member(record.last_access, record.id)],
        ensure_ascii=False, separators=(",", ":"),
    )


def refs(flat: list[Any]) -> list[EntryRef]:
    """Refs from a script's ``[id, ref json, id, ref json, ...]``."""
    return [ref(key, blob) for key, blob in zip(flat[::2], flat[1::2], strict=True)]


def ref(key: bytes | str, blob: bytes | str) -> EntryRef:
    category, partition, exact_key, size, priority, *_ = json.loads(blob)
    return EntryRef(id=int(key), partition=partition, category=category, exact_key=exact_key,
                    size=int(size), priority=float(priority))


def record(row: dict[Any, bytes], *, documents: bool = True) -> Record:
    """A :class:`Record` from an entry hash (field names as bytes or str)."""
    values: dict[str, Any] = {}
    for raw_name, raw in row.items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        if raw is None:
            continue
        if name in _BYTES:
            values[name] = raw
        elif name in _INTS:
            values[name] = int(raw)
        elif name in _FLOATS:
            values[name] = float(raw)
        else:
            values[name] = raw.decode("utf-8")
    if not documents:
        values.update(request=b"{}", response=b"{}", chunks=None)
    try:
        return Record(**{name: values.get(name) for name in FIELDS})
    except TypeError as exc:
        raise StoreError(f"stored entry is malformed: {exc}") from exc


def change(fields: dict[bytes, bytes]) -> Change:
    what = ref(fields[b"id"], fields[b"ref"])
    if fields[b"op"] == b"delete":
        return Change(op="delete", ref=what)
    vector = fields.get(b"vector")
    return Change(op="put", ref=what, embedder=fields.get(b"embedder", b"").decode(),
                  vector=None if vector is None else _decode_vector(vector))


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def new_epoch() -> str:
    """A fresh random epoch token, offered with ``SET NX`` by every write and cursor: the
    first after a restart or ``FLUSHDB`` names the new incarnation, unlike any before (a token
    per process would let a process's old cursor match the epoch it sets again)."""
    return secrets.token_hex(8)
