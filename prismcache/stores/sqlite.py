"""The embedded document store: one SQLite file in WAL mode.

Design (measured and argued in ``docs/stores.md``):

- One connection per store, shared by all threads and guarded by a lock. Writes are serialised
  by SQLite anyway, and a shared connection never waits in SQLite's sleeping busy handler
  against itself; other processes on the same file still meet ``timeout``.
- ``journal_mode=WAL`` (readers in other processes do not block the writer) and
  ``synchronous=NORMAL`` (a power cut may lose the last commits, never corrupt the file).
- Per-category entry and byte counts live in the ``usage`` table, kept exact by triggers, so
  :meth:`SQLiteStore.usage` and the fast path of :meth:`SQLiteStore.evict_over` (run after every
  insert) read one small table instead of counting ``entries``.
- ``PRAGMA user_version`` records the schema version; :data:`_MIGRATIONS` upgrades older files.
- Every ``sqlite3`` exception is turned into a :class:`~prismcache.errors.StoreError` by
  :func:`_translate`, the one place that knows SQLite's error codes.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prismcache.entry import Entry, EntryRef, UsageCount
from prismcache.errors import ConfigError, StoreError, StoreTimeout, StoreUnavailable
from prismcache.labels import MAX_LABELS_PER_TENANT, Label
from prismcache.quotas import Quotas
from prismcache.stores.codec import FIELDS, Record, decode, encode

__all__ = ["SQLiteStore"]

_MIN_SQLITE = (3, 35, 0)  # RETURNING; upsert needs 3.24
_SCAN_BATCH = 512
_EVICT_BATCH = 64
_MAX_ID = 2**63

_COLUMNS = ", ".join(FIELDS)
_REF_COLUMNS = "id, partition, category, exact_key, size, priority"
# The same columns, with the JSON documents replaced by cheap constants (index rebuilds).
_INDEX_COLUMNS = ", ".join(
    {"request": "x'7b7d'", "response": "x'7b7d'", "chunks": "NULL",
     "context_vector": "NULL"}.get(f, f) for f in FIELDS
)
_UPSERT = (
    f"INSERT INTO entries ({_COLUMNS}) VALUES ({', '.join('?' * len(FIELDS))}) "
    f"ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in FIELDS if name != "id")
)
# A JSON array of ids is one bound parameter whatever its length: one cached statement, no
# chunking under SQLITE_MAX_VARIABLE_NUMBER.
_DELETE_IDS = (
    f"DELETE FROM entries WHERE id IN (SELECT value FROM json_each(?)) RETURNING {_REF_COLUMNS}"
)

_COUNT_IN = """
    INSERT INTO usage (category, entries, bytes) VALUES (new.category, 1, new.size)
    ON CONFLICT (category) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
"""
_COUNT_OUT = """
    UPDATE usage SET entries = entries - 1, bytes = bytes - old.size
    WHERE category = old.category;
    DELETE FROM usage WHERE category = old.category AND entries = 0;
