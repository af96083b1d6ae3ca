"""The store contract run against every embedded backend, plus what is specific to each."""

from __future__ import annotations

import doctest
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from store_contract import StoreContract, assert_same_entry, make_entry, usage_of

import prismcache.stores
from prismcache.errors import ConfigError, StoreError, StoreTimeout, StoreUnavailable
from prismcache.stores import DocumentStore, codec, memory, open_store, redact_url, sqlite
from prismcache.stores.memory import MemoryStore
from prismcache.stores.sqlite import SQLiteStore


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[DocumentStore]:
        store = open_store("memory://")
        yield store
        store.close()

    def test_use_after_close_is_unavailable(self, store: DocumentStore) -> None:
        store.close()
        with pytest.raises(StoreUnavailable):
            store.get(1)


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[DocumentStore]:
        store = open_store(f"sqlite:///{tmp_path}/cache.db")
        yield store
        store.close()

    def test_persists_across_close_and_reopen(self, tmp_path: Path) -> None:
        path = tmp_path / "cache.db"
        entries = [make_entry(i, category="ab"[i % 2], expires=float(i)) for i in range(1, 6)]
        with SQLiteStore(path) as store:
            for entry in entries:
                store.put(entry)
            store.touch(1, now=50.0, priority=2.0)
        with SQLiteStore(path) as store:
            assert store.usage() == usage_of(entries)
            touched = make_entry(
                1, category="b", expires=1.0, hits=1, last_access=50.0, priority=2.0
            )
            assert_same_entry(store.get(1), touched)
            assert_same_entry(store.get(5), entries[4])
            assert [r.id for r in store.expire(2.0)] == [1, 2]
        with SQLiteStore(path) as store:
            assert store.usage() == usage_of(entries[2:])

    def test_wal_mode_and_schema_version(self, tmp_path: Path) -> None:
        path = tmp_path / "cache.db"
        SQLiteStore(path).close()
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert raw.execute("PRAGMA user_version").fetchone() == (sqlite.SCHEMA_VERSION,)
            tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master")}
        raw.close()
        assert {"entries", "usage", "entries_eviction", "entries_expires"} <= tables

    def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "future.db"
        raw = sqlite3.connect(path)
        raw.execute(f"PRAGMA user_version = {sqlite.SCHEMA_VERSION + 1}")
        raw.close()
        with pytest.raises(StoreUnavailable, match="schema version"):
            SQLiteStore(path)

    def test_missing_directory_is_unavailable(self, tmp_path: Path) -> None:
        path = tmp_path / "no" / "such" / "dir" / "cache.db"
        with pytest.raises(StoreUnavailable, match=str(path)):
            SQLiteStore(path)
        with pytest.raises(StoreUnavailable):
            open_store(f"sqlite:///{path}")

    def test_garbage_file_is_unavailable(self, tmp_path: Path) -> None:
        path = tmp_path / "garbage.db"
        path.write_bytes(b"this is not a database, just some text padding it out " * 100)
        with pytest.raises(StoreUnavailable, match="garbage.db"):
            SQLiteStore(path)

    def test_use_after_close_is_unavailable(self, store: DocumentStore) -> None:
        store.close()
        for call in (
            lambda: store.get(1),
            lambda: store.put(make_entry(1)),
            lambda: store.usage(),
            lambda: list(store.scan()),
        ):
            with pytest.raises(StoreUnavailable, match="closed"):
                call()

    def test_other_process_holding_the_write_lock_times_out(self, tmp_path: Path) -> None:
        path = tmp_path / "cache.db"
        with SQLiteStore(path, timeout=0.05) as store:
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(StoreTimeout, match="locked"):
                    store.put(make_entry(1))
                assert store.get(1) is None  # WAL: reading is not blocked by the writer
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            store.put(make_entry(1))

    def test_lock_wait_is_bounded_by_the_timeout(self, tmp_path: Path) -> None:
        with SQLiteStore(tmp_path / "cache.db", timeout=0.05) as store:
            entered, release = threading.Event(), threading.Event()

            def hold() -> None:
                with store._session():  # the one lock every operation takes
                    entered.set()
                    release.wait(5)

            holder = threading.Thread(target=hold)
            holder.start()
            entered.wait(5)
            try:
                with pytest.raises(StoreTimeout, match="busy"):
                    store.get(1)
            finally:
                release.set()
                holder.join()

    def test_no_raw_sqlite_error_escapes(self, tmp_path: Path) -> None:
        path = tmp_path / "cache.db"
        with SQLiteStore(path) as store:
            store.put(make_entry(1))
            raw = sqlite3.connect(path, isolation_level=None)
            raw.execute("DROP TABLE entries")
            raw.close()
            with pytest.raises(StoreError) as caught:
                store.get(1)
            assert not isinstance(caught.value, sqlite3.Error)
            assert isinstance(caught.value.__cause__, sqlite3.Error)

    @pytest.mark.parametrize(
        ("error", "kind"),
        [
            (sqlite3.OperationalError("database is locked"), StoreTimeout),
            (sqlite3.OperationalError("unable to open database file"), StoreUnavailable),
            (sqlite3.DatabaseError("file is not a database"), StoreUnavailable),
            (sqlite3.ProgrammingError("Cannot operate on a closed database."), StoreUnavailable),
            (sqlite3.IntegrityError("NOT NULL constraint failed: entries.tenant"), StoreError),
        ],
    )
    def test_translation_by_message(self, error: sqlite3.Error, kind: type) -> None:
        translated = sqlite._translate(error, "x.db")
        assert type(translated) is kind
        assert "x.db" in str(translated)

    def test_timeout_must_be_positive(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError):
            SQLiteStore(tmp_path / "x.db", timeout=0)


