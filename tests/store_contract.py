"""The contract every :class:`~prismcache.stores.base.DocumentStore` passes, whatever its backend.

A backend is tested by subclassing :class:`StoreContract` in a ``test_*.py`` module and
providing a ``store`` fixture that yields a fresh, empty, open store (and closes it after).
Nothing here may reach into a backend's internals: only the protocol's methods are used, and
expected values are computed from first principles (sizes from ``json.dumps``, not the codec).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from prismcache.entry import Entry, EntryRef, UsageCount
from prismcache.errors import StoreError
from prismcache.quotas import Quotas
from prismcache.stores.base import DocumentStore

DIM = 8


def make_entry(entry_id: int, **fields: Any) -> Entry:
    """A complete entry with distinctive values in every field; ``fields`` override them."""
    rng = np.random.default_rng(entry_id)
    values: dict[str, Any] = {
        "id": entry_id,
        "tenant": "acme",
        "partition": f"p{entry_id % 3}",
        "category": "faq",
        "model": "gpt-x",
        "exact_key": f"k{entry_id}",
        "query": f"what is {entry_id}?",
        "request": {"messages": [{"role": "user", "content": f"what is {entry_id}?"}]},
        "response": {"choices": [{"message": {"content": f"it is {entry_id}"}}]},
        "chunks": None,
        "vector": rng.standard_normal(DIM).astype(np.float32),
        "embedder": f"hash:{DIM}",
        "created": 1_700_000_000.25,
        "expires": None,
        "hits": 0,
        "last_access": 1_700_000_000.25,
        "cost": 0.0125,
        "latency": 1.5,
        "priority": 0.0,
    }
    values.update(fields)
    return Entry(**values)


def expected_size(entry: Entry) -> int:
    """Bytes of the compact UTF-8 JSON of request, response and chunks: the contract's size."""

    def encoded(value: Any) -> int:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return len(text.encode("utf-8"))

    chunks = 0 if entry.chunks is None else encoded(entry.chunks)
    return encoded(entry.request) + encoded(entry.response) + chunks


def ref(entry: Entry) -> EntryRef:
    """The ref a store reports for ``entry`` once stored (with the store's size)."""
    return EntryRef(
        id=entry.id,
        partition=entry.partition,
        category=entry.category,
        exact_key=entry.exact_key,
        size=expected_size(entry),
        priority=entry.priority,
    )


