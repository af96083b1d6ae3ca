"""The miss-path pre-filter: hits still hit, far misses skip the model, partitions stay apart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from prismcache.cache import SemanticCache
from prismcache.embedders.minilm import MiniLMEmbedder, bundled_tokenizer
from prismcache.embedders.static import StaticEmbedder
from prismcache.entry import EntryRef
from prismcache.errors import ConfigError, EmbeddingError
from prismcache.prefilter import Prefilter
from prismcache.results import MissReason
from prismcache.stores.memory import MemoryStore

REPLY = {"choices": [{"message": {"role": "assistant", "content": "ok"},
                      "finish_reason": "stop"}]}


class Counting:
    """The bundled model, counting its calls (the same name, so the cache accepts it)."""

    def __init__(self, inner: MiniLMEmbedder) -> None:
        self.inner, self.calls = inner, 0
        self.name, self.dim = inner.name, inner.dim

    @property
    def id(self) -> str:
        return self.inner.id

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def _body(text: str) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def _cache(embedder: Counting, enabled: bool = True) -> SemanticCache:
    return SemanticCache.open({"store": "memory://", "classifier": {"examples": None},
                               "rules": [], "prefilter": {"enabled": enabled}},
                              store=MemoryStore(), embedder=embedder)


def test_a_request_that_would_hit_still_hits(minilm: MiniLMEmbedder) -> None:
    texts = ["how do I reset my password", "what is the weather in Oslo today"]
    paraphrase = "how can I reset my password"
    results = {}
    for enabled in (False, True):
        with _cache(Counting(minilm), enabled) as cache:
            for text in texts:
                cache.store(_body(text), REPLY, tenant="acme")
            results[enabled] = cache.lookup(_body(paraphrase), tenant="acme")
    assert results[False].hit and results[True].hit
    assert results[True].entry_id is not None


@pytest.fixture
def one_entry(minilm: MiniLMEmbedder) -> Iterator[tuple[SemanticCache, Counting]]:
    """A pre-filtering cache holding one entry of tenant ``acme``, and its counted model."""
    embedder = Counting(minilm)
    with _cache(embedder) as cache:
        cache.store(_body("how do I reset my password"), REPLY, tenant="acme")
        yield cache, embedder


def test_a_far_miss_skips_the_model(one_entry: tuple[SemanticCache, Counting]) -> None:
    cache, embedder = one_entry
    before = embedder.calls
    miss = cache.lookup(_body("recommend a novel about sailing ships"), tenant="acme")
    assert not miss.hit and miss.reason is MissReason.FAR
    assert embedder.calls == before  # no model call on the lookup
    assert cache.store(_body("recommend a novel about sailing ships"), REPLY,
                       tenant="acme").stored
    assert embedder.calls == before + 1  # the store embeds, once
    assert cache.lookup(_body("recommend a novel about sailing ships"),
                        tenant="acme").hit


def test_the_model_runs_when_something_is_near(one_entry: tuple[SemanticCache, Counting]
                                                ) -> None:
    cache, embedder = one_entry
    before = embedder.calls
    result = cache.lookup(_body("how do I reset my email password"), tenant="acme")
    assert embedder.calls == before + 1
    assert result.hit or result.reason is not MissReason.FAR


def test_tenants_stay_apart(one_entry: tuple[SemanticCache, Counting]) -> None:
    cache, _ = one_entry
    other = cache.lookup(_body("how can I reset my password"), tenant="globex")
    assert not other.hit and other.reason is MissReason.FAR  # globex holds nothing
    assert cache.lookup(_body("how can I reset my password"), tenant="acme").hit


def test_partitions_without_texts_are_never_far(minilm: MiniLMEmbedder) -> None:
    static = StaticEmbedder.bundled(bundled_tokenizer())
    prefilter = Prefilter(static, bound=0.75)
    assert prefilter.far("p", "anything")  # an empty partition misses anyway
    prefilter.add("p", [1, 2], ["how do I reset my password", ""])  # a change-feed entry
    assert not prefilter.far("p", "recommend a novel about sailing ships")
    prefilter.forget("p")
    prefilter.add("p", [1], ["how do I reset my password"])
    assert prefilter.far("p", "recommend a novel about sailing ships")
    assert not prefilter.far("p", "how do I reset my password")
    prefilter.remove("p", 1)
    assert prefilter.far("p", "how do I reset my password")


def test_dropped_entries_leave_the_static_index(minilm: MiniLMEmbedder) -> None:
    embedder = Counting(minilm)
    with _cache(embedder) as cache:
        stored = cache.store(_body("how do I reset my password"), REPLY, tenant="acme")
        assert stored.entry_id is not None
        key = cache.prepare(_body("how do I reset my password"), tenant="acme").key
        cache._tiers.drop([EntryRef(id=stored.entry_id, partition=key.partition,
                                    category=stored.category or "", exact_key=key.exact_key)])
        assert cache._tiers.prefilter is not None
        assert cache._tiers.prefilter.far(key.partition, "how do I reset my password")


def test_the_prefilter_needs_the_bundled_embedder() -> None:
    with pytest.raises(ConfigError, match="bundled embedder"):
        SemanticCache.open({"store": "memory://", "embedder": "hash:16",
                            "classifier": {"examples": None}, "prefilter": {"enabled": True}})
    with pytest.raises(ConfigError, match="prefilter.bound"):
        SemanticCache.open({"store": "memory://", "prefilter": {"bound": 2}})


def test_a_table_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "static.npy"
    np.save(bad, np.zeros((3, 2), dtype=np.float16))
    with pytest.raises(EmbeddingError, match="sha256"):
        StaticEmbedder.bundled(bundled_tokenizer(), bad)


def test_a_rebuilt_and_a_budgeted_cache_prefilter_the_same(minilm: MiniLMEmbedder,
                                                           tmp_path: Path) -> None:
    """Entries read back from the store (a rebuild, or a partition loaded on first use
    within a memory budget) carry their query texts: their partitions are complete."""
    config = {"store": f"sqlite:///{tmp_path / 'cache.db'}", "classifier": {"examples": None}, "rules": [],
              "prefilter": {"enabled": True}}
    with SemanticCache.open(config, embedder=Counting(minilm)) as cache:
        cache.store(_body("how do I reset my password"), REPLY, tenant="acme")
    for extra in ({}, {"index": {"max_bytes": "64MiB"}}):
        embedder = Counting(minilm)
        cache = SemanticCache.open({**config, **extra}, embedder=embedder)
        cache.lookup(_body("start loading"), tenant="acme")
        deadline = time.monotonic() + 10
        while not cache.lookup(_body("how can I reset my password"), tenant="acme").hit:
            assert time.monotonic() < deadline  # a budgeted partition loads in the background
            time.sleep(0.05)
        before = embedder.calls
        miss = cache.lookup(_body("recommend a novel about sailing ships"), tenant="acme")
        assert miss.reason is MissReason.FAR and embedder.calls == before
        cache.close()


def _loaded(cache: SemanticCache, text: str, tenant: str) -> None:
    """Wait until ``text`` hits in ``tenant`` (its partition loads in the background)."""
    deadline = time.monotonic() + 10
    while not cache.lookup(_body(text), tenant=tenant).hit:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_memory_budget_counts_the_static_index(minilm: MiniLMEmbedder,
                                                   tmp_path: Path) -> None:
    """``index.max_bytes`` holds the pre-filter's static index too: a partition weighs more
    with it, by its static index's bytes, and a budget that holds two partitions without it
    holds one with it (the least recently used is dropped)."""
    config = {"store": f"sqlite:///{tmp_path / 'cache.db'}", "classifier": {"examples": None},
              "rules": []}
    with SemanticCache.open(config, embedder=Counting(minilm)) as cache:
        for tenant in ("acme", "globex"):
            cache.store(_body("how do I reset my password"), REPLY, tenant=tenant)
    sizes = {}
    for enabled in (False, True):
        with SemanticCache.open({**config, "prefilter": {"enabled": enabled},
                                 "index": {"max_bytes": "64MiB"}}, embedder=minilm) as cache:
            _loaded(cache, "how do I reset my password", "acme")
            budget = cache.index_budget
            assert budget is not None and budget.partitions == 1
            sizes[enabled] = budget.bytes
            if enabled:
                partition = cache.prepare(_body("x"), tenant="acme").key.partition
                static = cache._tiers.prefilter.index(partition)  # type: ignore[union-attr]
                assert static is not None and static.nbytes > 0
                assert sizes[True] == sizes[False] + static.nbytes
    room = 2 * sizes[False] + sizes[False] // 2  # two partitions without, one and a half with
    assert room < 2 * sizes[True]
    for enabled, held in ((False, 2), (True, 1)):
        with SemanticCache.open({**config, "prefilter": {"enabled": enabled},
                                 "index": {"max_bytes": room}}, embedder=minilm) as cache:
            for tenant in ("acme", "globex"):
                _loaded(cache, "how do I reset my password", tenant)
            budget = cache.index_budget
            assert budget is not None and budget.partitions == held
            assert budget.evictions == 2 - held and budget.bytes <= room


def test_a_far_miss_keeps_a_category_known_without_the_model(minilm: MiniLMEmbedder) -> None:
    """A rule (keywords), the request's own category or the default (no classifier) names a
    far miss's category: it is counted once as a lookup and a miss of it. Only when the
    embedding classifier would decide is the category unknown (``None``)."""
    rules = [{"category": "strict", "keywords": ["novel"]}]
    far = "recommend a novel about sailing ships"
    for classifier, expected in (({"examples": None}, "strict"), ({}, "strict")):
        embedder = Counting(minilm)
        with SemanticCache.open({"store": "memory://", "classifier": classifier,
                                 "rules": rules, "prefilter": {"enabled": True},
                                 "categories": {"strict": {}}},
                                store=MemoryStore(), embedder=embedder) as cache:
            cache.store(_body("how do I reset my password"), REPLY, tenant="acme",
                        category="general")
            before = embedder.calls
            miss = cache.lookup(_body(far), tenant="acme")
            assert miss.reason is MissReason.FAR and miss.category == expected
            assert embedder.calls == before
            stats = cache.stats()["strict"]
            assert (stats.lookups, stats.misses) == (1, 1)
            explicit = cache.lookup(_body("what is the tallest mountain in Peru"),
                                    tenant="acme", category="general")
            assert explicit.reason is MissReason.FAR and explicit.category == "general"
            unruled = cache.lookup(_body("what is the tallest mountain in Peru"), tenant="acme")
            assert unruled.reason is MissReason.FAR
            assert unruled.category == (None if classifier == {} else "general")


def test_on_by_default_with_the_bundled_embedder_only(minilm: MiniLMEmbedder) -> None:
    """``enabled: auto`` (the default) pre-filters with the bundled model and is off with any
    other embedder (which opens as before); ``true`` with another is refused."""
    embedder = Counting(minilm)
    with SemanticCache.open({"store": "memory://"}, store=MemoryStore(),
                            embedder=embedder) as cache:
        cache.store(_body("how do I reset my password"), REPLY, tenant="acme",
                    category="general")
        before = embedder.calls
        miss = cache.lookup(_body("recommend a novel about sailing ships"), tenant="acme")
        assert miss.reason is MissReason.FAR and embedder.calls == before
    with SemanticCache.open({"store": "memory://", "embedder": "hash:16"},
                            store=MemoryStore()) as cache:
        cache.store(_body("how do I reset my password"), REPLY, tenant="acme",
                    category="general")
        other = cache.lookup(_body("recommend a novel about sailing ships"), tenant="acme")
        assert not other.hit and other.reason is not MissReason.FAR
    with pytest.raises(ConfigError, match="true, false or auto"):
        SemanticCache.open({"store": "memory://", "prefilter": {"enabled": "yes"}})


def test_a_replay_with_precomputed_vectors_prefilters(minilm: MiniLMEmbedder) -> None:
    """``replay`` serves the bundled model's vectors from a table: the default config
    pre-filters there as live (far misses counted as such), and serves the same hits as with
    the pre-filter off."""
    from prismcache.config import load_config
    from prismcache.evaluation.records import TraceLine
    from prismcache.evaluation.replay import replay
    from prismcache.evaluation.vectors import EmbeddingTable

    trace = [TraceLine(query=q, answer_key=k) for q, k in (
        ("how do I reset my password", "reset"), ("how can I reset my password", "reset"),
        ("recommend a novel about sailing ships", "novel"),
        ("how do I reset my password", "reset"))]
    table = EmbeddingTable(minilm)
    reports = {enabled: replay(trace, load_config({"classifier": {"examples": None},
                                                  "prefilter": {"enabled": enabled}}), table)
               for enabled in ("auto", False)}
    on, off = reports["auto"]["overall"], reports[False]["overall"]
    assert on["hits"] == off["hits"] >= 2
    assert on["miss_reasons"].get("far", 0) >= 1 and "far" not in off["miss_reasons"]


def test_a_stale_verbatim_entry_is_never_lost_to_a_far_miss(minilm: MiniLMEmbedder,
                                                            tmp_path: Path) -> None:
    """Past its TTL but within ``stale_if_error``, an entry of a category the classifier
    decides that keeps no vector (``exact_only``) is named by the miss (served if the
    upstream fails): the pre-filter, whose static index holds only vector entries, does not
    call that lookup far (a reopened cache: nothing in the memo)."""
    from prismcache.config import load_config

    now = [1000.0]
    text = "recommend a novel about sailing ships"
    brief = {"exact_only": True, "ttl": "1s", "stale_if_error": "1h"}
    config = {"store": f"sqlite:///{tmp_path / 'cache.db'}", "rules": [],
              "categories": {name: brief for name in load_config(None).categories}}
    with SemanticCache.open(config, embedder=minilm, clock=lambda: now[0]) as cache:
        assert cache.store(_body(text), REPLY, tenant="acme").stored
    now[0] += 5
    with SemanticCache.open(config, embedder=minilm, clock=lambda: now[0]) as cache:
        miss = cache.lookup(_body(text), tenant="acme")
        assert not miss.hit and miss.reason is not MissReason.FAR
        assert miss.stale_entry is not None


class Gated:
    """The bundled static embedder, each call waiting until ``gate`` is set."""

    def __init__(self, inner: StaticEmbedder) -> None:
        self.inner, self.dim, self.gate = inner, inner.dim, threading.Event()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        assert self.gate.wait(10)
        return self.inner.embed(texts)


def test_background_adds_are_never_far_until_indexed() -> None:
    static = Gated(StaticEmbedder.bundled(bundled_tokenizer()))
    prefilter = Prefilter(static, bound=0.75)  # type: ignore[arg-type]
    prefilter.add("p", [1, 2], ["how do I reset my password", "what time is it"],
                  background=True)
    prefilter.add("q", [3, 4], ["how do I reset my password", "what time is it"],
                  background=True)
    prefilter.forget("q")  # dropped while queued: its batch is discarded
    assert not prefilter.far("p", "recommend a novel about sailing ships")  # not known yet
    assert not prefilter.wait(0.05)
    static.gate.set()
    assert prefilter.wait(10)
    assert prefilter.far("p", "recommend a novel about sailing ships")
    assert not prefilter.far("p", "how can I reset my password")
    assert prefilter.index("q") is None and prefilter.far("q", "how do I reset my password")


def test_a_cache_opening_over_its_store_indexes_static_vectors_in_the_background(
        minilm: MiniLMEmbedder, tmp_path: Path) -> None:
    """The rebuild from the store queues the static vectors; once they are indexed the
    partition pre-filters as if its entries had been stored through this cache."""
    config = {"store": f"sqlite:///{tmp_path / 'cache.db'}", "classifier": {"examples": None},
              "rules": []}
    texts = ["how do I reset my password", "what is the capital of France",
             "how many legs does a spider have", "who wrote Hamlet"]
    with SemanticCache.open(config, embedder=minilm) as cache:
        for text in texts:
            cache.store(_body(text), REPLY, tenant="acme")
    embedder = Counting(minilm)
    with SemanticCache.open(config, embedder=embedder) as cache:
        prefilter = cache._tiers.prefilter
        assert prefilter is not None and prefilter.wait(10)
        before = embedder.calls
        miss = cache.lookup(_body("recommend a novel about sailing ships"), tenant="acme")
        assert miss.reason is MissReason.FAR and embedder.calls == before
        assert cache.lookup(_body("how can I reset my password"), tenant="acme").hit
