"""Relief ahead of the upstream: while the upstream is saturated (the proxy's gate would queue
a new call), a miss with a stale or near candidate its category allows (``relieve``) is
answered at once without an upstream call; through a real proxy and the fake upstream, whose
calls are counted."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from fake_upstream import FakeUpstream
from prismcache.config import load_config
from prismcache.errors import ConfigError
from proxy_support import make_proxy, upstream, user  # noqa: F401 - fixtures

STORED = "how do I reset my password"
SLOW = "how do i reset the password"  # cosine 0.86 to STORED under hash:64
NEAR = "how can I reset my password"  # 0.88 to STORED, 0.79 to SLOW: follows no flight
RELIEF: dict[str, Any] = {"categories": {
    "loose": {"threshold": 0.99, "ttl": "1h", "quota": 0.3, "fallback_threshold": 0.6,
              "relieve": "near"},
    # near answers allowed on an upstream error, but not ahead of the upstream
    "strict": {"threshold": 0.99, "ttl": "1h", "quota": 0.3, "fallback_threshold": 0.6},
    "kept": {"threshold": 0.9, "ttl": "1s", "stale_if_error": "1h", "quota": 0.3,
             "relieve": "stale"},
}}
LATENCY = 2.0  # of the slow call that holds the upstream while a test runs: a loaded machine
# must not see it end before the test's own request is looked up


def _post(http: Any, query: str, category: str, **extra: Any) -> Any:
    return http.post("/v1/chat/completions", headers={"x-prism-category": category},
                     json={"model": "m1", "messages": user(query), **extra})


def _reached(upstream: FakeUpstream) -> int:
    """Requests that reached the upstream: answered or refused."""
    return upstream.generations + upstream.rejected


def _in_threads(proxy: Any, requests: list[tuple[str, str, str]]) -> tuple[list[Any], Any]:
    """Start each ``(api key, query, category)`` POST on a thread; the replies list fills in,
    and the returned function joins the threads."""
    replies: list[Any] = [None] * len(requests)

    def send(i: int) -> None:
        api_key, query, category = requests[i]
        with proxy.http(api_key) as http:
            replies[i] = _post(http, query, category)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()

    def join() -> None:
        for thread in threads:
            thread.join()

    return replies, join


@contextmanager
def _saturated(proxy: Any, upstream: FakeUpstream, slow: tuple[str, str] = ("burst", "strict"),
               ) -> Iterator[list[Any]]:
    """The upstream serves one call at a time and refuses the rest with 429: one slow call
    (``slow``: query, category) in flight, then a burst whose refusals teach the gate the
    upstream's capacity (the rest of the burst waits in its queue). Yields the slow call's
    reply list (filled in after) while the gate is saturated; every call ends after."""
    upstream.behaviour.max_inflight = 1
    upstream.behaviour.latency = LATENCY
    slow_reply, join_slow = _in_threads(proxy, [("sk-client-a", *slow)])
    deadline = time.monotonic() + LATENCY / 2
    while upstream.inflight < 1 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the slow call holds the upstream's only slot
    _, join_burst = _in_threads(
        proxy, [("sk-client-a", f"refused number {i} of the burst", "strict") for i in range(4)])
    gate = proxy.app.state.prism.coalescer.gate
    deadline = time.monotonic() + LATENCY / 2
    while ((upstream.rejected + len(gate) < 4 or not gate.saturated)
           and time.monotonic() < deadline):
        time.sleep(0.01)  # until the whole burst is refused (and the refusals seen) or queued
    assert gate.saturated and upstream.rejected > 0  # learnt from 429s, the slow call in flight
    upstream.behaviour.latency = 0.0  # only the slow call holds the slot; the calls queued
    try:  # behind it (the burst's rest, a test's own) are answered at once when it ends
        yield slow_reply
    finally:
        join_slow()
        join_burst()


def _asked_upstream(reply: Any) -> bool:
    """Whether the proxy called the upstream for ``reply``: a fresh answer or the upstream's
    error, or a near/stale answer in place of that error."""
    return "x-prism-relief" not in reply.headers and (
        reply.headers["x-prism-cache"] == "miss" or "x-prism-upstream-status" in reply.headers)


def _prime(proxy: Any, query: str, category: str) -> str:
    with proxy.http() as http:
        reply = _post(http, query, category)
    assert reply.status_code == 200 and reply.headers["x-prism-cache"] == "miss"
    proxy.settle()
    return str(reply.json()["choices"][0]["message"]["content"])


def test_defaults_relieve_only_where_stale_or_near_answers_are_allowed() -> None:
    config = load_config(None)
    assert {name: config.policy(name).relieve for name in config.categories} == {
        "code": "stale", "math": "never", "factual": "stale", "conversation": "stale",
        "support": "near", "volatile": "never", "creative": "never", "general": "never"}


def test_relieve_is_validated() -> None:
    with pytest.raises(ConfigError, match="categories.x: relieve must be one of"):
        load_config({"categories": {"x": {"relieve": "always"}}})


def test_a_saturated_upstream_is_relieved_by_a_near_answer_without_a_call(
        make_proxy: Callable[..., Any], upstream: FakeUpstream) -> None:
    proxy = make_proxy(RELIEF)
    answer = _prime(proxy, STORED, "loose")
    with _saturated(proxy, upstream):
        before = _reached(upstream)
        with proxy.http() as http:
            reply = _post(http, NEAR, "loose")
            streamed = _post(http, NEAR, "loose", stream=True)
            metrics = http.get("/metrics").text
        assert _reached(upstream) == before  # answered without asking the upstream
    assert reply.status_code == 200 and reply.headers["x-prism-cache"] == "near"
    assert reply.headers["x-prism-relief"] == "saturated"
    assert "x-prism-upstream-status" not in reply.headers
    assert 0.6 <= float(reply.headers["x-prism-similarity"]) < 0.99
    assert "x-prism-age" in reply.headers and "x-prism-entry" in reply.headers
    assert reply.json()["choices"][0]["message"]["content"] == answer
    assert streamed.headers["x-prism-cache"] == "near"
    assert streamed.text.rstrip().endswith("data: [DONE]")
    assert re.search(r'^prismcache_relief_total\{endpoint="chat",tenant="[^"]+",'
                     r'category="loose",kind="near"\} 2$', metrics, re.M)
    assert "prismcache_fallback_total{" not in metrics  # apart from answers to errors
    assert proxy.cache.stats()["loose"].hits == 0  # not a hit


def test_relief_is_counted_in_admin_stats(make_proxy: Callable[..., Any],
                                          upstream: FakeUpstream) -> None:
    proxy = make_proxy(RELIEF, server={"admin_token_env": "ADMIN"},
                       environ={"ADMIN": "admin-token"})
    _prime(proxy, STORED, "loose")
    with _saturated(proxy, upstream), proxy.http() as http:
        assert _post(http, NEAR, "loose").headers["x-prism-cache"] == "near"
        stats = http.get("/admin/stats", headers={"authorization": "Bearer admin-token"}).json()
    assert stats["proxy"]["relief"] == {"near": 1, "stale": 0}
    assert stats["proxy"]["fallbacks"] == {"near": 0, "stale": 0}


def test_a_healthy_upstream_answers_a_near_candidate_itself(
        make_proxy: Callable[..., Any], upstream: FakeUpstream) -> None:
    proxy = make_proxy(RELIEF)
    _prime(proxy, STORED, "loose")
    before = _reached(upstream)
    with proxy.http() as http:
        reply = _post(http, NEAR, "loose")
    assert reply.status_code == 200 and reply.headers["x-prism-cache"] == "miss"
    assert _reached(upstream) == before + 1


def test_a_stale_entry_relieves_a_saturated_upstream(make_proxy: Callable[..., Any],
                                                     upstream: FakeUpstream) -> None:
    proxy = make_proxy(RELIEF)
    answer = _prime(proxy, STORED, "kept")
    time.sleep(1.1)  # past its 1 s TTL, within its stale_if_error window
    with _saturated(proxy, upstream):
        before = _reached(upstream)
        with proxy.http() as http:
            reply = _post(http, STORED, "kept")
        reached = _reached(upstream)
    assert reply.status_code == 200 and reply.headers["x-prism-cache"] == "stale"
    assert reached == before
    assert reply.headers["x-prism-relief"] == "saturated"
    assert float(reply.headers["x-prism-age"]) >= 1
    assert reply.json()["choices"][0]["message"]["content"] == answer


def test_under_saturation_forbidden_categories_and_other_tenants_queue_for_the_upstream(
        make_proxy: Callable[..., Any], upstream: FakeUpstream) -> None:
    proxy = make_proxy(RELIEF)
    _prime(proxy, STORED, "loose")
    _prime(proxy, "please how do I reset my password", "strict")  # 0.80 to NEAR
    with _saturated(proxy, upstream):
        replies, join = _in_threads(proxy, [
            ("sk-client-a", NEAR, "strict"),  # relieve: never (the default)
            ("sk-client-b", NEAR, "loose"),  # another tenant: STORED is not its entry
        ])
        time.sleep(0.1)
        assert replies == [None, None]  # waiting in the gate's queue
        join()
    assert all(_asked_upstream(r) for r in replies)
    assert replies[1].headers["x-prism-cache"] == "miss"  # nothing near in its own partition
    assert proxy.app.state.prism.metrics.relief.values == {}


def test_a_request_that_a_flight_would_take_follows_it_instead(
        make_proxy: Callable[..., Any], upstream: FakeUpstream) -> None:
    proxy = make_proxy(RELIEF)
    _prime(proxy, STORED, "loose")
    with _saturated(proxy, upstream, slow=(SLOW, "loose")) as slow, proxy.http() as http:
        follower = _post(http, SLOW, "loose")  # identical to the call in flight, near STORED
    assert follower.headers["x-prism-cache"] == "coalesced"  # no relief: it follows the flight
    assert follower.headers["x-prism-similarity"] == "1.0000" and not _asked_upstream(follower)
    assert follower.json() == slow[0].json()  # the one fresh answer, shared
