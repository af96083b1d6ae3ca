"""Labels from live traffic through a real proxy (uvicorn) and the fake upstream: agreement on
grey-zone misses, exploration of grey-zone hits, feedback on served hits, tenant isolation,
and the learned cut-off in /metrics and /admin/economics."""

from __future__ import annotations

import time
from collections.abc import Sequence

import httpx
import numpy as np
from proxy_support import ADMIN_TOKEN, Proxy, make_proxy, upstream, user  # noqa: F401

from prismcache.decision import Candidate, Query
from prismcache.labels import Label

ANSWER = "Open the settings page and choose reset password."
GREEK = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu", "nu", "xi", "omicron", "pi")  # no number words: the numbers guard
ADMIN = {"server": {"admin_token_env": "PRISM_ADMIN"}, "environ": {"PRISM_ADMIN": ADMIN_TOKEN}}


class FixedVerifier:
    """An in-memory verifier that gives every candidate the same probability."""

    name = "fixed"

    def __init__(self, p: float) -> None:
        self.p = p

    def probabilities(self, query: Query, candidates: Sequence[Candidate]) -> np.ndarray:
        return np.full(len(candidates), self.p)


def config(**policy: object) -> dict[str, object]:
    loose = {"threshold": 0.5, "ttl": "1h", "quota": 0.5, "verifier": "builtin",
             "verify_low": 0.3, "verify_high": 0.9999, "cutoff": 0.9, "target_precision": 0.95,
             "explore_rate": 0.0, **policy}
    return {"categories": {"loose": loose, "strict": {"threshold": 0.99}}}


def ask(proxy: Proxy, text: str, api_key: str = "sk-client-a") -> httpx.Response:
    with proxy.http(api_key=api_key) as http:
        reply = http.post("/v1/chat/completions", json={"model": "m1", "messages": user(text)})
    assert reply.status_code == 200, reply.text
    return reply


def wait_labels(proxy: Proxy, n: int) -> list[Label]:
    """The store's labels once there are ``n`` (they are recorded after the response)."""
    deadline = time.monotonic() + 10.0
    while True:
        found = proxy.cache.document_store.labels()
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_grey_zone_misses_are_labelled_from_the_fresh_answer(make_proxy, upstream) -> None:
    proxy = make_proxy(config(), verifiers={"builtin": FixedVerifier(0.6)})
    upstream.behaviour.text = ANSWER
    first = ask(proxy, "How do I reset my password?")
    assert first.headers["x-prism-cache"] == "miss"
    time.sleep(0.2)
    assert proxy.cache.document_store.labels() == []  # an empty cache: no candidate to label
    second = ask(proxy, "How can I reset my password?")  # grey zone, rejected (0.6 < 0.9)
    assert second.headers["x-prism-cache"] == "miss"
    [agreed] = wait_labels(proxy, 1)
    assert (agreed.same, agreed.source, agreed.probability) == (True, "agreement", 0.6)
    assert agreed.query == "How can I reset my password?"
    assert agreed.candidate == "How do I reset my password?"
    entry = proxy.cache.document_store.get(agreed.entry_id)
    assert entry is not None and agreed.tenant == entry.tenant
    upstream.behaviour.text = "Tomatoes grow best in warm sunny gardens."
    ask(proxy, "How would I reset my password?")
    labels = wait_labels(proxy, 2)
    assert [x.same for x in labels] == [True, False]
    assert upstream.generations == 3  # labels cost no extra upstream call


def test_labels_stay_in_their_tenant(make_proxy, upstream) -> None:
    proxy = make_proxy(config(), verifiers={"builtin": FixedVerifier(0.6)})
    upstream.behaviour.text = ANSWER
    ask(proxy, "How do I reset my password?", api_key="sk-client-a")
    ask(proxy, "How can I reset my password?", api_key="sk-client-b")  # b has no candidate
    ask(proxy, "How can I reset my password?", api_key="sk-client-a")
    [only] = wait_labels(proxy, 1)
    time.sleep(0.2)  # a stray label of b's would have arrived by now
    store = proxy.cache.document_store
    assert len(store.labels()) == 1
    tenants = {entry.tenant for entry in store.scan(documents=False)}
    assert len(tenants) == 2 and only.tenant in tenants
    other = (tenants - {only.tenant}).pop()
    assert store.labels(tenant=other) == []


def test_grey_zone_hits_are_explored_and_labelled(make_proxy, upstream) -> None:
    proxy = make_proxy(config(explore_rate=0.5), verifiers={"builtin": FixedVerifier(0.95)})
    upstream.behaviour.text = ANSWER
    ask(proxy, "How do I reset my password?")
    states = [ask(proxy, f"How do I reset my password? variant {w}").headers["x-prism-cache"]
              for w in GREEK]
    explored = states.count("miss")
    assert explored >= 1 and states.count("hit") >= 1  # 2**-16 chance each way to fail
    labels = wait_labels(proxy, explored)
    assert len(labels) == explored
    assert all(x.source == "explored" and x.same and x.probability == 0.95 for x in labels)
    assert upstream.generations == 1 + explored  # each explored request is one upstream call


