"""Cache economics on a fake clock: break-even and flags, auto-disable only when configured,
shadow mode, re-enabling with hysteresis, cost-aware admission and eviction."""

from __future__ import annotations

import random

import pytest
from conftest import FakeClock, chat, reply

from prismcache.config import load_config
from prismcache.economics import EconomicsSettings, EconomicsTracker
from prismcache.errors import ConfigError
from prismcache.policies import PolicyResolver
from prismcache.report import format_table

POLICIES = load_config({"categories": {"rare": {"threshold": 0.9}}}).categories


def tracker(clock: FakeClock, **settings: object) -> EconomicsTracker:
    values = {"window": 600.0, "min_requests": 100, **settings}
    return EconomicsTracker(EconomicsSettings(**values), POLICIES, clock=clock,  # type: ignore[arg-type]
                            rng=random.Random(1))


def feed(econ: EconomicsTracker, clock: FakeClock, category: str, *, requests: int,
         hit_every: int, seconds: float = 700.0) -> None:
    """``requests`` lookups over ``seconds``: O = 20 ms, H = 2 ms, U = 1 s."""
    for i in range(requests):
        clock.tick(seconds / requests)
        hit = i % hit_every == 0
        econ.record_lookup(category, hit=hit, seconds=0.002 if hit else 0.020)
        if not hit:
            econ.record_upstream(category, 1.0, usd=0.001)


def row(econ: EconomicsTracker, category: str):
    return next(r for r in econ.table() if r.category == category)


def test_break_even_and_net_saving_follow_the_measurements(clock) -> None:
    econ = tracker(clock)
    feed(econ, clock, "support", requests=300, hit_every=2)
    r = row(econ, "support")
    assert r.break_even_hit_rate == pytest.approx(0.020 / (1.0 - 0.002))
    assert r.hit_rate == pytest.approx(0.5, abs=0.01)
    assert r.net_s_per_request == pytest.approx(0.5 * 0.998 - 0.5 * 0.020, rel=0.02)
    assert r.net_usd_per_request == pytest.approx(0.5 * 0.001, rel=0.02)
    assert r.net_s_per_hour > 0 and not r.flagged and not r.disabled
    assert "support" in format_table(econ.as_json()["categories"])


def test_below_break_even_is_flagged_but_disabled_only_when_configured(clock) -> None:
    econ = tracker(clock)
    feed(econ, clock, "rare", requests=300, hit_every=100)  # h = 0.01 < 0.02
    assert row(econ, "rare").flagged and not row(econ, "rare").disabled
    assert not econ.disabled("rare")  # flagged only: still cached
    feed(econ, clock, "support", requests=300, hit_every=2)
    assert not row(econ, "support").flagged

    econ = tracker(clock, categories={"rare": True})  # auto_disable for that category only
    feed(econ, clock, "rare", requests=300, hit_every=100)
    feed(econ, clock, "support", requests=300, hit_every=100)
    assert row(econ, "rare").disabled
    resolver = PolicyResolver(load_config(None), economics=econ)
    assert not resolver.resolve("rare").enabled and resolver.resolve("rare", shadow=True).enabled
    assert row(econ, "support").flagged and not row(econ, "support").disabled


def test_not_flagged_before_a_full_window_or_enough_requests(clock) -> None:
    econ = tracker(clock, auto_disable=True)
    feed(econ, clock, "rare", requests=300, hit_every=100, seconds=300)  # half a window
    assert not row(econ, "rare").flagged
    econ = tracker(clock, auto_disable=True)
    feed(econ, clock, "rare", requests=50, hit_every=100)  # too few requests
    assert not row(econ, "rare").flagged


def test_shadow_mode_counts_would_be_hits_without_embedding_or_serving(make_cache,
                                                                       clock) -> None:
    econ = tracker(clock, auto_disable=True, shadow_sample=1, min_shadow=5)
    cache = make_cache(economics=econ)
    asked = chat("how do i reset my password")
    assert cache.store(asked, reply("a"), category="loose").stored
    feed(econ, clock, "loose", requests=300, hit_every=100)
    assert econ.disabled("loose")
    calls = cache.embedder.calls
    econ.settings = EconomicsSettings(**{**vars_of(econ.settings), "shadow_sample": 10**9})
    off = econ.lookup(cache, asked, category="loose")
    assert off.reason == "economics-off" and not off.cacheable
    assert cache.embedder.calls == calls  # disabled: no embedding, no search
    assert not cache.store(chat("a fresh one"), reply("x"), category="loose").stored

    econ.settings = EconomicsSettings(**{**vars_of(econ.settings), "shadow_sample": 1})
    shadow = econ.lookup(cache, chat("how can i reset my password"), category="loose")
    assert not shadow.hit and shadow.reason == "shadow-hit" and shadow.cacheable
    assert row(econ, "loose").shadow_lookups == 1 and row(econ, "loose").shadow_hit_rate == 1.0
    miss = econ.lookup(cache, chat("what is the refund policy"), category="loose")
    assert miss.reason == "shadow-miss"
    stored = cache.store(chat("what is the refund policy"), reply("r"), category="loose",
                         shadow=True)
    assert stored.stored  # the shadow cache keeps learning


