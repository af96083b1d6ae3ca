"""How an :class:`~prismcache.entry.Entry` becomes storable fields, and back.

One encoding shared by every persistent backend, so an entry written by one process through
SQLite or Redis reads back identically in another:

- ``request``, ``response`` and ``chunks``: compact JSON (``,`` and ``:`` separators, no
  spaces), ``ensure_ascii=False``, encoded as UTF-8 bytes. ``chunks=None`` stays ``None``.
- ``vector`` and ``context_vector``: little-endian float32 bytes, ``4 * dim`` of them;
  ``None`` stays ``None`` (rows written before ``context_vector`` existed read as ``None``).
- ``size``: the byte length of the request, response and chunks encodings. The store, not the
  caller, is the authority on size: whatever ``entry.size`` held is replaced by this.

A caller that needs the size before storing (the cache, for GDSF's priority) calls
:func:`sized`: its :class:`SizedEntry` keeps the three encodings, which :func:`encode` reuses
as long as the entry still holds the very objects they were made from, so the JSON is encoded
once per store.

>>> import numpy as np
>>> from prismcache.entry import Entry
>>> entry = Entry(id=7, tenant="t", partition="p", category="c", model="m", exact_key="k",
...               query="héllo", request={"q": "héllo"}, response={"a": 1},
...               vector=np.array([1.0, 0.0], dtype=np.float32))
>>> record = encode(entry)
>>> record.request, record.size
(b'{"q":"h\\xc3\\xa9llo"}', 21)
>>> back = decode(record)
>>> back.query, back.request, back.size, back.vector.tolist(), back.chunks
('héllo', {'q': 'héllo'}, 21, [1.0, 0.0], None)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np

from prismcache.entry import Entry, EntryRef
from prismcache.errors import StoreError

__all__ = [
    "FIELDS",
    "Documents",
    "Record",
    "SizedEntry",
    "decode",
    "decode_json",
    "decode_vector",
    "encode",
    "encode_json",
    "encode_vector",
    "ref_of",
    "sized",
]

_MAX_ID = 2**63
_VECTOR_DTYPE = np.dtype("<f4")


class Record(NamedTuple):
    """An entry as storable scalars: ``str``, ``int``, ``float``, ``bytes`` or ``None``.

    Field order is the column order of the SQLite table; ``Record._make(row)`` rebuilds one
    from a row selected with ``FIELDS``.
    """

    id: int
    tenant: str
    partition: str
    category: str
    model: str
    exact_key: str
    query: str
    request: bytes
    response: bytes
    chunks: bytes | None
    vector: bytes | None
    embedder: str
    created: float
    expires: float | None
    hits: int
    last_access: float
    cost: float
    latency: float
    size: int
    priority: float
    context_vector: bytes | None = None  # last: added after the others (SQLite schema 3)


FIELDS: tuple[str, ...] = Record._fields


class Documents(NamedTuple):
    """An entry's request, response and chunks as :func:`encode` writes them, and ``of``: the
    three objects they were encoded from."""

    request: bytes
    response: bytes
    chunks: bytes | None
    of: tuple[Any, Any, Any]


@dataclass(slots=True, kw_only=True)
class SizedEntry(Entry):
    """An :class:`Entry` whose ``size`` is set and whose documents are encoded already (see
    :func:`sized`); stores take it as any entry, without encoding its JSON again. Its request,
    response and chunks must not be changed in place afterwards (replacing them is fine: the
    encodings are then not reused)."""

    documents: Documents | None = field(default=None, repr=False, compare=False)


_ENTRY_FIELDS = tuple(f.name for f in fields(Entry))


def sized(entry: Entry) -> SizedEntry:
    """``entry`` with ``size`` set as the store will set it, its documents' encodings kept for
    :func:`encode`; raises :class:`StoreError` as :func:`encode` does for JSON it cannot
    represent.

    >>> entry = Entry(id=7, tenant="t", partition="p", category="c", model="m",
    ...               exact_key="k", query="q", request={"q": "héllo"}, response={"a": 1})
    >>> sized(entry).size, encode(sized(entry)).size
    (21, 21)
    """
    documents = _documents(entry)
    values = {name: getattr(entry, name) for name in _ENTRY_FIELDS}
    values["size"] = _size(documents)
    return SizedEntry(**values, documents=documents)


def encode_json(value: Any, *, what: str = "value") -> bytes:
    """Compact UTF-8 JSON of ``value``; :class:`StoreError` naming ``what`` if not encodable."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not JSON-serialisable: {exc}") from exc
    return text.encode("utf-8")