"""

# _MIGRATIONS[v] upgrades a file at user_version v to v + 1; each runs in one transaction.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE entries (
            id          INTEGER PRIMARY KEY,
            tenant      TEXT    NOT NULL,
            partition   TEXT    NOT NULL,
            category    TEXT    NOT NULL,
            model       TEXT    NOT NULL,
            exact_key   TEXT    NOT NULL,
            query       TEXT    NOT NULL,
            request     BLOB    NOT NULL,
            response    BLOB    NOT NULL,
            chunks      BLOB,
            vector      BLOB,
            embedder    TEXT    NOT NULL,
            created     REAL    NOT NULL,
            expires     REAL,
            hits        INTEGER NOT NULL,
            last_access REAL    NOT NULL,
            cost        REAL    NOT NULL,
            latency     REAL    NOT NULL,
            size        INTEGER NOT NULL,
            priority    REAL    NOT NULL
        )""",
        "CREATE INDEX entries_eviction ON entries (category, priority, last_access)",
        "CREATE INDEX entries_expires ON entries (expires) WHERE expires IS NOT NULL",
        "CREATE INDEX entries_tenant ON entries (tenant)",
        "CREATE INDEX entries_model ON entries (model)",
        """CREATE TABLE usage (
            category TEXT    PRIMARY KEY,
            entries  INTEGER NOT NULL,
            bytes    INTEGER NOT NULL
        ) WITHOUT ROWID""",
        f"CREATE TRIGGER entries_insert AFTER INSERT ON entries BEGIN {_COUNT_IN} END",
        f"CREATE TRIGGER entries_delete AFTER DELETE ON entries BEGIN {_COUNT_OUT} END",
        "CREATE TRIGGER entries_update AFTER UPDATE OF category, size ON entries "
        f"BEGIN {_COUNT_OUT} {_COUNT_IN} END",
    ),
    (  # labels from traffic (prismcache.labels): per tenant, apart from the entries
        """CREATE TABLE labels (
            seq      INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant   TEXT    NOT NULL,
            category TEXT    NOT NULL,
            label    TEXT    NOT NULL
        )""",
        "CREATE INDEX labels_tenant ON labels (tenant, seq)",
    ),
    # 3: the conversation context's embedding (docs/conversations.md); older rows read NULL.
    ("ALTER TABLE entries ADD COLUMN context_vector BLOB",),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# Primary result codes (https://sqlite.org/rescode.html).
_BUSY, _LOCKED = 5, 6
_PERM, _IOERR, _CORRUPT, _CANTOPEN, _NOTADB = 3, 10, 11, 14, 26
_TIMEOUT_CODES = frozenset({_BUSY, _LOCKED})
_UNAVAILABLE_CODES = frozenset({_PERM, _IOERR, _CORRUPT, _CANTOPEN, _NOTADB})
# For errors raised without a result code (closed connections, some driver paths).
_TIMEOUT_TEXT = ("database is locked", "database table is locked", "database is busy")
_UNAVAILABLE_TEXT = (
    "closed database",
    "unable to open",
    "disk i/o error",
    "file is not a database",
    "database disk image is malformed",
)