def test_feedback_records_labels_and_removes_only_wrong_hits(make_proxy, upstream) -> None:
    proxy = make_proxy(config(), verifiers={"builtin": FixedVerifier(0.95)},
                       **ADMIN)  # type: ignore[arg-type]
    upstream.behaviour.text = ANSWER
    ask(proxy, "How do I reset my password?")
    hit = ask(proxy, "How can I reset my password?")
    assert hit.headers["x-prism-cache"] == "hit"
    entry = hit.headers["x-prism-entry"]
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with proxy.http() as http:
        right = http.post("/admin/feedback", headers=admin, json={"entry": entry, "correct": True})
        assert right.status_code == 200 and right.json()["labelled"] is True
        assert right.json()["removed"] is False
        bad = http.post("/admin/feedback", headers=admin, json={"entry": entry, "correct": "no"})
        assert bad.status_code == 400
        wrong = http.post("/admin/feedback", headers=admin,
                          json={"response": hit.json()["id"], "reason": "wrong answer"})
        assert wrong.status_code == 200 and wrong.json()["removed"] is True
        unknown = http.post("/admin/feedback", headers=admin, json={"response": "nope"})
        assert unknown.status_code == 404
        economics = http.get("/admin/economics", headers=admin).json()
        metrics = http.get("/metrics", headers=admin).text
    labels = proxy.cache.document_store.labels()
    assert [(x.same, x.source) for x in labels] == [(True, "feedback"), (False, "feedback")]
    assert labels[0].query == "How can I reset my password?" and labels[0].probability == 0.95
    assert proxy.entries() == 0
    [row] = [r for r in economics["calibration"]["categories"] if r["category"] == "loose"]
    assert (row["cutoff"], row["labels"]) == (0.9, 2)
    assert 'prismcache_learned_cutoff{category="loose"} 0.9' in metrics
    assert 'prismcache_labels_total{category="loose",source="feedback",same="false"} 1' in metrics


def test_a_streamed_answer_is_labelled_too(make_proxy, upstream) -> None:
    proxy = make_proxy(config(), verifiers={"builtin": FixedVerifier(0.6)})
    upstream.behaviour.text = ANSWER
    ask(proxy, "How do I reset my password?")
    with proxy.http() as http:
        streamed = http.post("/v1/chat/completions", json={
            "model": "m1", "stream": True, "messages": user("How can I reset my password?")})
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    [agreed] = wait_labels(proxy, 1)
    assert (agreed.same, agreed.source) == (True, "agreement")


def test_no_exploration_while_the_upstream_is_overloaded(make_proxy, upstream) -> None:
    proxy = make_proxy({**config(explore_rate=0.5),
                        "adaptive": {"enabled": True, "inflight_high": 1,
                                     "rise_per_second": 1000}},
                       verifiers={"builtin": FixedVerifier(0.95)})
    upstream.behaviour.text = ANSWER
    ask(proxy, "How do I reset my password?")
    adaptive = proxy.cache.policies.adaptive
    assert adaptive is not None
    for _ in range(3):  # three calls in flight against a mark of one: saturated
        adaptive.controller.signals.started("m1")
    deadline = time.monotonic() + 5.0
    while adaptive.controller.level("m1") < 1.0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert adaptive.controller.level("m1") == 1.0
    states = {ask(proxy, f"How do I reset my password? variant {i}").headers["x-prism-cache"]
              for i in GREEK}
    assert states == {"hit"}  # at explore_rate 0.5, 2**-16 odds of this without the rule
    assert upstream.generations == 1


def test_an_entry_whose_neighbour_disagrees_stops_serving_its_grey_zone(make_proxy,
                                                                         upstream) -> None:
    verifier = FixedVerifier(0.95)  # grey-zone candidates accepted (cut-off 0.9)
    proxy = make_proxy(config(), verifiers={"builtin": verifier},
                       **ADMIN)  # type: ignore[arg-type]
    upstream.behaviour.text = ANSWER
    ask(proxy, "How do I reset my password?")
    ask(proxy, "How do I reset my password?", api_key="sk-client-b")
    hit = ask(proxy, "How can I reset my password?")
    assert hit.headers["x-prism-cache"] == "hit"
    header = hit.headers["x-prism-entry"]
    entry = int(header, 16)
    verifier.p = 0.6  # rejected now: the next near request goes upstream and is labelled
    upstream.behaviour.text = "Tomatoes grow best in warm sunny gardens."
    ask(proxy, "How would I reset my password?")
    [different] = wait_labels(proxy, 1)
    assert (different.entry_id, different.same) == (entry, False)
    assert proxy.cache.policies.entry_cutoffs(different.tenant) == {entry: 1.0}
    verifier.p = 0.95
    again = ask(proxy, "How can I reset my password?")
    assert again.headers.get("x-prism-entry") != header  # never from the closed entry
    other = ask(proxy, "How can I reset my password?", api_key="sk-client-b")
    assert other.headers["x-prism-cache"] == "hit"  # b's own entry is not closed
    with proxy.http() as http:
        metrics = http.get("/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).text
    assert 'prismcache_adjusted_entries{category="loose",direction="closed"} 1' in metrics