def decode_json(data: bytes, *, what: str = "value") -> Any:
    """Inverse of :func:`encode_json`; :class:`StoreError` if ``data`` is not valid JSON."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"stored {what} is not valid UTF-8 JSON: {exc}") from exc


def encode_vector(vector: np.ndarray) -> bytes:
    """Little-endian float32 bytes of a one-dimensional vector."""
    array = np.asarray(vector)
    if array.ndim != 1:
        raise StoreError(f"vector must be one-dimensional, got shape {array.shape}")
    return array.astype(_VECTOR_DTYPE, copy=False).tobytes()


def decode_vector(data: bytes) -> np.ndarray:
    """A fresh, writable, native float32 array from :func:`encode_vector`'s bytes."""
    if len(data) % _VECTOR_DTYPE.itemsize:
        raise StoreError(f"stored vector has {len(data)} bytes, not a multiple of 4")
    return np.frombuffer(data, dtype=_VECTOR_DTYPE).astype(np.float32)


def encode(entry: Entry) -> Record:
    """The storable form of ``entry``; raises :class:`StoreError` for an invalid id or a
    request, response or chunk that JSON cannot represent."""
    if not isinstance(entry.id, int) or not 0 < entry.id < _MAX_ID:
        raise StoreError(f"entry id must be an int in [1, 2**63), got {entry.id!r}")
    documents = _documents(entry)
    request, response, chunks, _ = documents
    return Record(
        id=entry.id,
        tenant=entry.tenant,
        partition=entry.partition,
        category=entry.category,
        model=entry.model,
        exact_key=entry.exact_key,
        query=entry.query,
        request=request,
        response=response,
        chunks=chunks,
        vector=None if entry.vector is None else encode_vector(entry.vector),
        embedder=entry.embedder,
        created=float(entry.created),
        expires=None if entry.expires is None else float(entry.expires),
        hits=int(entry.hits),
        last_access=float(entry.last_access),
        cost=float(entry.cost),
        latency=float(entry.latency),
        size=_size(documents),
        priority=float(entry.priority),
        context_vector=None if entry.context_vector is None
        else encode_vector(entry.context_vector),
    )


def _documents(entry: Entry) -> Documents:
    """The encodings of ``entry``'s documents: a :class:`SizedEntry`'s own while it still
    holds the objects they were made from, else fresh ones."""
    known = getattr(entry, "documents", None)
    if known is not None and known.of[0] is entry.request and known.of[1] is entry.response \
            and known.of[2] is entry.chunks:
        return known
    what = f"entry {entry.id}"
    return Documents(
        request=encode_json(entry.request, what=f"{what} request"),
        response=encode_json(entry.response, what=f"{what} response"),
        chunks=None if entry.chunks is None
        else encode_json(entry.chunks, what=f"{what} chunks"),
        of=(entry.request, entry.response, entry.chunks))


def _size(documents: Documents) -> int:
    return len(documents.request) + len(documents.response) + len(documents.chunks or b"")


def decode(record: Record, *, documents: bool = True) -> Entry:
    """The :class:`Entry` that :func:`encode` turned into ``record``; with
    ``documents=False``, request and response are ``{}``, chunks and context vector ``None``
    (not decoded: an index rebuild needs neither)."""
    what = f"entry {record.id}"
    if not documents:
        return decode(record._replace(request=b"{}", response=b"{}", chunks=None,
                                      context_vector=None))
    return Entry(
        id=record.id,
        tenant=record.tenant,
        partition=record.partition,
        category=record.category,
        model=record.model,
        exact_key=record.exact_key,
        query=record.query,
        request=decode_json(record.request, what=f"{what} request"),
        response=decode_json(record.response, what=f"{what} response"),
        chunks=None if record.chunks is None else decode_json(record.chunks, what=f"{what} chunks"),
        vector=None if record.vector is None else decode_vector(record.vector),
        embedder=record.embedder,
        context_vector=None if record.context_vector is None
        else decode_vector(record.context_vector),
        created=record.created,
        expires=record.expires,
        hits=record.hits,
        last_access=record.last_access,
        cost=record.cost,
        latency=record.latency,
        size=record.size,
        priority=record.priority,
    )


def ref_of(record: Record) -> EntryRef:
    """The :class:`EntryRef` of a stored record, without decoding its JSON."""
    return EntryRef(
        id=record.id,
        partition=record.partition,
        category=record.category,
        exact_key=record.exact_key,
        size=record.size,
        priority=record.priority,
    )
