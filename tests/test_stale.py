"""``stale_if_error``: entries past their TTL are kept for a window and served marked ``stale``
only when the upstream fails (429, 5xx, timeout) — on real stores (memory, SQLite file,
redis-server) and through a real proxy with the fake upstream."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from fake_upstream import FakeUpstream
from prismcache import SemanticCache
from prismcache.config import load_config
from prismcache.errors import ConfigError
from proxy_support import make_proxy, upstream, user  # noqa: F401 - fixtures
from redis_support import redis_server, redis_url, store_url  # noqa: F401 - fixtures

QUERY = "how do I reset my password"
STALE: dict[str, Any] = {"default_category": "kept", "categories": {
    "kept": {"threshold": 0.9, "ttl": "10s", "stale_if_error": "60s", "quota": 0.5},
    "fresh": {"threshold": 0.9, "ttl": "10s", "quota": 0.5},  # stale_if_error 0: off
}}
REPLY = {"choices": [{"message": {"role": "assistant", "content": "Click 'forgot'."},
                      "finish_reason": "stop"}]}


def _body(query: str = QUERY, model: str = "m1") -> dict[str, Any]:
    return {"model": model, "messages": user(query)}


def test_defaults_allow_stale_answers_only_where_the_policy_does() -> None:
    config = load_config(None)
    assert config.policy("volatile").stale_if_error == 0.0
    assert config.policy("math").stale_if_error == 0.0
    for name in ("code", "factual", "support", "conversation"):
        assert config.policy(name).stale_if_error > 0
        assert config.policy(name).fallback_threshold is not None


@pytest.mark.parametrize("value, seconds", [("90s", 90.0), ("1h", 3600.0), (30, 30.0),
                                            (0, 0.0), ("0", 0.0)])
def test_stale_if_error_is_a_duration(value: Any, seconds: float) -> None:
    config = load_config({"categories": {"x": {"stale_if_error": value}}})
    assert config.policy("x").stale_if_error == seconds


@pytest.mark.parametrize("value", [-1, "soon"])
def test_a_bad_stale_if_error_is_a_config_error(value: Any) -> None:
    with pytest.raises(ConfigError, match="stale_if_error"):
        load_config({"categories": {"x": {"stale_if_error": value}}})


@pytest.mark.parametrize("category", ["kept", "fresh"])
def test_a_stale_entry_is_kept_but_never_a_hit(make_cache: Callable[..., SemanticCache],
                                               clock: Any, store_url: str,
                                               category: str) -> None:
    cache = make_cache({**STALE, "store": store_url})
    stored = cache.store(_body(), REPLY, category=category)
    assert cache.lookup(_body(), category=category).hit
    clock.tick(15)  # past the 10 s TTL
    assert cache.sweep() == 0 if category == "kept" else cache.sweep() == 1
    for query in (QUERY, QUERY + "?"):  # the exact tier and the semantic search
        miss = cache.lookup(_body(query), category=category)
        assert not miss.hit
        if category == "kept":
            assert miss.stale_entry == stored.entry_id and miss.stale_similarity >= 0.9
        else:
            assert miss.stale_entry is None
    assert cache.stats()[category].hits == 1
    clock.tick(60)  # past the stale window too: gone for good
    cache.sweep()
    assert cache.document_store.get(stored.entry_id) is None
    assert cache.lookup(_body(), category=category).stale_entry is None  # type: ignore[union-attr]


def test_a_stale_candidate_stays_in_its_partition(make_cache: Callable[..., SemanticCache],
                                                  clock: Any) -> None:
    cache = make_cache(STALE)
    cache.store(_body(), REPLY, tenant="acme")
    clock.tick(15)
    assert cache.lookup(_body(), tenant="acme").stale_entry is not None  # type: ignore[union-attr]
    assert cache.lookup(_body(), tenant="globex").stale_entry is None  # type: ignore[union-attr]
    assert cache.lookup(_body(model="m2"), tenant="acme").stale_entry is None  # type: ignore[union-attr]


def test_the_stale_candidate_passes_the_guards(make_cache: Callable[..., SemanticCache],
                                               clock: Any) -> None:
    cache = make_cache({**STALE, "categories": {"kept": {
        **STALE["categories"]["kept"], "threshold": 0.5}}})
    cache.store(_body("what is 12 times 7"), REPLY)
    clock.tick(15)
    miss = cache.lookup(_body("what is 12 times 8"))
    assert not miss.hit and miss.stale_entry is None  # type: ignore[union-attr]


def test_stats_report_borrowed_capacity(make_cache: Callable[..., SemanticCache]) -> None:
    cache = make_cache({**STALE, "capacity": {"entries": 10}})
    for i in range(7):
        cache.store(_body(f"question number {i} about {'x' * i}"), REPLY, category="kept")
    stats = cache.stats()["kept"]
    assert (stats.entries, stats.borrowed_entries) == (7, 2)  # share 0.5 of 10
    assert cache.stats()["fresh"].borrowed_entries == 0


# -- through the proxy -------------------------------------------------------------------------

PROXY_STALE: dict[str, Any] = {"default_category": "kept", "categories": {
    "kept": {"threshold": 0.9, "ttl": "1s", "stale_if_error": "1h", "quota": 0.5},
    "fresh": {"threshold": 0.9, "ttl": "1s", "quota": 0.5},
}}


def _post(http: Any, category: str, **extra: Any) -> Any:
    query = QUERY if category == "kept" else "how do I change my email address"
    return http.post("/v1/chat/completions", headers={"x-prism-category": category},
                     json={**_body(query), **extra})


def _primed(make_proxy: Callable[..., Any], **server: Any) -> tuple[Any, str]:
    proxy = make_proxy(PROXY_STALE, server=server or None)
    with proxy.http() as http:
        answers = [_post(http, category).json()["choices"][0]["message"]["content"]
                   for category in ("kept", "fresh")]
    time.sleep(1.1)  # both past their TTL
    return proxy, answers[0]


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_an_upstream_error_is_answered_from_a_stale_entry(
        make_proxy: Callable[..., Any], upstream: FakeUpstream, status: int) -> None:
    proxy, answer = _primed(make_proxy)
    upstream.behaviour.status = status
    with proxy.http() as http:
        reply = _post(http, "kept")
        refused = _post(http, "fresh")  # no stale window: the error passes through
        other_tenant = http.post("/v1/chat/completions", headers={
            "x-prism-category": "kept", "authorization": "Bearer sk-client-b"}, json=_body())
        metrics = http.get("/metrics").text
    assert reply.status_code == 200 and reply.headers["x-prism-cache"] == "stale"
    assert reply.headers["x-prism-upstream-status"] == str(status)
    assert float(reply.headers["x-prism-age"]) >= 1
    assert reply.json()["choices"][0]["message"]["content"] == answer
    assert refused.status_code == status and refused.headers["x-prism-cache"] == "miss"
    assert other_tenant.status_code == status
    assert re.search(r'^prismcache_fallback_total\{endpoint="chat",tenant="[^"]+",'
                     r'category="kept",kind="stale"\} 1$', metrics, re.M)
    assert proxy.cache.stats()["kept"].hits == 0  # a stale answer is not a hit
    assert proxy.cache.stats()["kept"].misses == 3


def test_a_healthy_upstream_answers_instead_of_the_stale_entry(
        make_proxy: Callable[..., Any], upstream: FakeUpstream) -> None:
    proxy, _ = _primed(make_proxy)
    calls = upstream.calls["chat"]
    with proxy.http() as http:
        reply = _post(http, "kept")
    assert reply.status_code == 200 and reply.headers["x-prism-cache"] == "miss"
    assert upstream.calls["chat"] == calls + 1


def test_an_upstream_timeout_is_answered_from_a_stale_entry(
        make_proxy: Callable[..., Any], upstream: FakeUpstream) -> None:
    proxy, _ = _primed(make_proxy, timeout="0.3s")
    upstream.behaviour.latency = 1.0
    with proxy.http() as http:
        reply = _post(http, "kept", stream=True)
    assert reply.status_code == 200 and reply.headers["x-prism-cache"] == "stale"
    assert reply.headers["x-prism-upstream-status"] == "504"
    assert reply.text.rstrip().endswith("data: [DONE]")


def test_a_longer_ttl_later_never_revives_an_entry_kept_for_errors(
        make_cache: Callable[..., SemanticCache], clock: Any, tmp_path: Any) -> None:
    store = f"sqlite:///{tmp_path}/revive.db"
    first = make_cache({**STALE, "store": store})
    stored = first.store(_body(), REPLY)
    first.close()
    clock.tick(15)  # past the 10 s TTL it was stored under, within its 60 s window
    longer = {"kept": {**STALE["categories"]["kept"], "ttl": "30s"}}  # as load adaptation may
    again = make_cache({**STALE, "store": store, "categories": longer})
    miss = again.lookup(_body())
    assert not miss.hit and miss.stale_entry == stored.entry_id
