"""Behaviour of SemanticCache: partitions, tiers, categories, TTL, quotas, failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CountingEmbedder, FakeClock, FlakyStore, chat, reply
from prismcache import EmbedderMismatch, HashEmbedder, RequestError, SemanticCache
from prismcache.stores import open_store

# -- partitions: nothing is ever served across them ------------------------------------------

BASE = chat("how do i reset my password", system="You are helpful.")


@pytest.mark.parametrize(
    ("label", "other"),
    [
        ("model", chat("how do i reset my password", system="You are helpful.", model="m2")),
        ("system prompt", chat("how do i reset my password", system="You are terse.")),
        ("conversation", chat("how do i reset my password", system="You are helpful.",
                              history=[("user", "hi"), ("assistant", "hello")])),
        ("tools", chat("how do i reset my password", system="You are helpful.",
                       tools=[{"type": "function", "function": {"name": "f"}}])),
        ("response format", chat("how do i reset my password", system="You are helpful.",
                                 response_format={"type": "json_object"})),
        ("sampling class", chat("how do i reset my password", system="You are helpful.",
                                temperature=0)),
    ],
)
def test_a_different_partition_never_hits(make_cache, label, other) -> None:
    cache = make_cache()
    assert cache.store(BASE, reply("answer"), tenant="acme", category="loose").stored
    assert cache.lookup(BASE, tenant="acme", category="loose").hit
    assert not cache.lookup(other, tenant="acme", category="loose").hit, label


def test_another_tenant_never_hits(make_cache) -> None:
    cache = make_cache()
    cache.store(BASE, reply("answer"), tenant="acme", category="loose")
    result = cache.lookup(BASE, tenant="globex", category="loose")
    assert not result.hit


def test_stream_and_user_fields_do_not_split_partitions(make_cache) -> None:
    cache = make_cache()
    cache.store(BASE, reply("answer"), tenant="acme", category="loose")
    same = {**BASE, "stream": True, "user": "u-17", "metadata": {"trace": "x"}}
    assert cache.lookup(same, tenant="acme", category="loose").hit


# -- the exact tier ---------------------------------------------------------------------------

def test_exact_repeat_hits_without_embedding(make_cache) -> None:
    embedder = CountingEmbedder()
    cache = make_cache(embedder=embedder)
    cache.store(chat("How do I reset my password?"), reply("a"), tenant="t", category="strict")
    calls = embedder.calls
    result = cache.lookup(chat("  how do i RESET my password "), tenant="t", category="strict")
    assert result.hit and result.tier == "exact" and result.similarity == 1.0
    assert embedder.calls == calls


def test_verbatim_store_replaces_the_earlier_entry(make_cache) -> None:
    cache = make_cache()
    first = cache.store(chat("q"), reply("old"), tenant="t", category="strict")
    second = cache.store(chat("q"), reply("new"), tenant="t", category="strict")
    assert first.entry_id != second.entry_id
    assert cache.lookup(chat("q"), tenant="t").response["choices"][0]["message"]["content"] == "new"
    assert cache.stats()["strict"].entries == 1


# -- categories and their thresholds ----------------------------------------------------------

def test_the_same_pair_hits_in_a_loose_category_and_misses_in_a_strict_one(make_cache) -> None:
    cache = make_cache()
    stored, paraphrase = "how can i reset my password", "how do i reset the password please"
    for category in ("strict", "loose"):  # one tenant each: a repeat in one partition replaces
        cache.store(chat(stored), reply(category), tenant=category, category=category)
    loose = cache.lookup(chat(paraphrase), tenant="loose", category="loose")
    strict = cache.lookup(chat(paraphrase), tenant="strict", category="strict")
    assert loose.hit and 0.5 <= loose.similarity < 0.99
    assert not strict.hit and strict.reason == "below-threshold" and strict.detail == ""
    assert strict.similarity == pytest.approx(loose.similarity, abs=1e-5)


def test_categories_are_searched_apart(make_cache) -> None:
    cache = make_cache()
    cache.store(chat("how can i reset my password"), reply("x"), tenant="t", category="loose")
    result = cache.lookup(chat("how do i reset the password"), tenant="t", category="strict")
    assert not result.hit and result.reason == "empty"


def test_rules_route_by_keyword(make_cache) -> None:
    cache = make_cache({"rules": [{"category": "strict", "keywords": ["password"]}]})
    stored = cache.store(chat("reset my password"), reply("x"), tenant="t")
    assert stored.category == "strict"
    explicit = cache.store(chat("reset my password now"), reply("x"), tenant="t",
                           category="loose")
    assert explicit.category == "loose"


def test_metadata_names_the_category(make_cache) -> None:
    cache = make_cache()
    body = chat("reset my password", metadata={"prism_category": "loose"})
    assert cache.store(body, reply("x"), tenant="t").category == "loose"


def test_a_disabled_category_neither_stores_nor_serves(make_cache) -> None:
    cache = make_cache({"categories": {"off": {"enabled": False}, "strict": {}}})
    stored = cache.store(chat("q"), reply("x"), tenant="t", category="off")
    assert not stored.stored and stored.reason == "category disabled"
    miss = cache.lookup(chat("q"), tenant="t", category="off")
    assert miss.reason == "disabled" and not miss.cacheable


def test_guards_turn_near_duplicates_into_misses(make_cache) -> None:
    cache = make_cache({"categories": {"strict": {"threshold": 0.3}}})
    cache.store(chat("cancel my subscription"), reply("cancelled"), tenant="t", category="strict")
    result = cache.lookup(chat("don't cancel my subscription"), tenant="t", category="strict")
    assert not result.hit and result.label == "guard:negation"
    assert cache.stats()["strict"].guard_rejections == {"negation": 1}


def test_long_queries_are_matched_exactly_only(make_cache) -> None:
    cache = make_cache({"limits": {"max_semantic_chars": 20}})
    long = "please explain " + "the whole thing " * 5
    cache.store(chat(long), reply("x"), tenant="t", category="loose")
    assert cache.lookup(chat(long), tenant="t", category="loose").hit
    result = cache.lookup(chat(long + "again"), tenant="t", category="loose")
    assert result.reason == "exact-only"


# -- TTL under a fake clock -------------------------------------------------------------------

def test_entries_expire_at_their_category_ttl(make_cache, clock: FakeClock) -> None:
    cache = make_cache({"categories": {"strict": {"ttl": "10m"}, "loose": {"ttl": "1h"}}})
    cache.store(chat("a question"), reply("s"), tenant="t", category="strict")
    cache.store(chat("b question"), reply("l"), tenant="t", category="loose")
    clock.tick(599)
    assert cache.lookup(chat("a question"), tenant="t").hit
    clock.tick(1)
    assert not cache.lookup(chat("a question"), tenant="t", category="strict").hit
    assert cache.lookup(chat("b question"), tenant="t").hit
    assert cache.stats()["strict"].expirations == 1
    clock.tick(3600)
    assert cache.sweep() == 1
    assert cache.stats()["loose"].entries == 0


def test_hit_reports_entry_age(make_cache, clock: FakeClock) -> None:
    cache = make_cache()
    cache.store(chat("q"), reply("x"), tenant="t", category="strict")
    clock.tick(42)
    assert cache.lookup(chat("q"), tenant="t").age == pytest.approx(42)


# -- quotas and eviction ----------------------------------------------------------------------

def _fill(cache: SemanticCache, clock: FakeClock, n: int, category: str) -> list[int]:
    ids = []
    for i in range(n):
        clock.tick(1)
        ids.append(cache.store(chat(f"question number {i}"), reply(f"a{i}"), tenant="t",
                               category=category).entry_id)
    return ids


def test_max_share_bounds_a_category_and_lru_evicts_least_recent(make_cache, clock) -> None:
    cache = make_cache({"capacity": {"entries": 10},
                        "categories": {"strict": {"quota": 0.3, "max_share": 0.3,
                                                  "eviction": "lru"}}})
    _fill(cache, clock, 3, "strict")
    clock.tick(1)
    assert cache.lookup(chat("question number 0"), tenant="t").hit  # 0 is now most recent
    _fill_more = cache.store(chat("question number 3"), reply("a3"), tenant="t", category="strict")
    assert _fill_more.stored
    stats = cache.stats()["strict"]
    assert stats.entries == 3 and stats.evictions == 1
    assert cache.lookup(chat("question number 0"), tenant="t").hit
    assert not cache.lookup(chat("question number 1"), tenant="t", category="strict").hit


def test_lfu_keeps_the_most_hit_entry(make_cache, clock) -> None:
    cache = make_cache({"capacity": {"entries": 10},
                        "categories": {"strict": {"quota": 0.2, "max_share": 0.2,
                                                  "eviction": "lfu"}}})
    _fill(cache, clock, 2, "strict")
    for _ in range(3):
        clock.tick(1)
        cache.lookup(chat("question number 0"), tenant="t")  # stored first, hit most
    clock.tick(1)
    cache.store(chat("question number 2"), reply("a2"), tenant="t", category="strict")
    # 1 (one access) and the newcomer (one access) tie; the older, 1, goes.
    assert cache.lookup(chat("question number 0"), tenant="t").hit
    assert cache.lookup(chat("question number 2"), tenant="t").hit
    assert not cache.lookup(chat("question number 1"), tenant="t", category="strict").hit


def test_gdsf_keeps_an_expensive_often_hit_entry_over_a_cheap_one(make_cache, clock) -> None:
    cache = make_cache({"capacity": {"entries": 10},
                        "categories": {"strict": {"quota": 0.2, "max_share": 0.2,
                                                  "eviction": "gdsf"}}})
    cache.store(chat("expensive"), reply("e"), tenant="t", category="strict", cost=0.50)
    clock.tick(1)
    cache.store(chat("cheap"), reply("c"), tenant="t", category="strict", cost=0.0001)
    clock.tick(1)
    cache.lookup(chat("expensive"), tenant="t")
    cache.lookup(chat("cheap"), tenant="t")  # recency would favour the cheap one
    clock.tick(1)
    cache.store(chat("newcomer"), reply("n"), tenant="t", category="strict", cost=0.01)
    assert cache.lookup(chat("expensive"), tenant="t").hit
    assert not cache.lookup(chat("cheap"), tenant="t", category="strict").hit


def test_a_zero_max_share_keeps_nothing(make_cache) -> None:
    cache = make_cache({"categories": {"strict": {"quota": 0.0, "max_share": 0.0}}})
    cache.store(chat("q"), reply("x"), tenant="t", category="strict")
    assert cache.stats()["strict"].entries == 0
    assert not cache.lookup(chat("q"), tenant="t", category="strict").hit


def test_a_category_borrows_free_capacity_and_gives_it_back(make_cache, clock) -> None:
    cache = make_cache({"capacity": {"entries": 10},
                        "categories": {"strict": {"quota": 0.3}, "loose": {"quota": 0.7}}})
    _fill(cache, clock, 9, "strict")  # far above its 3 guaranteed: loose is empty
    assert cache.stats()["strict"].entries == 9
    loose = []
    for i in range(8):
        clock.tick(1)
        loose.append(cache.store(chat(f"other thing {i}"), reply(f"o{i}"), tenant="t",
                                 category="loose").entry_id)
    stats = cache.stats()
    # full at the 2nd loose entry: each loose admission takes strict's oldest entry
    assert (stats["strict"].entries, stats["loose"].entries) == (3, 7)
    assert stats["strict"].evictions == 6
    assert stats["loose"].evictions == 1  # above its own share, loose evicts its own oldest
    assert cache.lookup(chat("question number 8"), tenant="t", category="strict").hit
    assert not cache.lookup(chat("question number 0"), tenant="t", category="strict").hit
    assert cache.lookup(chat("other thing 7"), tenant="t", category="loose").entry_id == loose[7]
    assert not cache.lookup(chat("other thing 0"), tenant="t", category="loose").hit
    # Both at their share: a strict admission evicts strict's own (loose is not a borrower).
    clock.tick(1)
    cache.store(chat("question number 0"), reply("again"), tenant="t", category="strict")
    stats = cache.stats()
    assert (stats["strict"].entries, stats["loose"].entries) == (3, 7)
    assert not cache.lookup(chat("question number 6"), tenant="t", category="strict").hit


# -- what is never stored ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (reply("cut", finish_reason="length"), "truncated"),
        ({"error": {"message": "boom"}}, "error"),
        ({"choices": [{"message": {"role": "assistant", "content": None,
                                   "tool_calls": [{"id": "1"}]}, "finish_reason": "tool_calls"}]},
         "tool"),
        ({"choices": [reply("a")["choices"][0], reply("b")["choices"][0]]}, "one choice"),
    ],
)
def test_incomplete_or_unsafe_responses_are_not_stored(make_cache, response, reason) -> None:
    cache = make_cache()
    stored = cache.store(chat("q"), response, tenant="t", category="strict")
    assert not stored.stored and reason in stored.reason
    assert cache.stats()["strict"].entries == 0


@pytest.mark.parametrize(
    ("body", "why"),
    [(chat("q", n=2), "n=2"), (chat("q", temperature=1.5), "temperature"),
     ({"model": "m", "messages": [{"role": "user", "content": "q"},
                                  {"role": "assistant", "content": "a"}]}, "assistant")],
)
def test_uncacheable_requests_bypass(make_cache, body, why) -> None:
    cache = make_cache()
    result = cache.lookup(body, tenant="t")
    assert not result.hit and not result.cacheable and why in result.label
    assert not cache.store(body, reply("x"), tenant="t").stored


# -- bad input: clear errors, nothing changed ------------------------------------------------

@pytest.mark.parametrize(
    ("body", "message"),
    [
        (chat(""), "empty"),
        (chat("   \n"), "blank"),
        (chat("x" * 1_000_000), "1,000,000 bytes"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "caf\xe9"}]}', "UTF-8"),
        (chat("caf\udce9"), "not valid Unicode"),
        (b"{not json", "not valid JSON"),
        ({"messages": [{"role": "user", "content": "q"}]}, "model"),
        ({"model": "m"}, "neither"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_input_raises_a_clear_request_error(make_cache, body, message) -> None:
    cache = make_cache()
    with pytest.raises(RequestError, match=message):
        cache.lookup(body, tenant="t")
    with pytest.raises(RequestError, match=message):
        cache.store(body, reply("x"), tenant="t")
    assert all(s.entries == 0 for s in cache.stats().values())


def test_an_empty_tenant_is_refused(make_cache) -> None:
    with pytest.raises(RequestError, match="tenant"):
        make_cache().lookup(chat("q"), tenant="")


# -- failing open -----------------------------------------------------------------------------

def test_a_broken_store_turns_lookups_into_counted_misses(make_cache, caplog) -> None:
    store = FlakyStore()
    cache = make_cache(store=store)
    cache.store(chat("q"), reply("x"), tenant="t", category="strict")
    store.down = True
    result = cache.lookup(chat("q"), tenant="t", category="strict")
    assert not result.hit and result.label == "error:StoreUnavailable"
    stored = cache.store(chat("q2"), reply("y"), tenant="t", category="strict")
    assert not stored.stored and stored.reason == "error:StoreUnavailable"
    assert "failed open" in caplog.text
    store.down = False
    assert cache.lookup(chat("q"), tenant="t").hit
    assert cache.stats()["strict"].errors == 2


def test_a_broken_embedder_turns_lookups_into_misses(make_cache) -> None:
    embedder = CountingEmbedder()
    cache = make_cache(embedder=embedder)
    embedder.fail = True
    result = cache.lookup(chat("q"), tenant="t", category="loose")
    assert result.label == "error:EmbeddingError"
    embedder.fail, embedder.wrong_dim = False, True
    result = cache.lookup(chat("q"), tenant="t", category="loose")
    assert result.label == "error:EmbeddingError"


# -- persistence: the store is the source of truth ------------------------------------------

def test_a_reopened_sqlite_cache_rebuilds_its_index(tmp_path: Path, clock) -> None:
    config = {"store": f"sqlite:///{tmp_path}/c.db", "embedder": "hash:64",
              "classifier": {"examples": None}, "rules": [],
              "defaults": {"verifier": "none"}, "categories": {"loose": {"threshold": 0.5}}}
    with SemanticCache.open(config, clock=clock) as cache:
        cache.store(chat("how can i reset my password"), reply("x"), tenant="t", category="loose")
    with SemanticCache.open(config, clock=clock) as cache:
        result = cache.lookup(chat("how do i reset the password"), tenant="t", category="loose")
        assert result.hit and result.tier == "semantic"


def test_a_snapshot_restores_and_catches_up_with_the_store(tmp_path: Path, clock) -> None:
    config = {"store": f"sqlite:///{tmp_path}/c.db", "embedder": "hash:64",
              "classifier": {"examples": None}, "rules": [],
              "snapshot": str(tmp_path / "snap"), "defaults": {"verifier": "none"},
              "categories": {"loose": {"threshold": 0.5}}}
    with SemanticCache.open(config, clock=clock) as cache:
        cache.store(chat("how can i reset my password"), reply("x"), tenant="t", category="loose")
    assert (tmp_path / "snap" / "manifest.json").exists()
    clock.tick(5)
    # Another process adds an entry after the snapshot was taken.
    other = SemanticCache.open({**config, "snapshot": None}, clock=clock)
    other.store(chat("what is the opening time of the bank"), reply("9am"), tenant="t",
                category="loose")
    other.close()
    with SemanticCache.open(config, clock=clock) as cache:
        assert cache.lookup(chat("how do i reset the password"), tenant="t", category="loose").hit
        assert cache.lookup(chat("what is the opening time of the bank please"), tenant="t",
                            category="loose").hit


def test_entries_of_another_embedder_are_refused_clearly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    config = {"store": url, "classifier": {"examples": None}, "rules": [],
              "defaults": {"verifier": "none"}, "categories": {"loose": {"threshold": 0.5}}}
    with SemanticCache.open(config, embedder=HashEmbedder(dim=64)) as cache:
        cache.store(chat("q"), reply("x"), tenant="t", category="loose")
    with pytest.raises(EmbedderMismatch, match="hash-v1:64"):
        SemanticCache.open(config, embedder=HashEmbedder(dim=32))
    # The store was closed on the way out: it can be opened again.
    open_store(url).close()


# -- invalidation and stats ---------------------------------------------------------------------

def test_invalidate_by_tenant_category_model_and_entry(make_cache) -> None:
    cache = make_cache()
    a = cache.store(chat("q1"), reply("x"), tenant="a", category="strict")
    cache.store(chat("q2"), reply("x"), tenant="b", category="strict")
    cache.store(chat("q3", model="m2"), reply("x"), tenant="b", category="loose")
    assert cache.invalidate(entry_id=a.entry_id) == 1
    assert not cache.lookup(chat("q1"), tenant="a", category="strict").hit
    assert cache.invalidate(model="m2") == 1
    assert cache.invalidate(tenant="b", category="strict") == 1
    assert sum(s.entries for s in cache.stats().values()) == 0


def test_stats_count_per_category(make_cache) -> None:
    cache = make_cache()
    cache.store(chat("q"), reply("x"), tenant="t", category="strict")
    cache.lookup(chat("q"), tenant="t")
    cache.lookup(chat("something else entirely"), tenant="t", category="strict")
    s = cache.stats()["strict"]
    assert (s.lookups, s.hits, s.exact_hits, s.misses, s.stores, s.entries) == (2, 1, 1, 1, 1, 1)
    assert s.bytes > 0 and s.hit_rate == 0.5
