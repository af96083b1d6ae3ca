"""``codec.sized``: an entry's size known before storing, its JSON encoded once; every store
takes the sized entry as it takes any entry."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_support import redis_server, redis_url  # noqa: F401 - fixtures
from store_contract import assert_same_entry, expected_size, make_entry

from prismcache.stores import DocumentStore, open_store
from prismcache.stores.codec import SizedEntry, encode, sized


def streamed(entry_id: int) -> SizedEntry:
    return sized(make_entry(entry_id, chunks=[{"choices": [{"delta": {"content": "é"}}]}] * 3))


def test_sized_is_the_size_the_store_sets_and_encodes_the_same() -> None:
    for entry in (make_entry(1), make_entry(2, chunks=[{"a": "ü"}]), make_entry(3, size=999)):
        known = sized(entry)
        assert known.size == expected_size(entry) == encode(entry).size
        assert encode(known) == encode(entry)  # the same record, field for field


def test_the_store_reuses_the_encodings() -> None:
    known = streamed(4)
    record = encode(known)
    assert known.documents is not None
    assert record.request is known.documents.request  # not encoded again
    assert record.response is known.documents.response
    assert record.chunks is known.documents.chunks


def test_replaced_documents_are_encoded_afresh() -> None:
    known = streamed(5)
    known.response = {"choices": [{"message": {"content": "another answer"}}]}
    assert encode(known) == encode(make_entry(5, response=known.response, chunks=known.chunks))
    other = dataclasses.replace(streamed(6), chunks=None)  # replace() copies `documents` too
    assert encode(other).chunks is None
    assert encode(other) == encode(make_entry(6))


def test_a_later_priority_is_what_is_stored() -> None:
    known = sized(make_entry(7))
    known.priority = 42.5  # set after sizing, as the cache does for GDSF
    assert encode(known).priority == 42.5


@pytest.fixture(params=["memory", "sqlite", "redis"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DocumentStore]:
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path / 'c.db'}"}.get(
        request.param) or request.getfixturevalue("redis_url")
    store = open_store(url)
    yield store
    store.close()


def test_every_store_takes_a_sized_entry(any_store: DocumentStore) -> None:
    known = streamed(8)
    any_store.put(known)
    got = any_store.get(8)
    assert type(got) is not SizedEntry
    assert_same_entry(got, known)
