"""The vector index seam: one contract suite run against every kind, plus HNSW recall measured
against the exact oracle on clustered vectors, snapshots, promotion and concurrency."""

from __future__ import annotations

import doctest
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import prismcache.index as index_pkg
from prismcache.errors import IndexError_
from prismcache.index import (
    ExactIndex,
    HnswIndex,
    IndexSpec,
    RWLock,
    TieredIndex,
    VectorIndex,
    load_index,
    make_index,
)
from prismcache.index import exact as exact_mod
from prismcache.index import rwlock as rwlock_mod

DIM = 32
KINDS = ["exact", "hnsw", "tiered"]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, dim: int, centres: int,
              noise: float = 0.08) -> np.ndarray:
    """Unit vectors around random centres: the neighbourhood structure real embeddings have
    (uniform random vectors have none, so recall on them means nothing)."""
    c = unit(rng.normal(size=(centres, dim)))
    which = rng.integers(0, centres, size=n)
    return unit(c[which] + rng.normal(scale=noise, size=(n, dim)))


def build(kind: str, dim: int = DIM, **kw: int) -> VectorIndex:
    # A low promote_at makes the contract tests with 100+ vectors run a tiered index's HNSW tier.
    kw.setdefault("promote_at", 50)
    return make_index(dim, IndexSpec(kind=kind, **kw))  # type: ignore[arg-type]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# --- the contract, for every kind -----------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
