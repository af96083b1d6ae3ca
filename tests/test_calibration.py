"""Error-bounded calibration (prismcache.calibration): the confidence-bound rule on both sides,
the resolver stage, persistence across restarts (a real SQLite file, a real redis-server), and
``replay --online`` on a small trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_CONFIG, CountingEmbedder
from redis_support import RedisServer, redis_server, redis_url  # noqa: F401 - fixtures

from prismcache import SemanticCache
from prismcache.calibration import Z_95, Calibrator, learn_cutoff
from prismcache.evaluation.metrics import wilson_lower
from prismcache.cli import main
from prismcache.config import load_config
from prismcache.labels import Label
from prismcache.stores import open_store

CALIBRATED: dict[str, Any] = {
    **TEST_CONFIG,
    "categories": {"faq": {"verifier": "builtin", "cutoff": 0.9, "target_precision": 0.95},
                   "plain": {"verifier": "builtin", "cutoff": 0.9}},
}


def labels(n: int, p: float, *, same: bool = True, tenant: str = "acme",
           category: str = "faq") -> list[Label]:
    return [Label(tenant=tenant, category=category, query=f"q{i}", entry_id=i, candidate=f"c{i}",
                  similarity=0.8, probability=p, same=same, source="agreement", t=float(i))
            for i in range(n)]


def test_wilson_lower_bound() -> None:
    assert wilson_lower(0, 0, Z_95) == 0.0
    assert wilson_lower(100, 100, Z_95) < 1.0
    assert wilson_lower(95, 100, Z_95) < 0.95 < wilson_lower(990, 1000, Z_95)
    assert wilson_lower(99, 100, Z_95) > wilson_lower(99, 100)  # one-sided 95%: less strict


def test_too_few_labels_keep_the_configured_cutoff() -> None:
    learned = learn_cutoff([(0.6, True)] * 49, configured=0.9, target=0.95, min_labels=50)
    assert learned.cutoff == 0.9
    assert "too few" in learned.why


def test_enough_good_labels_loosen_the_cutoff() -> None:
    good = [(0.6, True)] * 200 + [(0.3, False)] * 50
    learned = learn_cutoff(good, configured=0.9, target=0.95, min_labels=50)
    assert learned.cutoff == 0.6  # loosest on the grid whose bound holds: above the bad ones
    assert learned.bound is not None and learned.bound >= 0.95


def test_bad_labels_above_the_cutoff_tighten_it() -> None:
    mixed = [(0.95, True)] * 300 + [(0.92, True)] * 40 + [(0.92, False)] * 40
    learned = learn_cutoff(mixed, configured=0.9, target=0.95, min_labels=50)
    assert learned.cutoff == 0.95
    closed = learn_cutoff([(0.95, False)] * 60, configured=0.9, target=0.95, min_labels=50)
    assert closed.cutoff == 1.0 and "closed" in closed.why


def test_bad_labels_only_below_the_cutoff_say_nothing_about_it() -> None:
    learned = learn_cutoff([(0.5, False)] * 100, configured=0.9, target=0.95, min_labels=50)
    assert learned.cutoff == 0.9


def test_the_resolver_applies_the_learned_cutoff_to_calibrated_categories_only() -> None:
    store = open_store("memory://")
    cache = SemanticCache.open(CALIBRATED, store=store, embedder=CountingEmbedder())
    try:
        calibrator = cache.policies.calibration
        assert calibrator is not None and calibrator.categories == ["faq"]
        assert "calibration" in repr(cache.policies)
        assert cache.policy_for("faq").cutoff == 0.9
        for x in labels(120, 0.6) + labels(20, 0.6, category="plain"):
            calibrator.record(x)
        assert cache.policy_for("faq").cutoff == 0.6
        assert cache.policy_for("plain").cutoff == 0.9
        assert len(store.labels(category="plain")) == 20  # kept for export all the same
        change = calibrator.history[-1]
        assert (change.category, change.old, change.new) == ("faq", 0.9, 0.6)
        text = "\n".join(calibrator.metric_lines())
        assert 'prismcache_learned_cutoff{category="faq"} 0.6' in text
    finally:
        cache.close()


def test_no_target_precision_means_no_calibration_stage() -> None:
    cache = SemanticCache.open(TEST_CONFIG, embedder=CountingEmbedder())
    try:
        assert cache.policies.calibration is None
    finally:
        cache.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_learned_cutoff_survives_a_restart(backend: str, tmp_path: Path,
                                           request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path}/cache.db" if backend == "sqlite"
           else request.getfixturevalue("redis_url"))
    config = {**CALIBRATED, "store": url}
    cache = SemanticCache.open(config, embedder=CountingEmbedder())
    calibrator = cache.policies.calibration
    assert calibrator is not None
    for x in labels(150, 0.55):
        calibrator.record(x)
    assert cache.policy_for("faq").cutoff == 0.55
    cache.close()
    reopened = SemanticCache.open(config, embedder=CountingEmbedder())
    try:
        assert reopened.policy_for("faq").cutoff == 0.55
        reopened.document_store.delete_labels()  # the roll-back
        fresh = Calibrator(load_config(config), reopened.document_store)
        fresh.load()
        assert fresh.cutoff("faq") == 0.9
    finally:
        reopened.close()


def test_calibration_pools_tenants_but_counts_only_probabilities() -> None:
    calibrator = Calibrator(load_config(CALIBRATED))
    calibrator.observe(labels(30, 0.6, tenant="a") + labels(30, 0.6, tenant="b"))
    assert calibrator.cutoff("faq") == 0.6
    calibrator.observe([Label(tenant="a", category="faq", query="q", entry_id=1, candidate="c",
                              similarity=0.9, probability=None, same=False, source="feedback",
                              t=0.0)])
    assert calibrator.cutoff("faq") == 0.6  # no probability: counted, not placed
    assert {"category": "faq", "source": "feedback", "same": False, "count": 1} in \
        calibrator.as_json()["labels"]


def test_replay_online_small_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace.jsonl"
    things = ["router", "modem", "printer", "laptop", "phone", "camera"]
    extras = ["please", "now", "today", "quickly", "again", "safely", "at home", "for me",
              "right away", "step by step"]
    lines = [{"query": f"how do I reset the {things[i % 6]} {extras[i // 6]}",
              "answer_key": things[i % 6] if i % 4 else f"other{i}", "t": float(i)}
             for i in range(60)]
    trace.write_text("\n".join(json.dumps(x) for x in lines) + "\n", "utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({**TEST_CONFIG, "default_category": "loose",
                                  "defaults": {"verifier": "builtin", "verify_low": 0.3,
                                               "verify_high": 0.999}}), "utf-8")
    out = tmp_path / "online.json"
    plot = tmp_path / "cutoffs.png"
    pytest.importorskip("matplotlib")
    assert main(["replay", str(trace), "--config", str(config), "--json", str(out),
                 "--latency-samples", "0", "--online", "--target-precision", "0.9",
                 "--explore-rate", "0.5", "--cutoff-plot", str(plot)]) == 0
    result = json.loads(out.read_text("utf-8"))
    online, overall = result["online"], result["overall"]
    assert online["target_precision"] == 0.9
    assert overall["requests"] == 60
    assert 0.0 <= overall["explored_rate"] <= 1.0
    assert overall["explored"] == sum(v for k, v in online["labels"].items()
                                      if k.startswith("explored"))
    assert set(online["cutoffs"]) <= {"loose", "strict"}
    assert plot.stat().st_size > 0
    assert "online (target precision 0.9)" in capsys.readouterr().out
