"""Admission under load: while the upstream is overloaded, answers of categories whose entries
are seldom reused are not admitted (real proxy, fake upstream)."""

from __future__ import annotations

from typing import Any

import pytest

from fake_upstream import FakeUpstream
from prismcache.errors import ConfigError
from prismcache.results import CategoryStats
from prismcache.server.overload import LoadAdmission
from prismcache.server.settings import ServerSettings
from proxy_support import ADMIN_TOKEN, make_proxy, upstream, user  # noqa: F401 - fixtures

CONFIG: dict[str, Any] = {"default_category": "reused", "categories": {
    "reused": {"threshold": 0.99, "ttl": "1h", "quota": 0.5},
    "seldom": {"threshold": 0.99, "ttl": "1h", "quota": 0.5},
}}
SERVER: dict[str, Any] = {"load_admission_min_reuse": 0.5, "load_admission_min_stores": 2,
                          "load_admission_memory": "60s", "admin_token_env": "PRISM_ADMIN"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_rule() -> None:
    clock = Clock()
    refused: list[str] = []
    admit = LoadAdmission(min_reuse=0.2, min_stores=10, memory=5.0, clock=clock,
                          then=lambda entry, stats: refused.append("then") or None)
    seldom, young = CategoryStats(stores=10, hits=1), CategoryStats(stores=9, hits=0)
    assert admit(None, seldom) is None and not admit.overloaded
    admit.observe(500)  # a failure, not an overload
    assert not admit.overloaded
    admit.observe(503)
    assert admit(None, seldom) == "load:reuse 0.100 < 0.2"
    assert admit(None, young) is None  # too few stores to judge
    assert admit(None, CategoryStats(stores=10, hits=2)) is None
    clock.now = 5.0  # the overload is forgotten
    assert admit(None, seldom) is None
    assert admit.skipped == {"": 1}


@pytest.mark.parametrize("server", [{"load_admission_min_reuse": -1},
                                    {"load_admission_min_stores": 0},
                                    {"load_admission_memory": "soon"}])
def test_bad_settings_are_config_errors(server: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="load_admission"):
        ServerSettings.from_config(server)


def _ask(http: Any, query: str, category: str) -> Any:
    return http.post("/v1/chat/completions", headers={"x-prism-category": category},
                     json={"model": "m1", "messages": user(query)})


def test_under_overload_only_reused_categories_are_admitted(make_proxy,
                                                            upstream: FakeUpstream) -> None:
    proxy = make_proxy(CONFIG, server=SERVER, environ={"PRISM_ADMIN": ADMIN_TOKEN})
    with proxy.http() as http:
        for category in ("reused", "seldom"):
            for i in range(2):
                assert _ask(http, f"{category} question {i}", category).status_code == 200
        assert _ask(http, "reused question 0", "reused").headers["x-prism-cache"] == "hit"
        proxy.settle()  # answers are stored after the reply
        before = {c: proxy.cache.stats()[c].entries for c in ("reused", "seldom")}
        # not overloaded yet: every answer is admitted
        _ask(http, "seldom question 2", "seldom")
        proxy.settle()
        assert proxy.cache.stats()["seldom"].entries == before["seldom"] + 1
        upstream.behaviour.status = 429
        assert _ask(http, "anything at all", "reused").status_code == 429
        upstream.behaviour.status = 200
        _ask(http, "seldom question 3", "seldom")  # reuse 0/3 < 0.5: not admitted
        _ask(http, "reused question 2", "reused")  # reuse 1/2: admitted
        proxy.settle()
        metrics = http.get("/metrics").text
        stats = http.get("/admin/stats",
                         headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    assert proxy.cache.stats()["seldom"].entries == before["seldom"] + 1
    assert proxy.cache.stats()["reused"].entries == before["reused"] + 1
    assert 'prismcache_load_admission_skipped_total{category="seldom"} 1' in metrics
    assert "prismcache_upstream_overloaded 1" in metrics
    assert stats["proxy"]["load_admission"] == {"overloaded": True, "skipped": {"seldom": 1}}
    assert stats["proxy"]["fallbacks"] == {"near": 0, "stale": 0}


def test_load_admission_can_be_switched_off(make_proxy, upstream: FakeUpstream) -> None:
    proxy = make_proxy(CONFIG, server={**SERVER, "load_admission_min_reuse": 0},
                       environ={"PRISM_ADMIN": ADMIN_TOKEN})
    with proxy.http() as http:
        for i in range(3):
            _ask(http, f"seldom question {i}", "seldom")
        upstream.behaviour.status = 429
        _ask(http, "anything at all", "seldom")
        upstream.behaviour.status = 200
        _ask(http, "seldom question 3", "seldom")
        proxy.settle()
        assert "prismcache_load_admission_skipped_total" not in http.get("/metrics").text
    assert proxy.cache.stats()["seldom"].entries == 4


def test_doctests() -> None:
    import doctest

    from prismcache.server import overload

    assert doctest.testmod(overload).failed == 0