def test_a_disabled_category_is_re_enabled_when_shadow_shows_it_pays(make_cache, clock) -> None:
    econ = tracker(clock, auto_disable=True, shadow_sample=1, min_shadow=5)
    cache = make_cache(economics=econ)
    asked = chat("how do i reset my password")
    cache.store(asked, reply("a"), category="loose")
    feed(econ, clock, "loose", requests=300, hit_every=100)
    assert econ.disabled("loose")
    for _ in range(4):  # below min_shadow: stays off
        clock.tick(1)
        assert econ.lookup(cache, asked, category="loose").reason == "shadow-hit"
    assert econ.disabled("loose")
    clock.tick(1)
    econ.lookup(cache, asked, category="loose")
    assert not econ.disabled("loose")
    assert econ.lookup(cache, asked, category="loose").hit
    feed(econ, clock, "loose", requests=150, hit_every=100, seconds=300)
    assert not econ.disabled("loose")  # hysteresis: a full window before it can be flagged


def test_the_economics_section_is_validated() -> None:
    config = load_config({"economics": {"window": "10m", "auto_disable": True,
                                        "categories": {"general": {"auto_disable": False}}}})
    settings = EconomicsSettings.from_config(config)
    assert settings.window == 600 and settings.auto_disables("code")
    assert not settings.auto_disables("general")
    for bad in ({"nope": 1}, {"categories": {"nosuch": {}}}, {"shadow_sample": 0},
                {"categories": {"code": {"threshold": 1}}}):
        with pytest.raises(ConfigError):
            EconomicsSettings.from_config(load_config({"economics": bad}))


# -- admission and eviction ---------------------------------------------------------------

LONG = "please review this module for bugs " + "x = compute(y) " * 1500  # ~22 KB


def test_admission_refuses_a_one_off_long_prompt_in_a_low_repetition_category(make_cache) -> None:
    cache = make_cache({"economics": {"admission": {"min_lookups": 10, "explore": 0.0}}})
    for i in range(20):  # "strict": every query new, nothing repeats
        q = chat(f"unique question number {i} about topic {i * 7919}")
        assert not cache.lookup(q, category="strict").hit
        cache.store(q, reply("a"), category="strict", cost=0.001)
    asked = chat("how do i reset my password")  # "loose": one question, asked again and again
    cache.store(asked, reply("a"), category="loose", cost=0.001)
    for _ in range(20):
        assert cache.lookup(asked, category="loose").hit
    refused = cache.store(chat(LONG), reply("b"), category="strict", cost=0.001)
    assert not refused.stored and refused.reason.startswith("admission:")
    assert cache.store(chat(LONG), reply("b"), category="loose", cost=0.001).stored
    # a short, cheap-to-hold entry in the low-repetition category still pays its way
    assert cache.store(chat("short one"), reply("c"), category="strict", cost=0.01).stored


def test_without_admission_configured_everything_is_admitted(make_cache) -> None:
    cache = make_cache()
    assert cache.admission is None
    assert cache.store(chat(LONG), reply("b"), category="strict", cost=0.001).stored


@pytest.mark.parametrize(("eviction", "kept"), [("gdsf", True), ("lru", False)])
def test_cost_aware_eviction_keeps_an_expensive_often_hit_entry(make_cache, clock, eviction,
                                                                kept) -> None:
    cache = make_cache({"capacity": {"entries": 4},
                        "categories": {"loose": {"threshold": 0.999, "quota": 0.5,
                                                 "max_share": 0.5, "eviction": eviction},
                                       "strict": {"quota": 0.5}}})
    dear = chat("explain the proof of the four colour theorem")
    assert cache.store(dear, reply("long proof"), category="loose", cost=0.05).stored
    for _ in range(3):
        clock.tick(1)
        assert cache.lookup(dear, category="loose").hit
    for i in range(4):  # cheap one-offs, stored after the last hit on the dear one
        clock.tick(1)
        cache.store(chat(f"say hello number {i}"), reply("hi"), category="loose", cost=0.0001)
    assert cache.lookup(dear, category="loose").hit is kept
    assert cache.stats()["loose"].entries == 2


def vars_of(settings: EconomicsSettings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def test_report_shows_the_configured_assumptions(tmp_path, capsys) -> None:
    from prismcache.cli import main

    path = tmp_path / "p.yaml"
    path.write_text("economics: {categories: {general: {auto_disable: true}}}\n"
                    "adaptive: {categories: {support: {max_threshold_drop: 0.05}}}\n")
    assert main(["report", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    general = next(line for line in out.splitlines() if line.startswith("general"))
    support = next(line for line in out.splitlines() if line.startswith("support"))
    assert " yes " in general and "0.050" in support and "adaptive on" in out