def usage_of(entries: list[Entry]) -> dict[str, UsageCount]:
    """The usage a store holding exactly ``entries`` must report."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for entry in entries:
        counts[entry.category] += 1
        sizes[entry.category] += expected_size(entry)
    return {c: UsageCount(entries=counts[c], bytes=sizes[c]) for c in counts}


def assert_same_entry(got: Entry | None, want: Entry) -> None:
    """Every field equal, the vector bytes-exact as float32, size as the contract defines."""
    assert got is not None
    for name in Entry.__dataclass_fields__:
        if name in ("vector", "size", "context_vector"):
            continue
        assert getattr(got, name) == getattr(want, name), name
    assert got.size == expected_size(want)
    if want.context_vector is None:
        assert got.context_vector is None
    else:
        assert got.context_vector is not None
        assert got.context_vector.tobytes() == want.context_vector.astype(np.float32).tobytes()
    if want.vector is None:
        assert got.vector is None
    else:
        assert got.vector is not None
        assert got.vector.dtype == np.float32
        assert got.vector.shape == want.vector.shape
        assert got.vector.tobytes() == want.vector.astype(np.float32).tobytes()


class StoreContract:
    """Tests every backend must pass. Subclasses provide the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> Iterator[DocumentStore]:
        raise NotImplementedError("a backend's test class provides the store fixture")

    # -- put / get ------------------------------------------------------------------------

    def test_is_a_document_store(self, store: DocumentStore) -> None:
        assert isinstance(store, DocumentStore)

    def test_round_trip_of_every_field(self, store: DocumentStore) -> None:
        entry = make_entry(
            12345,
            tenant="téñant-☃",
            category="naïve/类别",
            query="¿Qué tal? 你好 🙂 \"quoted\" \\ \n new line",
            request={"messages": [{"role": "user", "content": "你好 🙂"}], "temperature": 0.0},
            response={"choices": [{"message": {"content": "Grüße\u2028\x00"}}], "n": 2**53},
            chunks=[{"delta": "Grü"}, {"delta": "ße 🙂"}, {"finish_reason": "stop"}],
            vector=np.array([0.1, -0.0, 1e-38, 3.4e38, -1.0, 0.3, 1 / 3, 2**-24], np.float32),
            context_vector=np.array([0.6, 0.8, 0, 0, 0, 0, 0, -0.0], np.float32),
            created=1_700_000_123.456789,
            expires=1_700_003_723.456789,
            hits=7,
            last_access=1_700_000_500.5,
            cost=0.000123,
            latency=2.75,
            priority=-3.5,
        )
        store.put(entry)
        assert_same_entry(store.get(12345), entry)

    def test_round_trip_of_absent_optionals(self, store: DocumentStore) -> None:
        entry = make_entry(2, vector=None, expires=None, chunks=None, embedder="")
        store.put(entry)
        assert_same_entry(store.get(2), entry)

    def test_largest_id_and_big_vector(self, store: DocumentStore) -> None:
        vector = np.random.default_rng(0).standard_normal(1536).astype(np.float32)
        entry = make_entry(2**63 - 1, vector=vector)
        store.put(entry)
        assert_same_entry(store.get(2**63 - 1), entry)

    def test_size_is_the_stores_not_the_callers(self, store: DocumentStore) -> None:
        entry = make_entry(3, size=999_999)
        store.put(entry)
        got = store.get(3)
        assert got is not None and got.size == expected_size(entry)

    def test_get_missing_is_none(self, store: DocumentStore) -> None:
        assert store.get(404) is None
        store.put(make_entry(1))
        assert store.get(404) is None

    def test_numpy_integer_ids_are_accepted(self, store: DocumentStore) -> None:
        store.put(make_entry(77))
        assert store.get(np.int64(77)) is not None  # type: ignore[arg-type]
        store.touch(np.uint64(77), now=5.0, priority=1.0)  # type: ignore[arg-type]
        assert [r.id for r in store.delete(np.array([77], dtype=np.int64))] == [77]

    def test_stored_entry_is_isolated_from_callers(self, store: DocumentStore) -> None:
        entry = make_entry(4)
        store.put(entry)
        entry.response["choices"] = []
        assert entry.vector is not None
        entry.vector[:] = 0
        got = store.get(4)
        assert got is not None and got.response["choices"] != []
        assert got.vector is not None and got.vector.any()
        got.request.clear()
        assert store.get(4).request != {}  # type: ignore[union-attr]

    def test_put_replaces_by_id(self, store: DocumentStore) -> None:
        store.put(make_entry(5, category="faq"))
        replacement = make_entry(
            5, category="code", response={"text": "a much longer answer " * 10}, hits=3
        )
        store.put(replacement)
        assert_same_entry(store.get(5), replacement)
        assert store.usage() == usage_of([replacement])
        assert store.find() == [ref(replacement)]

    def test_unencodable_entry_raises_store_error_and_stores_nothing(
        self, store: DocumentStore
    ) -> None:
        with pytest.raises(StoreError):
            store.put(make_entry(6, response={"not json": object()}))
        with pytest.raises(StoreError):
            store.put(make_entry(7, response={"nan": float("nan")}))
        assert store.get(6) is None and store.get(7) is None
        assert store.usage() == {}

    # -- touch ------------------------------------------------------------------------------

    def test_touch_counts_a_hit(self, store: DocumentStore) -> None:
        entry = make_entry(8, hits=2, last_access=10.0, priority=1.0)
        store.put(entry)
        store.touch(8, now=20.0, priority=4.5)
        store.touch(8, now=30.0, priority=5.5)
        got = store.get(8)
        assert got is not None
        assert (got.hits, got.last_access, got.priority) == (4, 30.0, 5.5)
        assert_same_entry(got, make_entry(8, hits=4, last_access=30.0, priority=5.5))
        assert store.usage() == usage_of([entry])

    def test_touch_missing_is_ignored(self, store: DocumentStore) -> None:
        store.touch(404, now=1.0, priority=1.0)
        assert store.get(404) is None
        assert store.usage() == {}

    # -- delete -----------------------------------------------------------------------------

    def test_delete_returns_refs_of_existing_only(self, store: DocumentStore) -> None:
        entries = [make_entry(i, priority=float(i)) for i in (1, 2, 3)]
        for entry in entries:
            store.put(entry)
        removed = store.delete(iter([3, 404, 1, 3]))
        assert sorted(removed, key=lambda r: r.id) == [ref(entries[0]), ref(entries[2])]
        assert store.get(1) is None and store.get(3) is None
        assert_same_entry(store.get(2), entries[1])
        assert store.delete([1, 3]) == []
        assert store.delete([]) == []
        assert store.usage() == usage_of([entries[1]])

    # -- find -------------------------------------------------------------------------------

    def test_find_by_every_filter_and_combination(self, store: DocumentStore) -> None:
        entries = [
            make_entry(1, tenant="a", category="faq", model="m1"),
            make_entry(2, tenant="a", category="code", model="m2"),
            make_entry(3, tenant="b", category="faq", model="m2"),
            make_entry(4, tenant="b", category="code", model="m1"),
            make_entry(5, tenant="a", category="faq", model="m2"),
        ]
        for entry in entries:
            store.put(entry)

        def ids(**filters: str) -> set[int]:
            found = store.find(**filters)
            assert len(found) == len({r.id for r in found})
            assert all(r == ref(entries[r.id - 1]) for r in found)
            return {r.id for r in found}

        assert ids() == {1, 2, 3, 4, 5}
        assert ids(tenant="a") == {1, 2, 5}
        assert ids(category="faq") == {1, 3, 5}
        assert ids(model="m1") == {1, 4}
        assert ids(tenant="a", category="faq") == {1, 5}
        assert ids(tenant="b", model="m2") == {3}
        assert ids(category="code", model="m2") == {2}
        assert ids(tenant="a", category="faq", model="m2") == {5}
        assert ids(tenant="nobody") == set()
        assert ids(tenant="b", category="faq", model="m1") == set()

    # -- evict_over -------------------------------------------------------------------------

    def _fill_for_eviction(self, store: DocumentStore) -> list[Entry]:
        """Six 'faq' entries whose eviction order is 4, 2, 6, 1, 5, 3, and one 'code'."""
        entries = [
            make_entry(1, priority=2.0, last_access=100.0),
            make_entry(2, priority=1.0, last_access=200.0),
            make_entry(3, priority=3.0, last_access=50.0),
            make_entry(4, priority=1.0, last_access=150.0),  # same priority as 2, older
            make_entry(5, priority=2.0, last_access=300.0),
            make_entry(6, priority=1.0, last_access=250.0),
            make_entry(7, category="code", priority=-10.0),
        ]
        for entry in entries:
            store.put(entry)
        return entries

    def test_evict_over_entries_lowest_priority_then_oldest(self, store: DocumentStore) -> None:
        entries = self._fill_for_eviction(store)
        evicted = store.evict_over("faq", max_entries=3, max_bytes=None)
        assert {r.id for r in evicted} == {4, 2, 6}
        assert sorted(evicted, key=lambda r: r.id) == [ref(entries[i - 1]) for i in (2, 4, 6)]
        survivors = [entries[i - 1] for i in (1, 3, 5, 7)]
        assert store.usage() == usage_of(survivors)
        assert {r.id for r in store.find()} == {1, 3, 5, 7}

    def test_evict_over_breaks_priority_ties_by_older_last_access(
        self, store: DocumentStore
    ) -> None:
        self._fill_for_eviction(store)
        assert [r.id for r in store.evict_over("faq", max_entries=5, max_bytes=None)] == [4]
        assert [r.id for r in store.evict_over("faq", max_entries=4, max_bytes=None)] == [2]
        assert [r.id for r in store.evict_over("faq", max_entries=3, max_bytes=None)] == [6]

    def test_evict_over_respects_touch(self, store: DocumentStore) -> None:
        self._fill_for_eviction(store)
        store.touch(4, now=400.0, priority=9.0)
        evicted = store.evict_over("faq", max_entries=4, max_bytes=None)
        assert {r.id for r in evicted} == {2, 6}

    def test_evict_over_bytes(self, store: DocumentStore) -> None:
        entries = self._fill_for_eviction(store)
        faq = [e for e in entries if e.category == "faq"]
        total = sum(expected_size(e) for e in faq)
        # Allow one byte less than everything but the first two victims: a third must go.
        limit = total - expected_size(entries[3]) - expected_size(entries[1]) - 1
        evicted = store.evict_over("faq", max_entries=None, max_bytes=limit)
        assert {r.id for r in evicted} == {4, 2, 6}
        assert store.usage()["faq"].bytes <= limit

    def test_evict_over_both_limits_takes_the_stricter(self, store: DocumentStore) -> None:
        self._fill_for_eviction(store)
        assert {r.id for r in store.evict_over("faq", max_entries=5, max_bytes=10**9)} == {4}
        assert {r.id for r in store.evict_over("faq", max_entries=10, max_bytes=1)} == {
            2,
            6,
            1,
            5,
            3,
        }
        assert "faq" not in store.usage()
        assert store.get(7) is not None

    def test_evict_over_within_limits_or_unknown_category_is_a_no_op(
        self, store: DocumentStore
    ) -> None:
        entries = self._fill_for_eviction(store)
        before = store.usage()
        assert store.evict_over("faq", max_entries=6, max_bytes=before["faq"].bytes) == []
        assert store.evict_over("faq", max_entries=None, max_bytes=None) == []
        assert store.evict_over("nope", max_entries=0, max_bytes=0) == []
        assert store.usage() == before == usage_of(entries)

    def test_evict_over_to_zero_empties_only_that_category(self, store: DocumentStore) -> None:
        entries = self._fill_for_eviction(store)
        assert len(store.evict_over("faq", max_entries=0, max_bytes=None)) == 6
        assert store.usage() == usage_of([entries[6]])

    # -- evict_for (work-conserving quotas) --------------------------------------------------

    def _quotas(self, entries: int = 10, nbytes: int | None = None,
                ceilings: dict[str, float] | None = None) -> Quotas:
        return Quotas(capacity_entries=entries, capacity_bytes=nbytes,
                      shares={"faq": 0.3, "code": 0.5, "chat": 0.2}, ceilings=ceilings or {})

    def _put_all(self, store: DocumentStore, category: str, ids: range,
                 **fields: Any) -> list[Entry]:
        entries = [make_entry(i, category=category, priority=float(i), last_access=float(i),
                              **fields) for i in ids]
        for entry in entries:
            store.put(entry)
            assert store.evict_for(category, self._quotas()) == []
        return entries

    def test_evict_for_lets_a_category_borrow_free_capacity(self, store: DocumentStore) -> None:
        self._put_all(store, "faq", range(1, 11))  # 10 = the whole capacity, share 3
        assert store.usage()["faq"].entries == 10

    def test_evict_for_reclaims_from_the_borrower_lowest_priority_first(
        self, store: DocumentStore
    ) -> None:
        self._put_all(store, "faq", range(1, 11))
        quotas = self._quotas()
        evicted = []
        for i in range(11, 16):  # code reclaims 5 of its 5 guaranteed from faq, oldest first
            store.put(make_entry(i, category="code", priority=0.0))
            evicted += store.evict_for("code", quotas)
        assert [r.id for r in evicted] == [1, 2, 3, 4, 5]
        assert all(r.category == "faq" for r in evicted)
        assert {c: u.entries for c, u in store.usage().items()} == {"faq": 5, "code": 5}

    def test_evict_for_takes_from_the_largest_borrower(self, store: DocumentStore) -> None:
        self._put_all(store, "faq", range(1, 6))  # 5: 2 above its 3
        self._put_all(store, "chat", range(6, 11))  # 5: 3 above its 2
        store.put(make_entry(11, category="code"))
        assert [r.id for r in store.evict_for("code", self._quotas())] == [6]
        store.put(make_entry(12, category="code"))  # chat 4 (2 above) ties faq: name order
        assert [r.id for r in store.evict_for("code", self._quotas())] == [6 + 1]

    def test_evict_for_a_category_at_its_share_loses_only_to_itself(
        self, store: DocumentStore
    ) -> None:
        self._put_all(store, "faq", range(1, 4))  # 3 = its share
        self._put_all(store, "code", range(4, 11))  # 7: 2 above its 5
        store.put(make_entry(11, category="code", priority=99.0))
        assert [r.id for r in store.evict_for("code", self._quotas())] == [4]
        # Shares summing past 1: nobody borrows, so each admission evicts its own category.
        tight = Quotas(capacity_entries=10, capacity_bytes=None, shares={"faq": 0.5, "code": 0.7})
        store.put(make_entry(12, category="code", priority=99.0))
        assert [r.id for r in store.evict_for("code", tight)] == [5]
        store.put(make_entry(13, category="faq", priority=99.0))
        assert [r.id for r in store.evict_for("faq", tight)] == [1]
        assert {c: u.entries for c, u in store.usage().items()} == {"faq": 3, "code": 7}

    def test_evict_for_enforces_a_ceiling_while_space_is_free(self, store: DocumentStore) -> None:
        self._put_all(store, "faq", range(1, 5))
        quotas = self._quotas(ceilings={"faq": 0.3})
        store.put(make_entry(5, category="faq", priority=9.0))
        assert [r.id for r in store.evict_for("faq", quotas)] == [1, 2]
        assert store.usage()["faq"].entries == 3

    def test_evict_for_bytes_capacity(self, store: DocumentStore) -> None:
        faq = self._put_all(store, "faq", range(1, 5))
        size = expected_size(faq[0])
        quotas = Quotas(capacity_entries=100, capacity_bytes=4 * size + size // 2,
                        shares={"faq": 0.5, "code": 0.5})
        code = make_entry(5, category="code")
        store.put(code)
        evicted = store.evict_for("code", quotas)
        assert [r.id for r in evicted] == [1]
        assert evicted[0] == ref(faq[0])
        assert sum(u.bytes for u in store.usage().values()) <= 4 * size + size // 2

    def test_evict_for_unknown_category_has_no_share(self, store: DocumentStore) -> None:
        self._put_all(store, "code", range(1, 6))  # at its share
        for i in range(6, 11):
            store.put(make_entry(i, category="legacy", priority=float(i)))
        store.put(make_entry(11, category="code"))
        assert [r.id for r in store.evict_for("code", self._quotas())] == [6]

    def test_evict_for_within_limits_is_a_no_op(self, store: DocumentStore) -> None:
        entries = self._put_all(store, "faq", range(1, 4))
        assert store.evict_for("nope", self._quotas()) == []
        assert store.usage() == usage_of(entries)

    def test_evict_for_invariants_under_a_random_workload(self, store: DocumentStore) -> None:
        rng = np.random.default_rng(7)
        quotas = Quotas(capacity_entries=40, capacity_bytes=40 * 160,
                        shares={"faq": 0.3, "code": 0.5, "chat": 0.2}, ceilings={"chat": 0.4})
        names = ("faq", "code", "chat", "legacy")
        for i in range(1, 301):
            category = names[int(rng.integers(4))]
            before = {c: u.entries for c, u in store.usage().items()}
            store.put(make_entry(i, category=category, priority=float(rng.integers(5)),
                                 response={"text": "x" * int(rng.integers(1, 120))}))
            evicted = store.evict_for(category, quotas)
            usage = {c: (u.entries, u.bytes) for c, u in store.usage().items()}
            assert quotas.next_victim(usage, category) is None
            for r in evicted:  # a victim of another category was above its share
                if r.category != category:
                    held = before[r.category] - sum(v.category == r.category for v in evicted)
                    assert held >= quotas.limit(quotas.shares.get(r.category, 0.0))[0]

    # -- expire -----------------------------------------------------------------------------

    def test_expire_deletes_due_entries_only(self, store: DocumentStore) -> None:
        entries = [
            make_entry(1, expires=100.0),
            make_entry(2, expires=200.0),  # exactly now: due
            make_entry(3, expires=200.5),
            make_entry(4, expires=None),
            make_entry(5, expires=50.0, category="code"),
        ]
        for entry in entries:
            store.put(entry)
        expired = store.expire(200.0)
        assert sorted(expired, key=lambda r: r.id) == [ref(entries[i]) for i in (0, 1, 4)]
        assert {r.id for r in store.find()} == {3, 4}
        assert store.usage() == usage_of([entries[2], entries[3]])
        assert store.expire(200.0) == []
        assert [r.id for r in store.expire(10**12)] == [3]

    # -- scan -------------------------------------------------------------------------------

    def test_scan_of_empty_store(self, store: DocumentStore) -> None:
        assert list(store.scan()) == []

    def test_scan_yields_every_entry_once_with_vectors(self, store: DocumentStore) -> None:
        entries = {i: make_entry(i, category=f"c{i % 4}") for i in range(1, 1201)}
        entries[600] = make_entry(600, vector=None)
        for entry in entries.values():
            store.put(entry)
        seen = Counter()
        for got in store.scan():
            seen[got.id] += 1
            assert_same_entry(got, entries[got.id])
        assert seen == Counter(entries.keys())

    def test_scan_since_yields_only_entries_created_since(self, store: DocumentStore) -> None:
        for i in range(1, 11):
            store.put(make_entry(i, created=1000.0 + i))
        assert sorted(e.id for e in store.scan(since=1005.0)) == [5, 6, 7, 8, 9, 10]
        assert sorted(e.id for e in store.scan(since=2000.0)) == []

    def test_scan_without_documents_keeps_everything_but_the_json(
        self, store: DocumentStore
    ) -> None:
        original = make_entry(3, chunks=[{"delta": "x"}])
        store.put(original)
        (got,) = store.scan(documents=False)
        assert (got.request, got.response, got.chunks) == ({}, {}, None)
        assert got.vector is not None and np.array_equal(got.vector, original.vector)
        for name in ("id", "tenant", "partition", "category", "model", "exact_key", "query",
                     "embedder", "created", "expires", "hits", "cost", "priority"):
            assert getattr(got, name) == getattr(original, name), name

    def test_scan_partition_yields_only_that_partition_without_documents(
        self, store: DocumentStore
    ) -> None:
        entries = {i: make_entry(i, partition=f"p{i % 3}", category="ab"[i % 2])
                   for i in range(1, 701)}
        entries[4] = make_entry(4, partition="p1", vector=None)
        for entry in entries.values():
            store.put(entry)
        store.delete([7])
        seen = Counter()
        for got in store.scan_partition("p1"):
            seen[got.id] += 1
            want = entries[got.id]
            assert (got.request, got.response, got.chunks) == ({}, {}, None)
            for name in ("partition", "category", "exact_key", "embedder", "priority"):
                assert getattr(got, name) == getattr(want, name), name
            if want.vector is None:
                assert got.vector is None
            else:
                assert got.vector is not None
                assert got.vector.tobytes() == want.vector.astype(np.float32).tobytes()
        assert seen == Counter(i for i, e in entries.items() if e.partition == "p1" and i != 7)
        assert list(store.scan_partition("nowhere")) == []

    # -- usage ------------------------------------------------------------------------------

    def test_usage_after_every_kind_of_mutation(self, store: DocumentStore) -> None:
        live: dict[int, Entry] = {}

        def check() -> None:
            assert store.usage() == usage_of(list(live.values()))

        check()
        for i in range(1, 9):
            live[i] = make_entry(i, category="ab"[i % 2], priority=float(i), expires=float(i))
            store.put(live[i])
            check()
        live[2] = make_entry(2, category="a", response={"longer": "x" * 500}, expires=2.0)
        store.put(live[2])  # replace, same category, new size
        check()
        live[3] = make_entry(3, category="c", expires=3.0)
        store.put(live[3])  # replace into another category
        check()
        store.touch(4, now=99.0, priority=0.5)
        check()
        for r in store.delete([5, 404]):
            del live[r.id]
        check()
        for r in store.evict_over("a", max_entries=1, max_bytes=None):
            del live[r.id]
        check()
        for r in store.expire(3.0):
            del live[r.id]
        check()
        for r in store.delete(list(live)):
            del live[r.id]
        assert store.usage() == {}

    # -- concurrency ------------------------------------------------------------------------

    def test_concurrent_put_get_touch_delete_evict(self, store: DocumentStore) -> None:
        threads, per_thread, limit = 6, 150, 40
        categories = ("a", "b", "c")
        failures: list[BaseException] = []
        start = threading.Barrier(threads)

        def work(t: int) -> None:
            try:
                start.wait()
                for n in range(per_thread):
                    entry_id = t * 10_000 + n + 1
                    category = categories[n % 3]
                    entry = make_entry(entry_id, category=category, priority=float(n))
                    store.put(entry)
                    got = store.get(entry_id)
                    if got is not None:  # another thread's eviction may already have won
                        assert_same_entry(got, entry)
                    store.touch(entry_id - 1, now=float(n), priority=float(n))
                    if n % 7 == 0:
                        store.delete([entry_id - 3])
                    store.evict_over(category, max_entries=limit, max_bytes=None)
                    if n % 25 == 0:
                        store.find(category=category)
                        store.usage()
            except BaseException as exc:  # reported below, with the thread that raised it
                failures.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert failures == []

        stored = list(store.scan())
        assert store.usage() == usage_of(stored)
        assert len({e.id for e in stored}) == len(stored)
        assert {r.id for r in store.find()} == {e.id for e in stored}
        for category in categories:
            assert 0 < store.usage()[category].entries <= limit

    # -- close ------------------------------------------------------------------------------

    def test_close_is_idempotent(self, store: DocumentStore) -> None:
        store.put(make_entry(1))
        store.close()
        store.close()
