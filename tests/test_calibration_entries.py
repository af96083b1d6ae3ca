"""Per-entry calibration (prismcache.calibration.entry_cutoff and the Calibrator's per-entry
state): an entry loosens only with enough agreeing labels, closes on disagreeing ones, stays in
its tenant, survives a restart (a real SQLite file), and is forgotten when its entry is
replaced or dropped; the decision applies it to that candidate only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TEST_CONFIG, CountingEmbedder

from prismcache import SemanticCache
from prismcache.calibration import Z_95, Calibrator, entry_cutoff, min_agreeing
from prismcache.config import load_config
from prismcache.decision import Candidate, MissReason, Outcome, Query, decide
from prismcache.evaluation.metrics import wilson_lower
from prismcache.labels import Label
from prismcache.results import Hit, Miss

TARGETED: dict[str, Any] = {
    **TEST_CONFIG,
    "categories": {"faq": {"verifier": "builtin", "cutoff": 0.9, "target_precision": 0.95},
                   "strict": {"verifier": "builtin", "cutoff": 0.9, "target_precision": 0.99}},
}
#: grey zone from 0.05 to 0.9999 and a low cut-off: a reworded request is a grey-zone hit
GREY: dict[str, Any] = {
    **TEST_CONFIG,
    "default_category": "faq",
    "categories": {"faq": {"verifier": "builtin", "verify_low": 0.05, "verify_high": 0.9999,
                           "cutoff": 0.01, "target_precision": 0.95, "explore_rate": 0.0,
                           "guards": [], "ttl": "1h"}},
}


def label(entry_id: int, same: bool, *, p: float | None = 0.6, tenant: str = "acme",
          category: str = "faq", t: float = 0.0) -> Label:
    return Label(tenant=tenant, category=category, query="q", entry_id=entry_id,
                 candidate="c", similarity=0.8, probability=p, same=same,
                 source="agreement", t=t)


def body(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def answer(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}]}


@pytest.mark.parametrize(("target", "n"), [(0.99, 268), (0.95, 52), (0.9, 25), (0.8, 11)])
def test_min_agreeing_is_where_the_wilson_bound_first_reaches_the_target(target: float,
                                                                         n: int) -> None:
    assert min_agreeing(target) == n
    assert wilson_lower(n, n, Z_95) >= target > wilson_lower(n - 1, n - 1, Z_95)


def test_entry_rule_loosens_only_with_enough_agreeing_labels() -> None:
    assert entry_cutoff([(0.6, True)] * 51, category=0.9, target=0.95) is None
    assert entry_cutoff([(0.6, True)] * 52, category=0.9, target=0.95) == 0.6
    assert entry_cutoff([(0.6, True)] * 52, category=0.5, target=0.95) is None  # not looser
    # one disagreement among 60: the bound at 0.6 no longer holds, nothing loosens
    assert entry_cutoff([(0.6, True)] * 59 + [(0.6, False)], category=0.9, target=0.95) is None
    # labels without a probability say nothing about where to cut
    assert entry_cutoff([(None, True)] * 100, category=0.9, target=0.95) is None


def test_entry_rule_closes_on_disagreeing_labels_with_little_evidence() -> None:
    assert entry_cutoff([(0.95, False)], category=0.9, target=0.99) == 1.0
    assert entry_cutoff([(None, False)], category=0.9, target=0.99) == 1.0  # feedback counts
    # at 0.99 one disagreement closes the entry while it has fewer than 23 labels ...
    assert entry_cutoff([(0.6, True)] * 21 + [(0.6, False)], category=0.9, target=0.99) == 1.0
    # ... and agreeing labels reopen it once the upper bound on its precision reaches 0.99
    assert entry_cutoff([(0.6, True)] * 22 + [(0.6, False)], category=0.9, target=0.99) is None
    assert entry_cutoff([(0.6, True)] * 4 + [(0.6, False)], category=0.9, target=0.95) is None


def test_calibrator_keeps_entry_cutoffs_per_tenant() -> None:
    calibrator = Calibrator(load_config(TARGETED), min_labels=1000)  # categories stay put
    calibrator.record(label(1, False, tenant="a"))
    for _ in range(52):
        calibrator.record(label(2, True, tenant="a"))
    assert calibrator.entry_cutoffs("a") == {1: 1.0, 2: 0.6}
    assert calibrator.entry_cutoffs("b") is None
    # a label naming another tenant's entry is not that entry's evidence
    for _ in range(30):
        calibrator.record(label(1, True, tenant="b"))
    assert calibrator.entry_cutoffs("a") == {1: 1.0, 2: 0.6}
    assert calibrator.entry_cutoffs("b") is None
    assert calibrator.cutoff("faq") == 0.9
    state = calibrator.as_json()
    row = next(r for r in state["categories"] if r["category"] == "faq")
    assert (row["entries_closed"], row["entries_looser"], row["entry_min_labels"]) == (1, 1, 52)
    assert state["entries"]["adjusted"] == calibrator.adjusted_entries == 2
    text = "\n".join(calibrator.metric_lines())
    assert 'prismcache_adjusted_entries{category="faq",direction="closed"} 1' in text
    assert 'prismcache_adjusted_entries{category="faq",direction="looser"} 1' in text


def test_labels_of_a_closed_entry_do_not_count_for_its_category() -> None:
    calibrator = Calibrator(load_config(TARGETED), min_labels=5)
    calibrator.record(label(1, False, p=0.95, category="strict"))  # counted: not closed before
    for _ in range(10):  # decisions a closed entry would not have served
        calibrator.record(label(1, True, p=0.95, category="strict"))
    row = next(r for r in calibrator.as_json()["categories"] if r["category"] == "strict")
    assert row["labels"] == 1
    assert calibrator.entry_cutoffs("acme") == {1: 1.0}


def test_tracked_entries_are_bounded_least_recently_labelled_first() -> None:
    calibrator = Calibrator(load_config(TARGETED), max_entries=2)
    for entry_id in (1, 2, 3):
        calibrator.record(label(entry_id, False))
    assert calibrator.entry_cutoffs("acme") == {2: 1.0, 3: 1.0}
    assert calibrator.as_json()["entries"]["dropped"] == 1
    calibrator.forget([2, 3, 99])
    assert calibrator.entry_cutoffs("acme") is None


class FixedVerifier:
    """Every candidate gets the same probability."""

    name = "fixed"

    def __init__(self, p: float) -> None:
        self.p = p

    def probabilities(self, query: Query, candidates: Any) -> np.ndarray:
        return np.full(len(candidates), self.p)


def test_decide_applies_an_entry_cutoff_to_that_candidate_only() -> None:
    policy = load_config(TARGETED).policy("faq")
    query = Query(text="how do I reset it")
    candidates = [Candidate(entry_id=1, text="how to reset it", similarity=0.85),
                  Candidate(entry_id=2, text="how do i reset it now", similarity=0.84)]
    verifier = FixedVerifier(0.95)
    assert decide(query, candidates, policy, verifier).served == 1
    closed = decide(query, candidates, policy, verifier, {1: 1.0})
    assert closed.served == 2
    assert closed.outcomes[0][0] is Outcome.VERIFIER and "< 1" in closed.outcomes[0][2]
    both = decide(query, candidates, policy, verifier, {1: 1.0, 2: 1.0})
    assert both.reason is MissReason.VERIFIER
    looser = decide(query, candidates, policy, FixedVerifier(0.7), {2: 0.6})
    assert looser.served == 2 and looser.probability == pytest.approx(0.7)


def test_a_closed_entry_misses_in_its_tenant_only() -> None:
    cache = SemanticCache.open(GREY, embedder=CountingEmbedder())
    try:
        mine = cache.store(body("how do I reset my router"), answer("hold the button"),
                           tenant="a")
        theirs = cache.store(body("how do I reset my router"), answer("hold the button"),
                             tenant="b")
        assert mine.entry_id is not None and theirs.entry_id is not None
        near = body("how do I reset my router please")
        before = cache.lookup(near, tenant="a")
        assert isinstance(before, Hit) and before.entry_id == mine.entry_id
        assert before.probability is not None and before.probability < 1.0  # grey zone
        calibrator = cache.policies.calibration
        assert calibrator is not None
        calibrator.record(label(mine.entry_id, False, p=before.probability, tenant="a"))
        after = cache.lookup(near, tenant="a")
        assert isinstance(after, Miss) and after.reason is MissReason.VERIFIER
        assert after.grey_entry == mine.entry_id  # still labelled from the fresh answer
        other = cache.lookup(near, tenant="b")
        assert isinstance(other, Hit) and other.entry_id == theirs.entry_id
        # storing the request again replaces the entry: what was learned about it goes
        again = cache.store(body("how do I reset my router"), answer("unplug it"), tenant="a")
        assert again.entry_id != mine.entry_id
        assert calibrator.entry_cutoffs("a") is None
        assert isinstance(cache.lookup(near, tenant="a"), Hit)
    finally:
        cache.close()


def test_entry_cutoffs_survive_a_restart_and_dropped_entries_are_pruned(tmp_path: Path
                                                                        ) -> None:
    config = {**GREY, "store": f"sqlite:///{tmp_path}/cache.db"}
    cache = SemanticCache.open(config, embedder=CountingEmbedder())
    stored = cache.store(body("how do I reset my router"), answer("hold the button"),
                         tenant="a")
    assert stored.entry_id is not None
    calibrator = cache.policies.calibration
    assert calibrator is not None
    calibrator.record(label(stored.entry_id, False, tenant="a"))
    calibrator.record(label(12345, False, tenant="a"))  # an entry the store does not hold
    assert calibrator.entry_cutoffs("a") == {stored.entry_id: 1.0, 12345: 1.0}
    cache.close()
    reopened = SemanticCache.open(config, embedder=CountingEmbedder())
    try:
        learned = reopened.policies.calibration
        assert learned is not None
        assert learned.entry_cutoffs("a") == {stored.entry_id: 1.0}
        miss = reopened.lookup(body("how do I reset my router please"), tenant="a")
        assert isinstance(miss, Miss) and miss.reason is MissReason.VERIFIER
        reopened.document_store.delete_labels()  # the roll-back
    finally:
        reopened.close()
    rolled_back = SemanticCache.open(config, embedder=CountingEmbedder())
    try:
        assert rolled_back.policies.entry_cutoffs("a") is None
    finally:
        rolled_back.close()


def test_an_entry_evicted_for_the_quotas_is_forgotten() -> None:
    cache = SemanticCache.open({**GREY, "capacity": {"entries": 2}}, embedder=CountingEmbedder())
    try:
        first = cache.store(body("how do I reset my router"), answer("hold the button"))
        assert first.entry_id is not None
        calibrator = cache.policies.calibration
        assert calibrator is not None
        calibrator.record(label(first.entry_id, False, tenant="default"))
        assert calibrator.entry_cutoffs("default") == {first.entry_id: 1.0}
        for text in ("what is the capital of peru", "how tall is the eiffel tower"):
            cache.store(body(text), answer("an answer"))
        assert cache.document_store.get(first.entry_id) is None  # evicted
        assert calibrator.entry_cutoffs("default") is None
    finally:
        cache.close()
