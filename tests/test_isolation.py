"""Property: no sequence of stores and lookups ever serves an entry across a partition.

Thresholds are set as low as they go and the guards are off, so similarity never protects
anything: only the partitioning does.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import chat, reply
from prismcache import SemanticCache

TENANTS = ("acme", "globex")
MODELS = ("m1", "m2")
SYSTEMS = (None, "be terse")
HISTORIES = ((), (("user", "hi"), ("assistant", "hello")), (("user", "yo"), ("assistant", "hey")))
# They share words, so every pair scores above the (tiny) threshold: any partition leak would
# show as a hit.
QUERIES = ("cancel it", "cancel it now", "please cancel it", "cancel my order", "cancel it please")

request = st.tuples(
    st.sampled_from(TENANTS), st.sampled_from(MODELS), st.sampled_from(SYSTEMS),
    st.sampled_from(HISTORIES), st.sampled_from(QUERIES), st.sampled_from((0, 0.5)),
)
operation = st.tuples(st.sampled_from(("store", "lookup")), request)

CONFIG = {
    "store": "memory://", "embedder": "hash:32", "classifier": {"examples": None}, "rules": [],
    "categories": {"general": {"threshold": 0.000001, "guards": [], "verifier": "none"}},
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=40))
def test_no_hit_ever_crosses_tenant_model_or_context(ops) -> None:
    cache = SemanticCache.open(CONFIG)
    owner: dict[int, tuple] = {}
    try:
        for kind, (tenant, model, system, history, query, temperature) in ops:
            body = chat(query, model=model, system=system, history=history,
                        temperature=temperature)
            if kind == "store":
                stored = cache.store(body, reply(query), tenant=tenant)
                assert stored.stored
                owner[stored.entry_id] = (tenant, model, system, history, temperature > 0)
            else:
                result = cache.lookup(body, tenant=tenant)
                if result.hit:
                    assert owner[result.entry_id] == (tenant, model, system, history,
                                                      temperature > 0)
    finally:
        cache.close()


def test_the_property_is_not_vacuous() -> None:
    """With these settings, any two of the queries hit each other within one partition."""
    for stored in QUERIES:
        cache = SemanticCache.open(CONFIG)
        cache.store(chat(stored), reply("x"), tenant="acme")
        for asked in QUERIES:
            assert cache.lookup(chat(asked), tenant="acme").hit, (stored, asked)
        cache.close()