# -- opening by URL ---------------------------------------------------------------------------


def test_open_store_by_scheme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert type(open_store("memory://")) is MemoryStore
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db", timeout=1.0)
    assert isinstance(absolute, SQLiteStore) and absolute.path == f"{tmp_path}/abs.db"
    absolute.close()
    monkeypatch.chdir(tmp_path)
    relative = open_store("SQLite:///rel.db")
    assert isinstance(relative, SQLiteStore) and relative.path == "rel.db"
    relative.close()
    assert (tmp_path / "rel.db").exists()


@pytest.mark.parametrize(
    "url",
    ["ftp://x", "memory", "", "postgres://u:hunter2@h/db", "sqlite:///", "sqlite://rel.db",
     "sqlite:///x.db?timeout=1", "memory://somewhere"],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"memory://, redis://, redis\+cluster://, "
                                          r"redis\+sentinel://, rediss://, sqlite://"):
        open_store("mongodb://localhost")


def test_unknown_option_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="colour"):
        open_store(f"sqlite:///{tmp_path}/x.db", colour="blue")
    assert not (tmp_path / "x.db").exists()


def test_redis_without_its_module_is_a_clear_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(prismcache.stores._BACKENDS, "redis", "prismcache_no_such_mod:RedisStore")
    with pytest.raises(ConfigError, match="not available"):
        open_store("redis://:hunter2@localhost:6379/0")


def test_redis_without_the_redis_package_says_which_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = tmp_path / "fake_redis_backend.py"
    module.write_text("import redis.no_such_submodule\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(prismcache.stores._BACKENDS, "rediss", "fake_redis_backend:RedisStore")
    with pytest.raises(ConfigError, match=r"pip install 'prismcache\[redis\]'"):
        open_store("rediss://localhost")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:hunter2@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:hunter2@host", "redis://:***@host"),
        ("rediss://host/0?password=hunter2&ssl_cert_reqs=none",
         "rediss://host/0?password=%2A%2A%2A&ssl_cert_reqs=none"),
        ("redis://user@host:6379", "redis://user@host:6379"),
        ("sqlite:////var/lib/prism.db", "sqlite:////var/lib/prism.db"),
        ("memory://", "memory://"),
        ("redis://u:p@ss@host:x/0", "redis://u:***@host:x/0"),
        ("redis://u:hunter2@[::1", "redis://<unparseable>"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url)


def test_public_surface() -> None:
    assert set(prismcache.stores.__all__) == {"DocumentStore", "open_store", "redact_url"}
    assert memory.__all__ == ["MemoryStore"] and sqlite.__all__ == ["SQLiteStore"]


# -- codec ------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [prismcache.stores, codec, memory, sqlite])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0


def test_codec_round_trip_is_exact() -> None:
    entry = make_entry(9, chunks=[{"d": "é"}], expires=12.5)
    back = codec.decode(codec.encode(entry))
    assert_same_entry(back, entry)
    assert back.vector is not None and back.vector.flags.writeable


def test_codec_encodings() -> None:
    record = codec.encode(make_entry(1, request={"a": "é 1"}, response={}, chunks=[],
                                     vector=np.array([1.0, -2.0], dtype=">f8")))
    assert record.request == '{"a":"é 1"}'.encode()
    assert record.response == b"{}" and record.chunks == b"[]"
    assert record.vector == np.array([1.0, -2.0], dtype="<f4").tobytes()
    assert record.size == len(record.request) + 2 + 2
    assert record._fields == codec.FIELDS


@pytest.mark.parametrize("entry_id", [0, -1, 2**63, "7"])
def test_codec_rejects_bad_ids(entry_id: object) -> None:
    with pytest.raises(StoreError, match="id"):
        codec.encode(make_entry(1, id=entry_id))


def test_codec_rejects_bad_vectors_and_stored_garbage() -> None:
    with pytest.raises(StoreError, match="one-dimensional"):
        codec.encode(make_entry(1, vector=np.zeros((2, 2), np.float32)))
    with pytest.raises(StoreError, match="multiple of 4"):
        codec.decode_vector(b"abc")
    with pytest.raises(StoreError, match="JSON"):
        codec.decode_json(b"\xff{", what="response")
