"""Near answers instead of upstream overload errors, through a real proxy and fake upstream."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import pytest

from fake_upstream import FakeUpstream
from prismcache.server.overload import UpstreamGate
from proxy_support import make_proxy, upstream, user  # noqa: F401 - fixtures

STORED = "how do I reset my password"
PARAPHRASE = "how can I reset my password please"  # cosine 0.76 under hash:64
OVERLOAD: dict[str, Any] = {"categories": {
    "loose": {"threshold": 0.99, "ttl": "1h", "quota": 0.5, "fallback_threshold": 0.6},
    "strict": {"threshold": 0.99, "ttl": "1h", "quota": 0.5},  # no fallback: pass through
}}


def _post(http: Any, query: str, category: str, **extra: Any) -> Any:
    return http.post("/v1/chat/completions", headers={"x-prism-category": category},
                     json={"model": "m1", "messages": user(query), **extra})


def _prime(proxy: Any, category: str, query: str = STORED) -> str:
    with proxy.http() as http:
        reply = _post(http, query, category)
    assert reply.status_code == 200 and reply.headers["x-prism-cache"] == "miss"
    return reply.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("status", [429, 503])
def test_overload_is_answered_from_a_near_entry_where_allowed(
        make_proxy, upstream: FakeUpstream, status: int) -> None:
    proxy = make_proxy(OVERLOAD)
    answer = _prime(proxy, "loose")
    upstream.behaviour.status = status
    with proxy.http() as http:
        reply = _post(http, PARAPHRASE, "loose")
        metrics = http.get("/metrics").text
    assert reply.status_code == 200
    assert reply.headers["x-prism-cache"] == "near"
    assert reply.headers["x-prism-upstream-status"] == str(status)
    assert 0.6 <= float(reply.headers["x-prism-similarity"]) < 0.99
    assert "x-prism-age" in reply.headers and "x-prism-entry" in reply.headers
    assert reply.json()["choices"][0]["message"]["content"] == answer
    assert upstream.calls["chat"] == 2  # it did ask the upstream first
    assert re.search(r'^prismcache_fallback_total\{endpoint="chat",tenant="[^"]+",'
                     r'category="loose",kind="near"\} 1$', metrics, re.M)
    assert proxy.cache.stats()["loose"].hits == 0  # a near answer is not a hit


def test_an_upstream_timeout_is_answered_from_a_near_entry(make_proxy,
                                                          upstream: FakeUpstream) -> None:
    proxy = make_proxy(OVERLOAD, server={"timeout": "0.3s"})
    answer = _prime(proxy, "loose")
    upstream.behaviour.latency = 1.0
    with proxy.http() as http:
        reply = _post(http, PARAPHRASE, "loose")
    assert reply.status_code == 200 and reply.headers["x-prism-cache"] == "near"
    assert reply.headers["x-prism-upstream-status"] == "504"
    assert reply.json()["choices"][0]["message"]["content"] == answer


def test_overload_passes_through_where_not_allowed(make_proxy, upstream: FakeUpstream) -> None:
    proxy = make_proxy(OVERLOAD)
    _prime(proxy, "strict")
    upstream.behaviour.status = 429
    with proxy.http() as http:
        reply = _post(http, PARAPHRASE, "strict")
    assert reply.status_code == 429
    assert reply.headers["x-prism-cache"] == "miss"


def test_near_answers_never_cross_partitions_nor_replace_other_errors(
        make_proxy, upstream: FakeUpstream) -> None:
    proxy = make_proxy(OVERLOAD)
    _prime(proxy, "loose")
    upstream.behaviour.status = 429
    with proxy.http() as http:
        other_system = http.post("/v1/chat/completions", headers={"x-prism-category": "loose"},
                                 json={"model": "m1", "messages": [
                                     {"role": "system", "content": "be terse"},
                                     *user(PARAPHRASE)]})
        other_model = _post(http, PARAPHRASE, "loose", model="m2")
    assert other_system.status_code == other_model.status_code == 429
    upstream.behaviour.status = 500  # a failure, not an overload: the error goes through
    with proxy.http() as http:
        assert _post(http, PARAPHRASE, "loose").status_code == 500


def test_a_429_storm_is_answered_where_allowed_and_passed_through_where_not(
        make_proxy, upstream: FakeUpstream) -> None:
    proxy = make_proxy(OVERLOAD)
    _prime(proxy, "loose")
    _prime(proxy, "strict", "how do I change my email address")
    upstream.behaviour.status = 429
    with proxy.http() as http:
        replies = [_post(http, query, category) for category, query in (
            ("loose", PARAPHRASE), ("strict", "how can I change my email address please"))
            for _ in range(5)]
    states = [(r.status_code, r.headers["x-prism-cache"]) for r in replies]
    assert states[:5] == [(200, "near")] * 5
    assert states[5:] == [(429, "miss")] * 5


def test_a_streamed_request_gets_a_replayed_near_answer(make_proxy,
                                                        upstream: FakeUpstream) -> None:
    proxy = make_proxy(OVERLOAD)
    answer = _prime(proxy, "loose")
    upstream.behaviour.status = 429
    with proxy.http() as http:
        reply = _post(http, PARAPHRASE, "loose", stream=True)
    assert reply.status_code == 200 and reply.headers["x-prism-cache"] == "near"
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.text.rstrip().endswith("data: [DONE]")
    assert answer.split()[0] in reply.text


def test_a_far_candidate_is_not_served(make_proxy, upstream: FakeUpstream) -> None:
    proxy = make_proxy(OVERLOAD)
    _prime(proxy, "loose")
    upstream.behaviour.status = 429
    with proxy.http() as http:
        reply = _post(http, "what is the weather like on mars", "loose")
    assert reply.status_code == 429


# -- semantic coalescing ----------------------------------------------------------------------

COALESCE: dict[str, Any] = {"categories": {
    "loose": {"threshold": 0.7, "ttl": "1h", "quota": 0.5},
    "strict": {"threshold": 0.99, "ttl": "1h", "quota": 0.5},
}}


def _concurrently(proxy: Any, requests: list[tuple[str, str, str]],
                  upstream: FakeUpstream | None = None) -> list[Any]:
    """POST each ``(api key, query, category)`` at once, the first ahead: the others leave
    once it has reached ``upstream`` (given; reset before), else 0.1 s after it."""
    results: list[Any] = [None] * len(requests)

    def send(i: int) -> None:
        api_key, query, category = requests[i]
        if i > 0 and upstream is not None:
            deadline = time.monotonic() + 5.0
            while upstream.generations < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        elif i > 0:
            time.sleep(0.1)
        with proxy.http(api_key) as http:
            results[i] = _post(http, query, category)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_paraphrases_in_flight_share_one_upstream_call(make_proxy,
                                                       upstream: FakeUpstream) -> None:
    proxy = make_proxy(COALESCE)
    with proxy.http() as http:  # the index must exist for the lookup to embed and search
        _post(http, "what is the weather like on mars", "loose")
    upstream.reset()
    upstream.behaviour.latency = 1.5  # the paraphrase's lookup must end while it is in flight
    first, second = _concurrently(proxy, [("sk-client-a", STORED, "loose"),
                                          ("sk-client-a", PARAPHRASE, "loose")], upstream)
    assert upstream.calls["chat"] == 1
    assert first.headers["x-prism-cache"] == "miss"
    assert second.headers["x-prism-cache"] == "coalesced"
    assert 0.7 <= float(second.headers["x-prism-similarity"]) < 1.0
    assert first.json()["choices"][0]["message"]["content"] == \
        second.json()["choices"][0]["message"]["content"]


def test_coalescing_needs_the_threshold_and_the_same_partition(make_proxy,
                                                               upstream: FakeUpstream) -> None:
    proxy = make_proxy(COALESCE)
    with proxy.http() as http:
        _post(http, "what is the weather like on mars", "loose")
        _post(http, "what is the weather like on mars", "strict")
    with proxy.http("sk-client-b") as http:
        _post(http, "what is the weather like on mars", "loose")
    upstream.reset()
    upstream.behaviour.latency = 0.6
    replies = _concurrently(proxy, [("sk-client-a", STORED, "loose"),
                                    ("sk-client-b", PARAPHRASE, "loose"),  # another tenant
                                    ("sk-client-a", "how do I bake bread", "loose"),
                                    ])
    assert upstream.calls["chat"] == 3
    assert [r.headers["x-prism-cache"] for r in replies] == ["miss"] * 3
    upstream.reset()
    upstream.behaviour.latency = 0.6
    replies = _concurrently(proxy, [("sk-client-a", STORED + " now", "strict"),
                                    ("sk-client-a", PARAPHRASE + " now", "strict")])
    assert upstream.calls["chat"] == 2  # 0.76 is below strict's 0.99


class _FixedVerifier:
    """An in-memory verifier: the same probability for every candidate, or a failure."""

    name = "fixed"

    def __init__(self, p: float | None) -> None:
        self.p, self.calls = p, 0

    def probabilities(self, query: Any, candidates: Any) -> list[float]:
        self.calls += 1
        if self.p is None:
            from prismcache.errors import VerifierError

            raise VerifierError("judge down")
        return [self.p] * len(candidates)


def test_coalescing_is_the_decision_with_the_categorys_verifier() -> None:
    import numpy as np

    from prismcache.config import CategoryPolicy
    from prismcache.server.coalesce import Similar

    def similar(text: str, angle: float, verifier: _FixedVerifier | None) -> Similar:
        vector = np.array([np.cos(angle), np.sin(angle)], dtype=np.float32)
        return Similar(group="g", query=text, vector=vector, verifier=verifier,
                       policy=CategoryPolicy(threshold=0.9, verify_low=0.7, verify_high=0.99,
                                             cutoff=0.5, guards=("negation",)))

    leaders = [similar("reset my password", 0.0, None), similar("bake bread", 1.4, None)]
    grey = 0.5  # cosine 0.88: in the grey zone, the verifier decides
    accept, reject, broken = _FixedVerifier(0.9), _FixedVerifier(0.1), _FixedVerifier(None)
    chosen = similar("how to reset my password", grey, accept).choose(leaders)
    assert chosen is not None and chosen[0] == 0 and 0.87 < chosen[1] < 0.89
    assert similar("how to reset my password", grey, reject).choose(leaders) is None
    assert similar("how to reset my password", grey, broken).choose(leaders) is None  # closed
    assert similar("don't reset my password", 0.0, accept).choose(leaders) is None  # guard
    assert accept.calls == 1 and similar("x", 0.0, None).choose([]) is None


# -- the upstream gate ------------------------------------------------------------------------

def test_gate_limits_calls_in_flight_and_adapts_to_overload() -> None:
    async def scenario() -> None:
        gate = UpstreamGate(max_wait=5.0, initial=2.0, probe_slowdown=1.0)  # plain AIMD
        await gate.acquire()
        await gate.acquire()
        order: list[int] = []

        async def wait(i: int) -> None:
            await gate.acquire()
            order.append(i)

        waiters = [asyncio.create_task(wait(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        assert (gate.inflight, len(gate), order) == (2, 3, [])
        gate.observe(429)  # two in flight refused: the limit falls to 1.5
        assert gate.limit == 1.5
        gate.release()
        await asyncio.sleep(0.01)
        assert order == []  # one in flight = int(1.5): nobody moves
        gate.observe(200)
        gate.observe(200)  # 1.5 -> 2.17 -> 2.63: two slots
        gate.release()
        await asyncio.sleep(0.01)
        assert gate.limit > 2.0 and order == [0, 1]  # first in, first out
        gate.release()
        await asyncio.gather(*waiters)
        assert order == [0, 1, 2] and gate.queued == 3 and gate.timed_out == 0

    asyncio.run(scenario())


def _recoveries(gate: UpstreamGate, refuse_at: int, calls: int) -> int:
    """Feed ``gate`` ``calls`` finished calls from an upstream that refuses the ``refuse_at``-th
    call in flight, the gate always full; returns how many were refused."""
    refused = 0
    for _ in range(calls):
        gate.inflight = int(gate.limit)  # saturated: every slot the limit allows is taken
        status = 429 if gate.inflight >= refuse_at else 200
        refused += status == 429
        gate.observe(status)
    return refused


def test_gate_probes_slowly_past_the_level_the_upstream_refused() -> None:
    plain = _recoveries(UpstreamGate(max_wait=1.0, initial=4.0, probe_slowdown=1.0), 6, 400)
    gate = UpstreamGate(max_wait=1.0, initial=4.0)
    slow = _recoveries(gate, 6, 400)
    assert gate.refused_at == 6 and 4.0 <= gate.limit < 6.0
    assert 0 < slow * 4 <= plain  # still probes, at a quarter of the refusals or fewer
    for _ in range(200):  # the upstream takes more now: the limit passes the old ceiling ...
        gate.observe(200)
    assert gate.limit > 7.0 and gate.refused_at == float("inf")  # ... which is forgotten
    with pytest.raises(ValueError, match="probe_slowdown"):
        UpstreamGate(max_wait=1.0, probe_slowdown=0.5)


def test_gate_sends_a_call_anyway_after_the_longest_wait() -> None:
    async def scenario() -> None:
        gate = UpstreamGate(max_wait=0.05, initial=1.0)
        await gate.acquire()
        await gate.acquire()  # waits 50 ms, then goes anyway
        assert (gate.inflight, gate.timed_out, len(gate)) == (2, 1, 0)

    asyncio.run(scenario())


def test_a_burst_past_the_upstream_capacity_waits_instead_of_failing(
        make_proxy, upstream: FakeUpstream) -> None:
    upstream.behaviour.latency = 0.3
    upstream.behaviour.max_inflight = 2
    refused = {}
    for gate in (False, True):
        proxy = make_proxy(COALESCE, server={"upstream_gate": gate})
        # A first wave of 4 at once draws refusals: the gate learns the upstream's capacity.
        _concurrently(proxy, [("sk-client-a", f"warm-up {gate} {i}", "strict") for i in range(4)])
        replies = _concurrently(proxy, [("sk-client-a", f"burst {gate} {i}", "strict")
                                        for i in range(8)])
        refused[gate] = sum(r.status_code == 429 for r in replies)
    assert refused[False] >= 4  # 2 served at a time, the rest refused
    assert refused[True] < refused[False]