def _translate(exc: sqlite3.Error | OverflowError, path: str) -> StoreError:
    """The prismcache error for a ``sqlite3`` failure on the store at ``path``.

    Busy or locked -> :class:`StoreTimeout`; cannot open, I/O error, corrupt or not a
    database, closed connection -> :class:`StoreUnavailable`; anything else -> ``StoreError``.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    text = str(exc).lower()
    message = f"SQLite store {path!r}: {exc}"
    if primary in _TIMEOUT_CODES or any(part in text for part in _TIMEOUT_TEXT):
        return StoreTimeout(message)
    if primary in _UNAVAILABLE_CODES or any(part in text for part in _UNAVAILABLE_TEXT):
        return StoreUnavailable(message)
    return StoreError(message)


class SQLiteStore:
    """A :class:`~prismcache.stores.base.DocumentStore` in one SQLite file.

    ``path`` is a filesystem path; its directory must exist and the file, if it exists, must
    be a prismcache SQLite store (else :class:`StoreUnavailable`, naming the path). ``timeout``
    bounds, in seconds, the wait for the store's lock and for other processes' write locks
    (then :class:`StoreTimeout`).

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with SQLiteStore(pathlib.Path(tmp) / "cache.db") as store:
    ...         store.usage()
    {}
    """

    #: reads are served in this process, no network round trip (``SemanticCache.reads_local``)
    local_reads = True

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        if not timeout > 0:
            raise ConfigError(f"SQLite store timeout must be > 0 seconds, got {timeout!r}")
        self._path = os.fspath(path)
        self._timeout = float(timeout)
        self._lock = threading.Lock()
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise StoreUnavailable(
                f"SQLite store {self._path!r} needs SQLite >= 3.35, "
                f"this Python has {sqlite3.sqlite_version}"
            )
        connection: sqlite3.Connection | None = None
        try:
            connection = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            _migrate(connection, self._path)
        except sqlite3.Error as exc:
            if connection is not None:
                connection.close()
            raise _translate(exc, self._path) from exc
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        self._connection: sqlite3.Connection | None = connection

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 5.0) -> SQLiteStore:
        """Open ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

        As in SQLAlchemy, the path is everything after ``sqlite:///``: a fourth slash makes
        it absolute.
        """
        prefix = "sqlite:///"
        path = url[len(prefix) :] if url[: len(prefix)].lower() == prefix else ""
        if not path or "?" in path or "#" in path:
            raise ConfigError(
                "a SQLite store URL is sqlite:///relative/path.db or sqlite:////absolute/path.db"
                f" (options are keyword arguments, not a query string), got {url!r}"
            )
        return cls(path, timeout=timeout)

    @property
    def path(self) -> str:
        """The database file's path, as given."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    def put(self, entry: Entry) -> None:
        """Insert ``entry``, replacing any entry with the same id; size is recomputed."""
        record = encode(entry)
        with self._session() as db:
            db.execute(_UPSERT, record)

    def get(self, entry_id: int) -> Entry | None:
        """The entry with ``entry_id``, or ``None``; expired entries are still returned."""
        entry_id = int(entry_id)
        if not 0 < entry_id < _MAX_ID:
            return None
        with self._session() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM entries WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else decode(Record._make(row))

    def touch(self, entry_id: int, *, now: float, priority: float) -> None:
        """Record a hit on ``entry_id``; a missing id is ignored."""
        entry_id = int(entry_id)
        if not 0 < entry_id < _MAX_ID:
            return
        with self._session() as db:
            db.execute(
                "UPDATE entries SET hits = hits + 1, last_access = ?, priority = ? WHERE id = ?",
                (float(now), float(priority), entry_id),
            )

    def delete(self, entry_ids: Iterable[int]) -> list[EntryRef]:
        """Delete ``entry_ids`` in one transaction; return refs of those that existed."""
        ids = json.dumps([i for i in map(int, entry_ids) if 0 < i < _MAX_ID])
        with self._session() as db:
            return [_ref(row) for row in db.execute(_DELETE_IDS, (ids,)).fetchall()]

    def find(
        self,
        *,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
    ) -> list[EntryRef]:
        """Refs of the entries matching every given filter (``None`` matches all)."""
        filters = [
            (column, value)
            for column, value in (("tenant", tenant), ("category", category), ("model", model))
            if value is not None
        ]
        where = " AND ".join(f"{column} = ?" for column, _ in filters) or "1"
        with self._session() as db:
            rows = db.execute(
                f"SELECT {_REF_COLUMNS} FROM entries WHERE {where}",
                tuple(value for _, value in filters),
            ).fetchall()
        return [_ref(row) for row in rows]

    def evict_over(
        self, category: str, *, max_entries: int | None, max_bytes: int | None
    ) -> list[EntryRef]:
        """Delete the lowest ``(priority, last_access, id)`` entries of ``category`` until it
        is within both limits (``None``: no limit), in one transaction; return their refs in
        eviction order. Within the limits it reads one row of ``usage`` and returns ``[]``;
        otherwise it walks the eviction index only as far as needed, O(k log n) for k evicted.
        """
        with self._session() as db:
            if _within(*_usage_of(db, category), max_entries, max_bytes):
                return []
            with _transaction(db):
                # Counted again inside the write lock: another process may have evicted.
                entries, size = _usage_of(db, category)
                victims: list[EntryRef] = []
                cursor = db.execute(
                    f"SELECT {_REF_COLUMNS} FROM entries WHERE category = ? "
                    "ORDER BY priority, last_access, id",
                    (category,),
                )
                while not _within(entries, size, max_entries, max_bytes):
                    batch = cursor.fetchmany(_EVICT_BATCH)
                    if not batch:
                        break
                    for ref in map(_ref, batch):
                        if _within(entries, size, max_entries, max_bytes):
                            break
                        victims.append(ref)
                        entries, size = entries - 1, size - ref.size
                cursor.close()
                if victims:
                    ids = json.dumps([ref.id for ref in victims])
                    db.execute(_DELETE_IDS, (ids,)).fetchall()
                return victims

    def evict_for(self, category: str, quotas: Quotas) -> list[EntryRef]:
        """Delete entries until every limit of ``quotas`` holds, victims chosen by
        :meth:`Quotas.next_victim`, in one transaction; return their refs in eviction order.
        Within the limits it reads the small ``usage`` table and returns ``[]``; otherwise it
        walks each victim category's eviction index only as far as needed."""
        with self._session() as db:
            if quotas.next_victim(_usage_all(db), category) is None:
                return []
            with _transaction(db):
                usage = _usage_all(db)  # again inside the write lock: others may have evicted
                queues: dict[str, Generator[EntryRef, None, None]] = {}
                victims: list[EntryRef] = []
                while (victim := quotas.next_victim(usage, category)) is not None:
                    queue = queues.get(victim)
                    if queue is None:
                        queue = queues[victim] = _eviction_order(db, victim)
                    ref = next(queue, None)
                    if ref is None:
                        break
                    victims.append(ref)
                    n, b = usage[victim]
                    usage[victim] = (n - 1, b - ref.size)
                    if n == 1:
                        del usage[victim]
                for queue in queues.values():
                    queue.close()  # generators: closes their cursors
                if victims:
                    ids = json.dumps([ref.id for ref in victims])
                    db.execute(_DELETE_IDS, (ids,)).fetchall()
                return victims

    def expire(self, now: float) -> list[EntryRef]:
        """Delete every entry with ``expires <= now`` in one statement; return their refs."""
        with self._session() as db:
            rows = db.execute(
                f"DELETE FROM entries WHERE expires <= ? RETURNING {_REF_COLUMNS}", (float(now),)
            ).fetchall()
        return [_ref(row) for row in rows]

    def scan(self, *, since: float | None = None, documents: bool = True) -> Iterator[Entry]:
        """Yield every entry (``created >= since`` when given), in id order, fetched in
        batches of 512 rows; ``documents=False`` does not read the JSON columns at all.

        Each batch is a short query of its own (keyset pagination), so the store is not held
        while the caller works; entries that exist for the whole scan are yielded exactly once,
        entries added or deleted meanwhile may or may not be.
        """
        columns = _COLUMNS if documents else _INDEX_COLUMNS
        after = 0
        while True:
            with self._session() as db:
                rows = db.execute(
                    f"SELECT {columns} FROM entries WHERE id > ? AND created >= ? "
                    "ORDER BY id LIMIT ?",
                    (after, -math.inf if since is None else since, _SCAN_BATCH),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield decode(Record._make(row), documents=documents)
            after = rows[-1][0]

    def scan_partition(self, partition: str) -> Iterator[Entry]:
        """Yield the entries of ``partition`` without documents, in id order, in batches of
        512 rows (keyset pagination, as :meth:`scan`). No index on ``partition`` (the schema
        is unchanged): each batch reads the table from the last id on."""
        after = 0
        while True:
            with self._session() as db:
                rows = db.execute(
                    f"SELECT {_INDEX_COLUMNS} FROM entries WHERE id > ? AND partition = ? "
                    "ORDER BY id LIMIT ?", (after, partition, _SCAN_BATCH),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield decode(Record._make(row), documents=False)
            after = rows[-1][0]

    def usage(self) -> dict[str, UsageCount]:
        """Entries and bytes per category, read from the trigger-maintained ``usage`` table."""
        with self._session() as db:
            rows = db.execute("SELECT category, entries, bytes FROM usage").fetchall()
        return {category: UsageCount(entries=n, bytes=b) for category, n, b in rows}

    def add_label(self, label: Label, *, limit: int = MAX_LABELS_PER_TENANT) -> None:
        """Keep ``label`` under its tenant, at most ``limit`` per tenant (oldest dropped),
        in one transaction."""
        with self._session() as db, _transaction(db):
            db.execute("INSERT INTO labels (tenant, category, label) VALUES (?, ?, ?)",
                       (label.tenant, label.category, label.to_json()))
            db.execute("DELETE FROM labels WHERE tenant = ? AND seq <= (SELECT seq FROM labels "
                       "WHERE tenant = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                       (label.tenant, label.tenant, int(limit)))

    def labels(self, *, tenant: str | None = None,
               category: str | None = None) -> list[Label]:
        """``tenant``'s labels (``None``: all tenants) of ``category`` (``None``: all)."""
        given = [(name, value) for name, value in (("tenant", tenant), ("category", category))
                 if value is not None]
        where = ("WHERE " + " AND ".join(f"{name} = ?" for name, _ in given)) if given else ""
        with self._session() as db:
            rows = db.execute(f"SELECT label FROM labels {where} ORDER BY tenant, seq",
                              tuple(value for _, value in given)).fetchall()
        return [Label.from_json(text) for (text,) in rows]

    def delete_labels(self, *, tenant: str | None = None) -> int:
        """Delete ``tenant``'s labels (``None``: everyone's); return how many went."""
        with self._session() as db:
            if tenant is None:
                return int(db.execute("DELETE FROM labels").rowcount)
            return int(db.execute("DELETE FROM labels WHERE tenant = ?", (tenant,)).rowcount)

    def close(self) -> None:
        """Close the connection; later calls raise :class:`StoreUnavailable`. Idempotent."""
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                try:
                    connection.close()
                except sqlite3.Error as exc:
                    raise _translate(exc, self._path) from exc

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """The connection, held under the lock, with sqlite3 errors translated."""
        if not self._lock.acquire(timeout=self._timeout):
            raise StoreTimeout(f"SQLite store {self._path!r}: busy for {self._timeout} s")
        try:
            if self._connection is None:
                raise StoreUnavailable(f"SQLite store {self._path!r} is closed")
            try:
                yield self._connection
            except (sqlite3.Error, OverflowError) as exc:
                raise _translate(exc, self._path) from exc
        finally:
            self._lock.release()


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back if the body raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException as exc:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error as rollback_error:
            exc.add_note(f"rollback failed too: {rollback_error}")
        raise
    db.execute("COMMIT")


def _migrate(db: sqlite3.Connection, path: str) -> None:
    """Bring the schema of ``db`` up to :data:`SCHEMA_VERSION`, one transaction per step."""
    while True:
        with _transaction(db):
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"SQLite store {path!r} has schema version {version}; this prismcache "
                    f"reads up to {SCHEMA_VERSION}"
                )
            if version == SCHEMA_VERSION:
                return
            for statement in _MIGRATIONS[version]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version + 1}")


def _usage_of(db: sqlite3.Connection, category: str) -> tuple[int, int]:
    row = db.execute("SELECT entries, bytes FROM usage WHERE category = ?", (category,)).fetchone()
    return (0, 0) if row is None else (row[0], row[1])


def _usage_all(db: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    return {c: (n, b) for c, n, b in db.execute("SELECT category, entries, bytes FROM usage")}


def _eviction_order(db: sqlite3.Connection, category: str) -> Generator[EntryRef, None, None]:
    """Refs of ``category`` lowest priority first, read in batches as the caller asks."""
    cursor = db.execute(
        f"SELECT {_REF_COLUMNS} FROM entries WHERE category = ? "
        "ORDER BY priority, last_access, id",
        (category,),
    )
    try:
        while batch := cursor.fetchmany(_EVICT_BATCH):
            yield from map(_ref, batch)
    finally:
        cursor.close()


def _ref(row: tuple[Any, ...]) -> EntryRef:
    entry_id, partition, category, exact_key, size, priority = row
    return EntryRef(
        id=entry_id,
        partition=partition,
        category=category,
        exact_key=exact_key,
        size=size,
        priority=priority,
    )


def _within(entries: int, size: int, max_entries: int | None, max_bytes: int | None) -> bool:
    return (max_entries is None or entries <= max_entries) and (
        max_bytes is None or size <= max_bytes
    )