class TestContract:
    def test_is_a_vector_index(self, kind: str) -> None:
        index = build(kind)
        assert isinstance(index, VectorIndex)
        assert index.dim == DIM

    def test_empty_index_returns_nothing(self, kind: str, rng: np.random.Generator) -> None:
        index = build(kind)
        assert len(index) == 0
        assert index.search(unit(rng.normal(size=DIM)), k=3) == []

    def test_finds_each_vector_itself_best_first(self, kind: str,
                                                 rng: np.random.Generator) -> None:
        index = build(kind)
        vectors = clustered(rng, 200, DIM, centres=20)
        ids = np.arange(1, 201) * 1_000_003
        index.add(ids, vectors)
        assert len(index) == 200
        for i in (0, 57, 199):
            result = index.search(vectors[i], k=4)
            assert result[0][0] == ids[i]
            assert result[0][1] == pytest.approx(1.0, abs=1e-5)
            sims = [s for _, s in result]
            assert sims == sorted(sims, reverse=True)
            assert all(isinstance(i, int) and isinstance(s, float) for i, s in result)

    def test_k_larger_than_index(self, kind: str, rng: np.random.Generator) -> None:
        index = build(kind)
        index.add(np.array([5, 6, 7]), unit(rng.normal(size=(3, DIM))))
        assert sorted(i for i, _ in index.search(unit(rng.normal(size=DIM)), k=10)) == [5, 6, 7]

    def test_large_ids_survive(self, kind: str, rng: np.random.Generator) -> None:
        index = build(kind)
        big = np.array([2**63 - 1, 2**62 + 12345], dtype=np.int64)
        vectors = unit(rng.normal(size=(2, DIM)))
        index.add(big, vectors)
        assert index.search(vectors[0], k=1)[0][0] == 2**63 - 1
        assert index.search(vectors[1], k=1)[0][0] == 2**62 + 12345

    def test_removed_ids_are_never_returned(self, kind: str, rng: np.random.Generator) -> None:
        index = build(kind)
        vectors = clustered(rng, 300, DIM, centres=10)
        ids = np.arange(1, 301)
        index.add(ids, vectors)
        gone = ids[::3]
        index.remove(gone)
        index.remove(gone)  # again: ignored
        index.remove(np.array([999_999]))  # unknown: ignored
        assert len(index) == 300 - gone.size
        for v in vectors[::7]:
            found = {i for i, _ in index.search(v, k=20)}
            assert found and not found & set(gone.tolist())

    def test_remove_everything(self, kind: str, rng: np.random.Generator) -> None:
        index = build(kind)
        vectors = unit(rng.normal(size=(10, DIM)))
        index.add(np.arange(1, 11), vectors)
        index.remove(np.arange(1, 11))
        assert len(index) == 0
        assert index.search(vectors[0], k=3) == []

    def test_search_after_removing_most(self, kind: str, rng: np.random.Generator) -> None:
        index = build(kind, promote_at=100)
        vectors = clustered(rng, 1000, DIM, centres=10)
        index.add(np.arange(1, 1001), vectors)
        index.remove(np.arange(1, 991))
        assert len(index) == 10
        for v in vectors[::50]:
            found = [i for i, _ in index.search(v, k=10)]
            assert found and set(found) <= set(range(991, 1001))

    def test_re_adding_replaces_the_vector(self, kind: str, rng: np.random.Generator) -> None:
        index = build(kind)
        vectors = clustered(rng, 100, DIM, centres=5)
        index.add(np.arange(1, 101), vectors)
        fresh = unit(rng.normal(size=(2, DIM)))
        index.add(np.array([10, 10]), fresh)  # within a batch, the last vector wins
        assert len(index) == 100
        assert index.search(fresh[1], k=1) == [(10, pytest.approx(1.0, abs=1e-5))]
        assert all(i != 10 for i, _ in index.search(vectors[9], k=5)
                   if _ > 0.999)

    def test_re_adding_a_live_id_beside_removed_slots(self, kind: str,
                                                      rng: np.random.Generator) -> None:
        # hnswlib trap: replace_deleted=True for an existing id fills a vacant slot and leaves
        # the old slot live under the same label, so the old vector would still be returned.
        index = build(kind)
        vectors = clustered(rng, 200, DIM, centres=10)
        index.add(np.arange(1, 201), vectors)
        index.remove(np.arange(101, 151))  # vacant slots
        fresh = unit(rng.normal(size=(1, DIM)))
        index.add(np.array([7]), fresh)
        assert len(index) == 150
        assert index.search(fresh[0], k=1)[0][0] == 7
        assert not any(i == 7 for i, _ in index.search(vectors[6], k=10))
        index.remove(np.array([7]))
        assert all(i != 7 for q in (fresh[0], vectors[6]) for i, _ in index.search(q, k=10))

    def test_re_adding_a_removed_id_restores_it(self, kind: str,
                                                rng: np.random.Generator) -> None:
        index = build(kind)
        vectors = clustered(rng, 100, DIM, centres=5)
        index.add(np.arange(1, 101), vectors)
        index.remove(np.array([20, 21]))
        # A new id now takes a removed slot (hnsw), then the removed ids come back changed.
        index.add(np.array([500]), unit(rng.normal(size=(1, DIM))))
        fresh = unit(rng.normal(size=(2, DIM)))
        index.add(np.array([20, 21]), fresh)
        assert len(index) == 101
        for ident, v in zip((20, 21), fresh, strict=True):
            assert index.search(v, k=1)[0][0] == ident
        old = index.search(vectors[19], k=3)
        assert not any(i == 20 and s > 0.999 for i, s in old)
        index.remove(np.array([20]))
        assert all(i != 20 for i, _ in index.search(fresh[0], k=10))

    @pytest.mark.parametrize("bad", [(3, DIM + 1), (DIM,), (3, 1, DIM)])
    def test_wrong_dimension_raises(self, kind: str, bad: tuple[int, ...]) -> None:
        index = build(kind)
        with pytest.raises(IndexError_):
            index.add(np.arange(1, 4), np.ones(bad, dtype=np.float32))
        with pytest.raises(IndexError_):
            index.search(np.ones(DIM + 1, dtype=np.float32), k=1)
        assert len(index) == 0

    def test_refuses_bad_ids(self, kind: str) -> None:
        index = build(kind)
        v = unit(np.ones((2, DIM)))
        for ids in (np.array([1, 0]), np.array([-3, 4]), np.array([1.5, 2.0]),
                    np.array([1, 2, 3])):
            with pytest.raises(IndexError_):
                index.add(ids, v)
        with pytest.raises(IndexError_):
            index.search(v[0], k=0)

    def test_save_load_round_trip(self, kind: str, rng: np.random.Generator,
                                  tmp_path: Path) -> None:
        index = build(kind, ef_search=37, promote_at=100)
        vectors = clustered(rng, 400, DIM, centres=20)
        index.add(np.arange(1, 401), vectors)
        index.remove(np.arange(1, 401, 5))
        queries = clustered(rng, 30, DIM, centres=20)
        before = [index.search(q, k=5) for q in queries]
        index.save(tmp_path / "snap")
        again = load_index(tmp_path / "snap")
        assert type(again) is type(index)
        assert len(again) == len(index) == 320
        assert [again.search(q, k=5) for q in queries] == before
        if isinstance(again, HnswIndex):
            assert again.ef_search == 37
        if isinstance(again, TieredIndex):
            assert again.tier == "hnsw" and again.ef_search == 37
        # the reloaded index keeps working: a new id, a revived removed id, a removal
        again.add(np.array([1000, 6]), vectors[:2])
        again.remove(np.array([3]))
        assert len(again) == 321


