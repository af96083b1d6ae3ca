"""Load shedding at the upstream gate: while the upstream refused lately, a call whose wait
runs out (or would) is not sent; the proxy answers it (near/stale where allowed, else 429 +
Retry-After + X-Prism-Shed). The gate's decision on a fake clock, then through a real proxy and
the fake upstream, whose calls are counted."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from fake_upstream import FakeUpstream
from prismcache.errors import ConfigError
from prismcache.server.overload import Shed, UpstreamGate
from prismcache.server.settings import ServerSettings
from proxy_support import make_proxy, upstream, user  # noqa: F401 - fixtures
from test_overload_admission import Clock
from test_overload_relief import RELIEF, STORED, _in_threads, _prime, _reached

NEAR = "how can I reset my password"  # 0.88 to STORED under hash:64, below strict's 0.99
SHORT_WAIT = {"upstream_queue_wait": "0.2s", "admin_token_env": "ADMIN"}
ADMIN = {"environ": {"ADMIN": "admin-token"}}
ADMIN_HEADERS = {"authorization": "Bearer admin-token"}


# -- the gate's decision ----------------------------------------------------------------------

def test_a_gate_that_never_saw_a_refusal_sends_a_late_call_anyway() -> None:
    async def scenario() -> None:
        gate = UpstreamGate(max_wait=0.01, initial=1.0, shed=True, clock=Clock())
        assert await gate.acquire() is True
        assert await gate.acquire() is False  # waited it out: sent anyway, late
        gate.observe(200, late=True)
        assert (gate.inflight, gate.timed_out, gate.late) == (2, 1, {200: 1})
        assert gate.shed_calls == {"waited": 0, "expected": 0} and not gate.refusing

    asyncio.run(scenario())


def test_after_a_refusal_a_call_whose_wait_ran_out_is_shed_until_it_is_forgotten() -> None:
    async def scenario() -> None:
        clock = Clock()
        gate = UpstreamGate(max_wait=0.01, initial=1.0, shed=True, memory=5.0, clock=clock)
        await gate.acquire()
        gate.observe(429)  # the upstream refused: for 5 s the gate sheds
        with pytest.raises(Shed) as shed:
            await gate.acquire()
        assert shed.value.status == 429 and shed.value.reason == "waited"
        assert shed.value.retry_after >= 1
        assert (gate.inflight, len(gate), gate.timed_out) == (1, 0, 1)  # no slot taken
        clock.now += 5.0  # the refusal is forgotten: sent anyway again
        assert await gate.acquire() is False
        assert gate.shed_calls == {"waited": 1, "expected": 0} and gate.inflight == 2

    asyncio.run(scenario())


def test_a_late_call_with_room_below_the_refused_level_is_still_sent() -> None:
    async def scenario() -> None:
        gate = UpstreamGate(max_wait=0.01, initial=2.0, shed=True, clock=Clock())
        await gate.acquire()
        await gate.acquire()
        gate.observe(429)  # refused at 2 in flight: the limit falls to 1.5
        gate.release()
        assert gate.saturated and gate.refusing and gate.refused_at == 2
        with pytest.raises(Shed):  # a second call in flight is what the upstream refused
            await gate.acquire()
        gate.refused_at = 3  # say the upstream last refused a third call in flight
        assert await gate.acquire() is False  # room below it: sent, late
        assert gate.shed_calls == {"waited": 1, "expected": 0} and gate.inflight == 2

    asyncio.run(scenario())


def test_without_shedding_a_late_call_goes_even_after_a_refusal() -> None:
    async def scenario() -> None:
        gate = UpstreamGate(max_wait=0.01, initial=1.0, shed=False, clock=Clock())
        await gate.acquire()
        gate.observe(429)
        assert await gate.acquire() is False  # sent anyway: the upstream decides
        gate.observe(429, late=True)
        assert gate.late == {429: 1} and gate.shed_calls["waited"] == 0

    asyncio.run(scenario())


def _steady(gate: UpstreamGate, clock: Clock, seconds: int) -> None:
    """One call finishes and another takes its slot every second, the gate full (its limit
    unchanged)."""
    for _ in range(seconds):
        clock.now += 1.0
        gate.release()
        gate.inflight += 1


def test_with_shed_early_a_call_that_would_wait_past_the_longest_wait_is_shed_at_once() -> None:
    async def scenario() -> None:
        clock = Clock()
        gate = UpstreamGate(max_wait=1.5, initial=2.0, shed=True, shed_early=True, clock=clock)
        gate.inflight = 2
        _steady(gate, clock, 5)  # releases at 1 per second
        assert gate.drain_rate() == pytest.approx(1.0)
        first = asyncio.create_task(gate.acquire())  # no refusal yet: waits, never shed
        second = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        assert len(gate) == 2 and gate.expected_wait(3) == pytest.approx(3.0)
        gate.observe(429)  # refusing now: a third in line would wait ~3 s > 1.5 s
        started = time.monotonic()
        with pytest.raises(Shed) as shed:
            await gate.acquire()
        assert time.monotonic() - started < 0.1  # at once, not after the wait
        assert shed.value.reason == "expected" and shed.value.retry_after == 3
        assert len(gate) == 2 and gate.queued == 2
        gate.limit = 4.0
        gate.release()  # the two waiting calls get their slots
        assert await first is True and await second is True

    asyncio.run(scenario())


def test_the_drain_rate_falls_while_nothing_is_released() -> None:
    clock = Clock()
    gate = UpstreamGate(max_wait=1.0, initial=2.0, shed=True, clock=clock)
    assert gate.drain_rate() is None and gate.expected_wait(1) is None  # unknown: never shed
    gate.inflight = 2
    _steady(gate, clock, 4)
    assert gate.drain_rate() == pytest.approx(1.0)
    clock.now += 6.0  # the upstream stalls
    assert gate.drain_rate() == pytest.approx(3 / 9)


def test_the_setting_is_validated_and_on_by_default() -> None:
    assert ServerSettings().upstream_shed is True
    assert ServerSettings().upstream_shed_early is False
    with pytest.raises(ConfigError, match="upstream_shed_early"):
        ServerSettings.from_config({"upstream_shed_early": 1})
    assert ServerSettings.from_config({"upstream_shed": False}).upstream_shed is False
    with pytest.raises(ConfigError, match="upstream_shed"):
        ServerSettings.from_config({"upstream_shed": "yes"})
    with pytest.raises(ConfigError, match="load_admission_memory"):
        ServerSettings.from_config({"load_admission_memory": "0s"})


# -- through the proxy ------------------------------------------------------------------------

@contextmanager
def _refusing(proxy: Any, upstream: FakeUpstream, latency: float = 2.0) -> Iterator[None]:
    """The upstream serves one call at a time (each takes ``latency`` s) and refuses the rest
    with 429: a slow call holds its slot, then one more call is refused, so the gate knows
    the upstream refuses and is saturated. Yields while the slow call is in flight."""
    upstream.behaviour.max_inflight = 1
    upstream.behaviour.latency = latency
    _, join_slow = _in_threads(proxy, [("sk-client-a", "the slow call", "strict")])
    deadline = time.monotonic() + latency / 2
    while upstream.inflight < 1:
        assert time.monotonic() < deadline, "the slow call did not reach the upstream"
        time.sleep(0.005)
    probe, join_probe = _in_threads(proxy, [("sk-client-a", "a refused probe", "strict")])
    join_probe()
    gate = proxy.app.state.prism.coalescer.gate
    assert probe[0].status_code == 429 and upstream.rejected == 1
    assert gate.saturated and gate.refusing
    try:
        yield
    finally:
        join_slow()


def _post(http: Any, query: str, category: str) -> Any:
    return http.post("/v1/chat/completions", headers={"x-prism-category": category},
                     json={"model": "m1", "messages": user(query)})


def test_a_shed_call_never_reaches_the_upstream_and_gets_429_with_retry_after(
        make_proxy: Callable[..., Any], upstream: FakeUpstream) -> None:
    proxy = make_proxy(RELIEF, server=SHORT_WAIT, **ADMIN)
    with _refusing(proxy, upstream):
        before = _reached(upstream)
        with proxy.http() as http:
            reply = _post(http, "a question nobody asked before", "strict")
            stats = http.get("/admin/stats", headers=ADMIN_HEADERS).json()
            metrics = http.get("/metrics").text
        assert _reached(upstream) == before  # the upstream never saw it
    assert reply.status_code == 429
    assert reply.headers["x-prism-shed"] == "upstream-saturated"
    assert int(reply.headers["retry-after"]) >= 1
    assert "x-prism-upstream-status" not in reply.headers
    error = reply.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    gate = stats["proxy"]["upstream_gate"]
    assert gate["refusing"] and sum(gate["shed"].values()) >= 1
    shed = re.findall(r'^prismcache_upstream_shed_total\{reason="(\w+)"\} (\d+)$', metrics, re.M)
    assert {reason: int(n) for reason, n in shed} == gate["shed"]
    # the upstream's own refusals only: a shed call is not an upstream error
    refused = re.search(r'^prismcache_upstream_errors_total\{endpoint="chat",status="429"\} '
                        r'(\d+)', metrics, re.M)
    assert refused is not None and int(refused.group(1)) == upstream.rejected


def test_a_category_with_a_near_candidate_gets_its_near_answer_instead(
        make_proxy: Callable[..., Any], upstream: FakeUpstream) -> None:
    proxy = make_proxy(RELIEF, server=SHORT_WAIT, **ADMIN)
    answer = _prime(proxy, STORED, "strict")  # near answers on errors, no relief ahead
    with _refusing(proxy, upstream):
        before = _reached(upstream)
        with proxy.http() as http:
            reply = _post(http, NEAR, "strict")
        assert _reached(upstream) == before
    assert reply.status_code == 200 and reply.headers["x-prism-cache"] == "near"
    assert reply.headers["x-prism-shed"] == "upstream-saturated"
    assert "x-prism-upstream-status" not in reply.headers and "x-prism-relief" not in reply.headers
    assert reply.json()["choices"][0]["message"]["content"] == answer


def test_with_shedding_off_a_late_call_is_sent_anyway(make_proxy: Callable[..., Any],
                                                      upstream: FakeUpstream) -> None:
    proxy = make_proxy(RELIEF, server={**SHORT_WAIT, "upstream_shed": False}, **ADMIN)
    with _refusing(proxy, upstream):
        before = _reached(upstream)
        replies, join = _in_threads(proxy, [("sk-client-a", "sent anyway", "strict")])
        join()
        assert _reached(upstream) == before + 1  # sent after its wait: the upstream refused
        with proxy.http() as http:
            stats = http.get("/admin/stats", headers=ADMIN_HEADERS).json()
    assert replies[0].status_code == 429 and "x-prism-shed" not in replies[0].headers
    gate = stats["proxy"]["upstream_gate"]
    assert gate["shed"] == {"waited": 0, "expected": 0} and gate["sent_late"].get("429", 0) >= 1
    assert json.loads(replies[0].text)["error"]  # the upstream's error body, passed through
