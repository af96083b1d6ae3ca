"""Conversations: what must match exactly (partition), what by meaning (the context), through
keying, the decision, the cache over memory, SQLite and Redis, and the isolation property."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import reply
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_support import RedisServer, redis_server, redis_url  # noqa: F401 - fixtures

from prismcache import SemanticCache
from prismcache.config import CategoryPolicy
from prismcache.decision import Candidate, MissReason, Outcome, Query, context_check, decide
from prismcache.errors import ConfigError
from prismcache.request import Context, RequestLimits, context_of, key_request
from prismcache.results import Miss
from prismcache.server.coalesce import similar_for

FOLLOW_UP = "how long does that take?"
SEMANTIC = {"categories": {"loose": {"threshold": 0.5, "ttl": "1h", "quota": 0.5,
                                     "context": "semantic", "context_threshold": 0.6}},
            "default_category": "loose"}


def talk(first: str, follow_up: str = FOLLOW_UP, *, system: str | None = None,
         before: tuple[str, ...] = (), model: str = "m1", **extra: Any) -> dict[str, Any]:
    """A conversation: optional system prompt, earlier user turns (each answered), the first
    turn, a reply, then the follow-up."""
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    for turn in (*before, first):
        messages += [{"role": "user", "content": turn},
                     {"role": "assistant", "content": "Sure, I can help with that."}]
    messages.append({"role": "user", "content": follow_up})
    return {"model": model, "messages": messages, **extra}


# -- keying ---------------------------------------------------------------------------------


def test_earlier_turns_leave_the_partition_but_not_the_exact_key() -> None:
    a = key_request(talk("I want to cancel my Visa card"), tenant="t")
    b = key_request(talk("Please cancel my Mastercard"), tenant="t")
    single = key_request({"model": "m1", "messages": [{"role": "user", "content": FOLLOW_UP}]},
                         tenant="t")
    assert a.partition == b.partition == single.partition
    assert len({a.exact_key, b.exact_key, single.exact_key}) == 3
    assert single.context is None
    assert a.context is not None and a.context.turns == ("I want to cancel my Visa card",)
    assert a.context.text == "I want to cancel my Visa card."
    assert a.context.semantic


def test_system_prompt_tools_and_sampling_stay_in_the_partition() -> None:
    base = key_request(talk("cancel my card"), tenant="t").partition
    for changed in (talk("cancel my card", system="be terse"),
                    talk("cancel my card", tools=[{"type": "function",
                                                   "function": {"name": "f"}}]),
                    talk("cancel my card", temperature=0),
                    talk("cancel my card", model="m2")):
        assert key_request(changed, tenant="t").partition != base
    assert key_request(talk("cancel my card"), tenant="u").partition != base


def test_a_single_turn_key_is_what_it_always_was() -> None:
    # Pinned: entries stored before contexts existed keep their partition and exact key.
    key = key_request({"model": "m", "messages": [{"role": "system", "content": "S"},
                                                   {"role": "user", "content": "Hi"}]},
                      tenant="t")
    assert (key.partition, key.exact_key) == ("15bdbdd8362366cf9e3e0e813f936d44",
                                              "4b393fc664a9a52d7443e8653d28d227")


def test_contexts_that_cannot_be_compared_by_meaning() -> None:
    tool = talk("cancel my card")
    tool["messages"][1:1] = [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "balance: 50"}]
    long = talk("x " * 600)
    image = talk("cancel my card")
    image["messages"][0]["content"] = [{"type": "image_url", "image_url": {"url": "u"}}]
    for body in (tool, long, image):
        context = key_request(body, tenant="t").context
        assert context is not None and not context.semantic
    limits = RequestLimits(max_semantic_chars=2000)
    assert key_request(long, tenant="t", limits=limits).context.semantic  # type: ignore[union-attr]


def test_context_of_a_stored_body_is_the_keyed_one() -> None:
    body = talk("cancel my card", system="be terse", before=("hello",))
    assert context_of(body) == key_request(body, tenant="t").context
    assert context_of({"model": "m", "prompt": "hi"}) is None
    assert context_of({"model": "m", "messages": [{"role": "user", "content": "hi"}]}) is None


def test_recent_and_substantive_turns_weigh_most() -> None:
    context = Context(key="k", turns=("tell me about fees", "ok thanks",
                                      "I want to cancel my card"), text="", semantic=True)
    assert context.weights() == [4 * 0.25, 2 * 0.5, 6 * 1.0]


def test_the_context_policy_is_validated() -> None:
    with pytest.raises(ConfigError, match="context must be one of"):
        CategoryPolicy(context="fuzzy")
    with pytest.raises(ConfigError, match="context_threshold"):
        CategoryPolicy(context_threshold=0)


# -- the decision ---------------------------------------------------------------------------


def _ctx(*turns: str, key: str | None = None, semantic: bool = True) -> Context:
    return Context(key=key or "|".join(turns), turns=turns, text="\n".join(turns),
                   semantic=semantic)


UNIT = np.array([1.0, 0.0], dtype=np.float32)
NEAR = np.array([0.8, 0.6], dtype=np.float32)


@pytest.mark.parametrize(("policy", "q", "c", "qv", "cv", "rejected"), [
    (CategoryPolicy(), None, None, None, None, None),
    (CategoryPolicy(context="semantic"), _ctx("a"), None, UNIT, None, "only one"),
    (CategoryPolicy(context="semantic"), None, _ctx("a"), None, UNIT, "only one"),
    (CategoryPolicy(), _ctx("cancel my card"), _ctx("cancel my card please"), UNIT, UNIT,
     "different turns"),
    (CategoryPolicy(context="semantic"), _ctx("a", key="k"), _ctx("b", key="k"), None, None,
     None),
    (CategoryPolicy(context="semantic"), _ctx("cancel my card"), _ctx("cancel my card now"),
     UNIT, UNIT, None),
    (CategoryPolicy(context="semantic", context_threshold=0.9), _ctx("cancel my card"),
     _ctx("close my card"), UNIT, NEAR, "similarity 0.800 < 0.9"),
    (CategoryPolicy(context="semantic"), _ctx("cancel my Visa card"),
     _ctx("cancel my Mastercard card"), UNIT, UNIT, "guard entities"),
    (CategoryPolicy(context="semantic"), _ctx("send 50 euros"), _ctx("send 70 euros"),
     UNIT, UNIT, "guard numbers"),
    (CategoryPolicy(context="semantic"), _ctx("a", semantic=False), _ctx("b"), UNIT, UNIT,
     "different turns"),
])
def test_context_check(policy: CategoryPolicy, q: Context | None, c: Context | None,
                       qv: np.ndarray | None, cv: np.ndarray | None, rejected: str | None
                       ) -> None:
    found = context_check(Query(text="x", context=q, context_vector=qv),
                          Candidate(entry_id=1, text="x", similarity=1.0, context=c,
                                    context_vector=cv), policy)
    assert found == rejected or (rejected is not None and found is not None
                                 and found.startswith(rejected))


def test_a_context_rejection_is_a_miss_of_its_own() -> None:
    policy = CategoryPolicy(context="semantic", verifier="none")
    verdict = decide(Query(text=FOLLOW_UP, context=_ctx("cancel my Visa card"),
                           context_vector=UNIT),
                     [Candidate(entry_id=1, text=FOLLOW_UP, similarity=1.0,
                                context=_ctx("cancel my Mastercard card"),
                                context_vector=UNIT)], policy)
    assert verdict.reason is MissReason.CONTEXT and verdict.outcomes[0][0] is Outcome.CONTEXT


# -- the cache ------------------------------------------------------------------------------


def _store_urls(tmp_path: Path, redis: str) -> list[str]:
    return ["memory://", f"sqlite:///{tmp_path}/c.db", redis]


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
def test_follow_ups_hit_only_across_contexts_that_mean_the_same(
        make_cache, tmp_path: Path, redis_url: str, backend: str) -> None:  # noqa: F811
    url = dict(zip(("memory", "sqlite", "redis"), _store_urls(tmp_path, redis_url)))[backend]
    cache = make_cache({**SEMANTIC, "store": url})
    assert cache.store(talk("I want to cancel my Visa card"), reply("3 days")).stored
    hit = cache.lookup(talk("i want to cancel my visa card please"))
    assert hit.hit and hit.tier == "semantic"
    assert cache.lookup(talk("I want to cancel my Visa card")).tier == "exact"
    assert cache.lookup(talk("I want to cancel my Visa card",
                             before=("hi there",))).hit  # irrelevant, short history
    for other in ("I want to cancel my Mastercard", "I want to cancel my 2 Visa cards",
                  "I do not want to cancel my Visa card"):
        missed = cache.lookup(talk(other))
        assert not missed.hit and missed.reason is MissReason.CONTEXT, other
    single = cache.lookup({"model": "m1", "messages": [{"role": "user", "content": FOLLOW_UP}]})
    assert not single.hit


def test_a_reopened_sqlite_cache_compares_contexts_from_the_stored_request(
        tmp_path: Path, clock) -> None:
    from conftest import TEST_CONFIG
    config = {**TEST_CONFIG, **SEMANTIC, "store": f"sqlite:///{tmp_path}/c.db"}
    with SemanticCache.open(config, clock=clock) as cache:
        cache.store(talk("I want to cancel my Visa card"), reply("3 days"))
    with SemanticCache.open(config, clock=clock) as cache:
        assert cache.lookup(talk("i want to cancel my visa card please")).hit
        assert not cache.lookup(talk("I want to cancel my Mastercard")).hit


def test_the_context_embedding_is_stored_and_not_recomputed(tmp_path: Path, clock) -> None:
    from conftest import TEST_CONFIG, CountingEmbedder
    config = {**TEST_CONFIG, **SEMANTIC, "store": f"sqlite:///{tmp_path}/c.db"}
    with SemanticCache.open(config, clock=clock) as cache:
        stored = cache.store(talk("I want to cancel my Visa card"), reply("3 days"))
        entry = cache.document_store.get(stored.entry_id)  # type: ignore[arg-type]
        assert entry is not None and entry.context_vector is not None
        assert abs(float(np.linalg.norm(entry.context_vector)) - 1) < 1e-5
    embedder = CountingEmbedder()
    with SemanticCache.open(config, clock=clock, embedder=embedder) as cache:
        assert cache.lookup(talk("i want to cancel my visa card please")).hit
        assert embedder.calls == 2  # the follow-up and the request's one context turn


def test_rows_of_schema_1_are_read_and_compared(tmp_path: Path, clock) -> None:
    """A SQLite file written before contexts had a column: migrated, its rows still serve."""
    import sqlite3

    from conftest import TEST_CONFIG

    from prismcache.stores import sqlite as sqlite_store
    from prismcache.stores.codec import FIELDS, encode

    with SemanticCache.open({**TEST_CONFIG, **SEMANTIC}, clock=clock) as cache:
        prepared = cache.prepare(talk("I want to cancel my Visa card"))
        cache.store(prepared, reply("3 days"))
        (entry,) = list(cache.document_store.scan())
    record = encode(entry)._asdict()
    old = [f for f in FIELDS if f != "context_vector"]
    db = sqlite3.connect(tmp_path / "old.db")
    for statement in sqlite_store._MIGRATIONS[0]:
        db.execute(statement)
    db.execute(f"INSERT INTO entries ({', '.join(old)}) VALUES ({', '.join('?' * len(old))})",
               [record[f] for f in old])
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    config = {**TEST_CONFIG, **SEMANTIC, "store": f"sqlite:///{tmp_path}/old.db"}
    with SemanticCache.open(config, clock=clock) as cache:
        (row,) = list(cache.document_store.scan())
        assert row.context_vector is None
        assert cache.lookup(talk("i want to cancel my visa card please")).hit
        assert not cache.lookup(talk("I want to cancel my Mastercard")).hit


def test_a_single_turn_request_never_matches_a_multi_turn_entry(make_cache) -> None:
    cache = make_cache(SEMANTIC)
    cache.store({"model": "m1", "messages": [{"role": "user", "content": FOLLOW_UP}]},
                reply("depends"))
    assert not cache.lookup(talk("cancel my card")).hit


def test_exact_context_needs_the_same_turns(make_cache) -> None:
    cache = make_cache({"default_category": "loose"})  # its context stays exact (the default)
    cache.store(talk("I want to cancel my Visa card"), reply("3 days"))
    assert not cache.lookup(talk("i want to cancel my visa card please")).hit
    assert cache.lookup(talk("I want to cancel my Visa card",
                             follow_up="how long does it take")).hit  # the last turn varies


def test_a_long_context_turn_is_compared_exactly(make_cache) -> None:
    cache = make_cache(SEMANTIC)
    prefix = "background " * 120  # past max_semantic_chars: the embedder would drop the tail
    cache.store(talk(prefix + "about my Visa card"), reply("a"))
    missed = cache.lookup(talk(prefix + "about my savings account"))
    assert not missed.hit and missed.reason is MissReason.CONTEXT
    assert missed.detail == "different turns"
    assert cache.lookup(talk(prefix + "about my Visa card")).hit
    stats = cache.stats()["loose"]
    assert stats.exact_contexts == 1  # the exact-tier hit never reached the semantic rule
    assert stats.context_rejections == 1


def test_semantic_coalescing_groups_by_the_exact_context() -> None:
    miss = Miss(reason=MissReason.EMPTY, category="c", vector=UNIT)
    policy = CategoryPolicy(verifier="none")
    groups = {similar_for(miss, key_request(body, tenant="t"), policy, ("chat",)).group
              for body in (talk("cancel my Visa card"), talk("cancel my Mastercard"))}
    assert len(groups) == 2


def test_near_answers_under_overload_need_the_same_turns(make_cache) -> None:
    from prismcache.server.overload import near_hit

    cache = make_cache({"categories": {"loose": {
        "threshold": 0.99, "fallback_threshold": 0.5, "ttl": "1h", "quota": 0.5,
        "context": "semantic", "context_threshold": 0.6}}, "default_category": "loose"})
    cache.store(talk("I want to cancel my Visa card"), reply("3 days"))
    for body, served in ((talk("I want to cancel my Visa card", "how long will that take?"),
                          True),
                         (talk("I want to cancel my Mastercard", "how long will that take?"),
                          False)):
        prepared = cache.prepare(body)
        missed = cache.lookup(prepared)
        assert isinstance(missed, Miss)
        near = near_hit(cache, prepared.key, missed) if missed.near_entry else None
        assert (near is not None) is served


# -- isolation ------------------------------------------------------------------------------

TENANTS = ("acme", "globex")
SYSTEMS = (None, "be terse")
TOOLS = (None, [{"type": "function", "function": {"name": "lookup"}}])
HISTORIES = ((), ("cancel it",), ("cancel my card",), ("hi", "cancel my card"))
QUERIES = ("cancel it", "cancel it now", "please cancel it")
ISOLATION = {
    "store": "memory://", "embedder": "hash:32", "classifier": {"examples": None}, "rules": [],
    "categories": {"general": {"threshold": 0.000001, "guards": [], "verifier": "none",
                               "context": "semantic", "context_threshold": 0.000001}},
}
request = st.tuples(st.sampled_from(TENANTS), st.sampled_from(SYSTEMS),
                    st.sampled_from(range(len(TOOLS))), st.sampled_from(HISTORIES),
                    st.sampled_from(QUERIES))


def _body(system: str | None, tools: int, history: tuple[str, ...], query: str
          ) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    for turn in history:
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": "ok"}]
    body: dict[str, Any] = {"model": "m", "messages": [*messages,
                                                       {"role": "user", "content": query}]}
    if TOOLS[tools] is not None:
        body["tools"] = TOOLS[tools]
    return body


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(("store", "lookup")), request), min_size=1,
                max_size=30))
def test_no_hit_crosses_system_prompt_tools_or_tenant_whatever_the_context(ops) -> None:
    cache = SemanticCache.open(ISOLATION)
    owner: dict[int, tuple[Any, ...]] = {}
    try:
        for kind, (tenant, system, tools, history, query) in ops:
            body = _body(system, tools, history, query)
            if kind == "store":
                stored = cache.store(body, reply(query), tenant=tenant)
                assert stored.entry_id is not None
                owner[stored.entry_id] = (tenant, system, tools, bool(history))
            else:
                result = cache.lookup(body, tenant=tenant)
                if result.hit:
                    assert owner[result.entry_id] == (tenant, system, tools, bool(history))
    finally:
        cache.close()


def test_the_context_property_is_not_vacuous() -> None:
    """Within one partition, a follow-up does hit across different earlier turns."""
    with SemanticCache.open(ISOLATION) as cache:
        cache.store(_body(None, 0, ("cancel my card",), "cancel it"), reply("x"))
        assert cache.lookup(_body(None, 0, ("hi", "cancel my card"), "cancel it now")).hit