# --- HNSW specifics ---------------------------------------------------------------------------

@pytest.mark.parametrize("ef", [32, 64])
def test_hnsw_recall_of_true_top1_on_clustered_vectors(rng: np.random.Generator, ef: int) -> None:
    dim, n = 64, 8000
    base = clustered(rng, n, dim, centres=400, noise=0.08)
    ids = np.unique(rng.integers(1, 2**63 - 1, size=n, dtype=np.int64))
    n = ids.size
    hnsw = HnswIndex(dim, ef_search=ef, capacity=256)  # grows by doubling on the way
    oracle = ExactIndex(dim)
    hnsw.add(ids, base)
    oracle.add(ids, base)
    # queries are noisy copies of stored vectors: each has a close neighbour
    picks = rng.integers(0, n, size=500)
    queries = unit(base[picks] + rng.normal(scale=0.02, size=(500, dim)))
    truths = [oracle.search(q, k=1)[0] for q in queries]
    close = [(q, t) for q, t in zip(queries, truths, strict=True) if t[1] >= 0.9]
    assert len(close) > 450
    # the workload is not trivial: the clusters are crowded, a query's cluster has rivals
    second = [oracle.search(q, k=2)[1][1] for q, _ in close[:50]]
    assert np.median(second) > 0.6
    hits = sum(hnsw.search(q, k=1)[0][0] == t[0] for q, t in close)
    assert hits / len(close) >= 0.95
    assert hnsw.capacity >= n


def test_hnsw_removed_slots_are_reused(rng: np.random.Generator) -> None:
    index = HnswIndex(DIM, capacity=64)
    index.add(np.arange(1, 65), unit(rng.normal(size=(64, DIM))))
    for round_ in range(5):  # eviction churn: remove 32, add 32 new ids
        start = 1000 * (round_ + 1)
        index.remove(np.arange(1, 65)[:32] if round_ == 0 else np.arange(start - 1000,
                                                                          start - 968))
        index.add(np.arange(start, start + 32), unit(rng.normal(size=(32, DIM))))
        assert len(index) == 64
    assert index.capacity == 64


def test_hnsw_ef_is_settable(rng: np.random.Generator) -> None:
    index = HnswIndex(DIM, ef_search=10)
    index.ef_search = 99
    assert index.ef_search == 99
    with pytest.raises(ValueError):
        index.ef_search = 0


# --- tiered promotion -------------------------------------------------------------------------

def test_promotion_keeps_every_id_searchable(rng: np.random.Generator) -> None:
    index = TieredIndex(DIM, promote_at=150)
    vectors = clustered(rng, 400, DIM, centres=40)
    ids = np.arange(1, 401) * 7919
    for start in range(0, 140, 20):
        index.add(ids[start:start + 20], vectors[start:start + 20])
    index.remove(ids[:10])
    assert index.tier == "exact"
    index.add(ids[140:160], vectors[140:160])
    assert index.tier == "exact" and len(index) == 150  # not past promote_at yet
    index.add(ids[160:400], vectors[160:400])
    assert index.tier == "hnsw" and len(index) == 390
    for i in range(10, 400):
        assert index.search(vectors[i], k=1)[0][0] == ids[i]
    assert all(index.search(v, k=5)[0][0] not in ids[:10] for v in vectors[:10])
    index.remove(ids[10:390])
    assert index.tier == "hnsw" and len(index) == 10  # never demotes


# --- IndexSpec, make_index, public surface ----------------------------------------------------

def test_index_spec_defaults_and_repr() -> None:
    spec = IndexSpec()
    assert repr(spec) == ("IndexSpec(kind='tiered', m=16, ef_construction=128, ef_search=64, "
                          "promote_at=2048)")
    with pytest.raises(TypeError):
        IndexSpec("hnsw")  # type: ignore[misc]
    with pytest.raises(AttributeError):
        spec.m = 8  # type: ignore[misc]


@pytest.mark.parametrize("kwargs", [
    {"kind": "faiss"}, {"m": 1}, {"m": 16.0}, {"ef_search": 0}, {"ef_construction": True},
    {"promote_at": -1},
])
def test_index_spec_validates(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        IndexSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind,cls", [("exact", ExactIndex), ("hnsw", HnswIndex),
                                      ("tiered", TieredIndex)])
