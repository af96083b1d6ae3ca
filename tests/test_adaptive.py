"""Load-adaptive control: the level's hysteresis on a fake clock, the bounds of the adjusted
policy (a hypothesis property), the config section, and the cache applying the adjusted
threshold and TTL at decision time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import FakeClock, chat, reply
from hypothesis import given
from hypothesis import strategies as st
from proxy_support import ADMIN_TOKEN, make_proxy, upstream  # noqa: F401, F811 - fixtures

from prismcache.adaptive import (
    AdaptivePolicy,
    AdaptiveSettings,
    Bounds,
    LoadController,
    adjust,
)
from prismcache.config import CategoryPolicy, load_config
from prismcache.errors import ConfigError


def run(control: LoadController, clock: FakeClock, seconds: int, model: str = "m") -> float:
    """Read the level once a second for ``seconds`` (as lookups would); return the last."""
    level = control.level(model)
    for _ in range(seconds):
        clock.tick(1.0)
        level = control.level(model)
    return level


def test_level_rises_under_sustained_load_and_falls_back_with_hysteresis(clock) -> None:
    settings = AdaptiveSettings(inflight_high=10, up_at=1.0, down_at=0.5,
                                rise_per_second=0.25, fall_per_second=0.1, window=5)
    control = LoadController(settings, clock=clock)
    assert run(control, clock, 3) == 0.0  # idle
    for _ in range(12):  # saturated: 12 in flight > 10
        control.signals.started("m")
    assert 0.2 < run(control, clock, 2) < 0.6  # rising, not jumping
    assert run(control, clock, 3) == 1.0
    for _ in range(5):  # 7 in flight: inside the band (0.5 .. 1.0) -> the level holds
        control.signals.finished("m", 0.1, 200)
    assert run(control, clock, 10) == 1.0
    for _ in range(4):  # 3 in flight: below down_at -> falls, slower than it rose
        control.signals.finished("m", 0.1, 200)
    assert 0.45 < run(control, clock, 5) < 0.55
    assert run(control, clock, 6) == 0.0
    assert control.level("other") == 0.0  # per model


def test_a_spike_after_a_quiet_spell_does_not_jump_the_level(clock) -> None:
    control = LoadController(AdaptiveSettings(inflight_high=1, rise_per_second=0.25), clock=clock)
    control.level("m")
    clock.tick(3600)
    control.signals.started("m")
    control.signals.started("m")
    assert control.level("m") == 0.25


@pytest.mark.parametrize("status", [429, 503])
def test_overload_answers_and_slow_answers_raise_the_level(clock, status) -> None:
    settings = AdaptiveSettings(error_rate_high=0.2, latency_high=1.0, window=10)
    control = LoadController(settings, clock=clock)
    for i in range(10):
        control.signals.started("m")
        control.signals.finished("m", 0.05, status if i % 3 == 0 else 200)
    assert control.signal("m") >= 1.0  # 4 of 10 overloaded
    slow = LoadController(settings, clock=clock)
    for _ in range(10):
        slow.signals.started("m")
        slow.signals.finished("m", 1.5, 200)
    assert slow.signal("m") == pytest.approx(1.5)
    clock.tick(11)  # the window forgets them
    assert control.signal("m") == 0.0 and slow.signal("m") == 0.0


@given(threshold=st.floats(0.01, 1.0), drop=st.floats(0.0, 0.99), factor=st.floats(1.0, 50.0),
       level=st.floats(-1.0, 2.0, allow_nan=False),
       ttl=st.one_of(st.none(), st.floats(1.0, 1e7)))
def test_thresholds_and_ttls_never_leave_their_bounds(threshold, drop, factor, level,
                                                      ttl) -> None:
    policy = CategoryPolicy(threshold=threshold,
                            ttl=None if ttl is None else timedelta(seconds=ttl))
    out = adjust(policy, Bounds(max_threshold_drop=drop, max_ttl_factor=factor), level)
    assert threshold - drop - 1e-9 <= out.threshold <= threshold
    assert 0.0 < out.threshold <= 1.0
    if ttl is None:
        assert out.ttl is None
    else:
        base = policy.ttl.total_seconds()  # timedelta keeps whole microseconds
        assert base - 1e-6 <= out.ttl.total_seconds() <= base * factor + 1e-6
    assert (out.quota, out.eviction, out.enabled) == (policy.quota, policy.eviction,
                                                      policy.enabled)


def test_the_adaptive_section_is_validated() -> None:
    config = load_config({"adaptive": {"latency_high": "500ms", "window": "1m",
                                       "defaults": {"max_threshold_drop": 0.02},
                                       "categories": {"support": {"max_ttl_factor": 4}}}})
    settings = AdaptiveSettings.from_config(config)
    assert settings is not None and settings.latency_high == 0.5 and settings.window == 60
    assert settings.bounds("support") == Bounds(max_threshold_drop=0.02, max_ttl_factor=4)
    assert settings.bounds("code") == Bounds(max_threshold_drop=0.02)
    assert AdaptiveSettings.from_config(load_config({})) is None
    assert AdaptiveSettings.from_config(load_config({"adaptive": {"enabled": False}})) is None
    for bad in ({"nope": 1}, {"categories": {"nosuch": {}}}, {"down_at": 2.0},
                {"defaults": {"max_threshold_drop": 1.5}},
                {"categories": {"code": {"max_ttl_factor": 0.5}}}):
        with pytest.raises(ConfigError):
            AdaptiveSettings.from_config(load_config({"adaptive": bad}))


def test_the_cache_applies_the_adjusted_threshold_and_ttl_at_decision_time(make_cache,
                                                                           clock) -> None:
    settings = AdaptiveSettings(inflight_high=1, window=60)
    hook = AdaptivePolicy.from_settings(settings, clock=clock)
    cache = make_cache(adaptive=hook)
    asked, paraphrase = chat("how do i reset my password"), chat("how can i reset my password")
    assert cache.store(asked, reply("a"), category="strict").stored
    miss = cache.lookup(paraphrase, category="strict")
    assert not miss.hit and miss.similarity is not None and miss.similarity < 0.99
    hook._bounds["strict"] = Bounds(max_threshold_drop=0.99 - miss.similarity + 0.005,
                                    max_ttl_factor=3)
    assert not cache.lookup(paraphrase, category="strict").hit  # level 0: unchanged
    hook.controller.signals.started("m1")
    hook.controller.signals.started("m1")
    run(hook.controller, clock, 5, "m1")
    assert cache.policy_for("strict", "m1").threshold < miss.similarity
    assert cache.lookup(paraphrase, category="strict").hit
    # stored under load: lives up to 3 x 1 h while the load lasts...
    assert cache.store(chat("what are your opening hours"), reply("b"), category="strict").stored
    clock.tick(2 * 3600)
    assert cache.lookup(chat("what are your opening hours"), category="strict").hit
    # ...and the decision-time TTL takes the extension back when the load falls
    hook.controller.signals.finished("m1", 0.1, 200)
    hook.controller.signals.finished("m1", 0.1, 200)
    clock.tick(120)  # the window forgets the answers
    run(hook.controller, clock, 30, "m1")
    assert hook.controller.level("m1") == 0.0
    assert not cache.lookup(chat("what are your opening hours"), category="strict").hit


# -- through the proxy --------------------------------------------------------------------

def test_proxy_tracks_load_exports_it_and_serves_the_economics_table(make_proxy,
                                                                     upstream) -> None:
    import asyncio

    import httpx

    proxy = make_proxy({"adaptive": {"inflight_high": 2, "error_rate_high": 0.1,
                                     "defaults": {"max_threshold_drop": 0.05}}},
                       {"admin_token_env": "PRISM_ADMIN"}, environ={"PRISM_ADMIN": ADMIN_TOKEN})
    upstream.behaviour.latency = 0.2
    upstream.behaviour.max_inflight = 2  # the third concurrent call is refused with a 429

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=proxy.root, timeout=10,
                                     headers={"authorization": "Bearer sk-client-a"}) as http:
            replies = await asyncio.gather(*(http.post("/v1/chat/completions", json={
                "model": "m1", "messages": [{"role": "user", "content": f"question {i} " * 3}],
                "metadata": {"answer_key": f"k{i}"}}) for i in range(6)))
        return [r.status_code for r in replies]

    statuses = asyncio.run(burst())
    assert statuses.count(429) == upstream.rejected >= 1 and statuses.count(200) >= 2
    with proxy.http() as http:
        text = http.get("/metrics").text
        assert 'prismcache_load_level{model="m1"}' in text
        assert 'prismcache_effective_threshold{category="loose"}' in text
        table = http.get("/admin/economics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert http.get("/admin/economics").status_code == 401
    assert table.status_code == 200
    body = table.json()
    assert body["load"]["m1"] > 0  # 429s pushed the level up
    loose = next(r for r in body["categories"] if r["category"] == "loose")
    assert loose["requests"] == 6 and loose["upstream_s"] >= 0.2
    ok = next(i for i, s in enumerate(statuses) if s == 200)
    with proxy.http() as http:  # the answer key is echoed by the upstream, and so cached
        again = http.post("/v1/chat/completions", json={
            "model": "m1", "messages": [{"role": "user", "content": f"question {ok} " * 3}]})
    assert again.headers["x-prism-cache"] == "hit"
    assert again.json()["choices"][0]["message"]["content"].endswith(f"[key=k{ok}]")


def test_report_reads_a_proxys_live_table(make_proxy, monkeypatch, capsys) -> None:
    from prismcache.cli import main

    proxy = make_proxy(None, {"admin_token_env": "PRISM_ADMIN"},
                       environ={"PRISM_ADMIN": ADMIN_TOKEN})
    with proxy.http() as http:
        for _ in range(2):
            http.post("/v1/chat/completions", json={"model": "m1", "messages": [
                {"role": "user", "content": "how do I reset my password"}]})
    monkeypatch.setenv("PRISM_ADMIN_TOKEN", ADMIN_TOKEN)
    assert main(["report", "--url", proxy.root + "/admin/economics"]) == 0
    loose = next(line for line in capsys.readouterr().out.splitlines()
                 if line.startswith("loose"))
    assert loose.split()[1:3] == ["2", "0.500"]
    monkeypatch.setenv("PRISM_ADMIN_TOKEN", "wrong")
    assert main(["report", "--url", proxy.root + "/admin/economics"]) == 1