def test_make_index_picks_the_kind(kind: str, cls: type) -> None:
    index = make_index(8, IndexSpec(kind=kind, ef_search=50))  # type: ignore[arg-type]
    assert type(index) is cls and index.dim == 8
    if isinstance(index, HnswIndex):
        assert index.ef_search == 50


def test_load_index_refuses_what_is_not_a_snapshot(tmp_path: Path) -> None:
    with pytest.raises(IndexError_):
        load_index(tmp_path)
    (tmp_path / "meta.json").write_text('{"format": 99, "kind": "exact"}')
    with pytest.raises(IndexError_):
        load_index(tmp_path)


def test_public_surface() -> None:
    assert set(index_pkg.__all__) == {
        "ExactIndex", "HnswIndex", "IndexSpec", "RWLock", "TieredIndex", "VectorIndex",
        "load_index", "make_index",
    }
    for name in index_pkg.__all__:
        assert getattr(index_pkg, name) is not None


@pytest.mark.parametrize("module", [index_pkg, exact_mod, rwlock_mod])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


# --- the readers-writer lock ------------------------------------------------------------------

def test_rwlock_readers_share() -> None:
    lock = RWLock()
    inside = threading.Barrier(3, timeout=5)

    def reader() -> None:
        with lock.read():
            inside.wait()  # all three are inside together, or this times out

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    reader()
    for t in threads:
        t.join()


def test_rwlock_waiting_writer_goes_before_new_readers() -> None:
    lock = RWLock()
    order: list[str] = []
    first_reader_in = threading.Event()
    release_first = threading.Event()

    def first_reader() -> None:
        with lock.read():
            first_reader_in.set()
            release_first.wait(5)

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def late_reader() -> None:
        with lock.read():
            order.append("late reader")

    t1 = threading.Thread(target=first_reader)
    t1.start()
    first_reader_in.wait(5)
    tw = threading.Thread(target=writer)
    tw.start()
    deadline = time.monotonic() + 5
    while not lock._writers_waiting and time.monotonic() < deadline:
        time.sleep(0.001)
    tr = threading.Thread(target=late_reader)
    tr.start()
    time.sleep(0.05)
    assert order == []  # the late reader waits behind the waiting writer
    release_first.set()
    for t in (t1, tw, tr):
        t.join(5)
    assert order == ["writer", "late reader"]


# --- concurrency ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_readers_beside_a_writer(kind: str, rng: np.random.Generator) -> None:
    """Readers search while one writer adds, replaces and removes for about a second: nothing
    crashes, and no search returns an id removed (and never re-added) before it started."""
    index = build(kind, promote_at=600)  # the tiered index promotes during the run
    pool = clustered(rng, 3000, DIM, centres=30)
    index.add(np.arange(1, 301), pool[:300])
    removed: set[int] = set()  # ids removed for good; grows only after index.remove returns
    errors: list[BaseException] = []
    violations: list[tuple[int, ...]] = []
    searches = [0]
    added = [300]
    stop = threading.Event()

    def reader(seed: int) -> None:
        local = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                gone = frozenset(removed)
                found = index.search(pool[local.integers(0, 3000)], k=8)
                bad = tuple(i for i, _ in found if i in gone)
                if bad:
                    violations.append(bad)
                searches[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread below
            errors.append(exc)

    def writer() -> None:
        local = np.random.default_rng(99)
        next_id = 301
        try:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                batch = np.arange(next_id, next_id + 10)
                index.add(batch, pool[batch % 3000])
                next_id += 10
                added[0] = next_id - 1
                live = [i for i in range(1, next_id) if i not in removed]
                again = local.choice(live, size=5, replace=False)
                index.add(again, unit(local.normal(size=(5, DIM))))  # replace
                doomed = local.choice(live, size=4, replace=False)
                index.remove(doomed)
                removed.update(int(i) for i in doomed)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread below
            errors.append(exc)
        finally:
            stop.set()

    readers = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    w = threading.Thread(target=writer)
    for t in [*readers, w]:
        t.start()
    for t in [*readers, w]:
        t.join(30)
    assert not errors, errors
    assert not violations, violations[:5]
    assert searches[0] > 100
    assert len(index) == added[0] - len(removed)
    if kind == "tiered":
        assert isinstance(index, TieredIndex) and index.tier == "hnsw"
