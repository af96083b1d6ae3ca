"""The decision module on both sides of every bound, and the verifier seam's contract."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from conftest import chat, reply
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prismcache import SemanticCache, load_config
from prismcache.config import CategoryPolicy
from prismcache.decision import Candidate, MissReason, Outcome, Query, decide
from prismcache.errors import ConfigError, VerifierError
from prismcache.verifiers import open_verifier, valid_spec
from prismcache.verifiers.features import reordered

POLICY = CategoryPolicy(threshold=0.9, verifier="builtin", verify_low=0.8, verify_high=0.97,
                        cutoff=0.6, guards=("numbers",))
QUERY = Query(text="how do i reset my password")


class Fixed:
    """An in-memory verifier that answers given probabilities, in order, and records calls."""

    name = "fixed"

    def __init__(self, *probabilities: float) -> None:
        self.probabilities_ = list(probabilities)
        self.calls: list[list[str]] = []

    def probabilities(self, query: Query, candidates: Sequence[Candidate]) -> np.ndarray:
        self.calls.append([c.text for c in candidates])
        return np.array(self.probabilities_[: len(candidates)], dtype=float)


def candidate(similarity: float, text: str = "how can i reset my password", entry_id: int = 1
              ) -> Candidate:
    return Candidate(entry_id=entry_id, text=text, similarity=similarity)


# -- the bounds -----------------------------------------------------------------------------


def test_no_candidate_is_an_empty_miss() -> None:
    verdict = decide(QUERY, [], POLICY, Fixed())
    assert not verdict.hit and verdict.reason is MissReason.EMPTY


@pytest.mark.parametrize(("similarity", "asked"), [(0.7999, False), (0.8, True)])
def test_the_lower_bound_decides_whether_the_verifier_is_asked(similarity, asked) -> None:
    verifier = Fixed(0.99)
    verdict = decide(QUERY, [candidate(similarity)], POLICY, verifier)
    assert bool(verifier.calls) is asked
    assert verdict.hit is asked
    if not asked:
        assert verdict.reason is MissReason.BELOW_THRESHOLD
        assert verdict.outcomes[0][0] is Outcome.BELOW


@pytest.mark.parametrize(("similarity", "asked"), [(0.9699, True), (0.97, False)])
def test_at_the_upper_bound_the_verifier_is_not_asked(similarity, asked) -> None:
    verifier = Fixed(0.0)  # would reject everything it is asked about
    verdict = decide(QUERY, [candidate(similarity)], POLICY, verifier)
    assert bool(verifier.calls) is asked
    assert verdict.hit is not asked
    if not asked:
        assert verdict.probability == 1.0


@pytest.mark.parametrize(("p", "served"), [(0.5999, False), (0.6, True)])
def test_the_cutoff_applies_to_the_probability(p, served) -> None:
    verdict = decide(QUERY, [candidate(0.9)], POLICY, Fixed(p))
    assert verdict.hit is served
    if served:
        assert verdict.probability == pytest.approx(p)
    else:
        assert verdict.reason is MissReason.VERIFIER and verdict.detail.startswith("p=")


def test_guards_reject_in_every_zone_before_the_verifier_is_asked() -> None:
    verifier = Fixed(1.0)
    for similarity in (0.85, 0.99):
        verdict = decide(Query(text="flights on may 3"),
                         [candidate(similarity, "flights on may 5")], POLICY, verifier)
        assert verdict.reason is MissReason.GUARD and verdict.detail == "numbers"
    assert not verifier.calls


def test_without_a_verifier_the_threshold_alone_decides() -> None:
    policy = CategoryPolicy(threshold=0.9, guards=())
    assert not decide(QUERY, [candidate(0.8999)], policy).hit
    assert decide(QUERY, [candidate(0.9)], policy).served == 1


def test_a_reordered_near_verbatim_candidate_is_asked_about_not_served_blind() -> None:
    swapped = Query(text="flights from london to paris tomorrow")
    verifier = Fixed(0.0)
    verdict = decide(swapped, [candidate(0.995, "flights from paris to london tomorrow")],
                     POLICY, verifier)
    assert verifier.calls == [["flights from paris to london tomorrow"]]
    assert verdict.reason is MissReason.VERIFIER
    agreeing = decide(swapped, [candidate(0.995, "flights from paris to london tomorrow")],
                      POLICY, Fixed(0.9))
    assert agreeing.served == 1 and agreeing.probability == pytest.approx(0.9)


def test_the_shipped_verifier_rejects_swapped_roles_above_the_upper_bound() -> None:
    query = Query(text="20 chapters (18 in California, 2 in Nevada)")
    swapped = candidate(0.999, "20 chapters (18 in Nevada, 2 in California)")
    verdict = decide(query, [swapped], POLICY, open_verifier("builtin"))
    assert verdict.reason is MissReason.VERIFIER


def test_without_a_verifier_a_reordered_candidate_follows_the_threshold() -> None:
    policy = CategoryPolicy(threshold=0.9, guards=())
    verdict = decide(Query(text="flights from london to paris"),
                     [candidate(0.95, "flights from paris to london")], policy)
    assert verdict.served == 1


@pytest.mark.parametrize(("query", "other", "expected"), [
    ("flights from london to paris", "flights from paris to london", True),
    ("how do i reset my password", "how can i reset my password", False),
    ("reset password", "password", False),  # fewer than two shared words: no order to compare
    ("the cat sat", "the cat sat on the mat", False),
])
def test_reordered_compares_the_order_of_shared_content_words(query, other, expected) -> None:
    assert reordered(query, other) is expected


# -- top-k ------------------------------------------------------------------------------------


def test_the_most_probable_candidate_wins_not_the_nearest() -> None:
    near = candidate(0.95, "how do i reset my pin", entry_id=1)
    right = candidate(0.9, "how can i reset my password", entry_id=2)
    verdict = decide(QUERY, [near, right], POLICY, Fixed(0.3, 0.9))
    assert verdict.served == 2
    assert [o for o, _, _ in verdict.outcomes] == [Outcome.VERIFIER, Outcome.SERVED]


def test_an_upper_zone_candidate_beats_a_grey_one() -> None:
    grey = candidate(0.9, entry_id=1)
    close = candidate(0.98, entry_id=2)
    verdict = decide(QUERY, [close, grey], POLICY, Fixed(0.99))
    assert verdict.served == 2 and verdict.outcomes[1][0] is Outcome.ACCEPTED


def test_a_failing_verifier_raises_for_the_cache_to_fail_open() -> None:
    class Broken(Fixed):
        def probabilities(self, query: Query, candidates: Sequence[Candidate]) -> np.ndarray:
            raise VerifierError("judge down")

    with pytest.raises(VerifierError):
        decide(QUERY, [candidate(0.9)], POLICY, Broken())


# -- the seam: every built-in verifier honours the contract -------------------------------------


@pytest.fixture(params=["builtin"])
def verifier(request):
    return open_verifier(request.param)


def test_contract_probabilities_in_order_and_in_range(verifier) -> None:
    candidates = [candidate(0.93, "how can i reset my password", 1),
                  candidate(0.9, "how do i not reset my password", 2),
                  candidate(0.85, "how do i reset my pin", 3)]
    p = verifier.probabilities(QUERY, candidates)
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    assert np.allclose(verifier.probabilities(QUERY, candidates[::-1]), p[::-1])
    assert verifier.probabilities(QUERY, []).shape == (0,)
    assert isinstance(verifier.name, str) and verifier.name


@pytest.mark.slow
def test_contract_a_paraphrase_scores_above_its_near_misses(verifier) -> None:
    from prismcache.embedders import open_embedder

    embedder = open_embedder("minilm")  # real cosines: a verifier reads them too
    cases = [("how do i reset my password", "i forgot my password, how do i change it",
              ["how do i not reset my password", "how do i reset my pin"]),
             ("flights from london to paris", "show me flights from london to paris",
              ["flights from paris to london"]),
             ("what is the capital of france", "what's the capital city of france",
              ["what is the capital of germany", "what is the population of france"]),
             ("when was abraham lincoln born", "what year was abraham lincoln born",
              ["when did abraham lincoln die"])]
    for query, same, different in cases:
        vectors = embedder.embed([query, same, *different])
        candidates = [candidate(float(vectors[0] @ v), text, i)
                      for i, (text, v) in enumerate(zip([same, *different], vectors[1:],
                                                        strict=True))]
        p = verifier.probabilities(Query(text=query), candidates)
        assert p[0] > p[1:].max(), (query, p)


def test_specs_are_checked() -> None:
    assert valid_spec("none") and valid_spec("builtin") and valid_spec("llm:http://h/v1?model=m")
    assert not valid_spec("word2vec")
    with pytest.raises(ConfigError):
        load_config({"categories": {"code": {"verifier": "word2vec"}}})
    with pytest.raises(ConfigError):
        load_config({"categories": {"code": {"verify_low": 0.9, "verify_high": 0.8}}})
    with pytest.raises(ConfigError):
        open_verifier("cross-encoder:/no/such/model")
    with pytest.raises(ConfigError):
        open_verifier("llm:http://127.0.0.1:9/v1")  # no model=


# -- the property: the verifier never turns a cross-partition candidate into a hit -------------


class YesMan(Fixed):
    """Accepts everything: only the partitioning can keep answers apart."""

    def probabilities(self, query: Query, candidates: Sequence[Candidate]) -> np.ndarray:
        return np.ones(len(candidates))


ISOLATION = {
    "store": "memory://", "embedder": "hash:32", "classifier": {"examples": None}, "rules": [],
    "categories": {"general": {"threshold": 0.9, "guards": [], "verifier": "builtin",
                               "verify_low": 0.000001, "verify_high": 1.0, "cutoff": 0.0}},
}
TENANTS, MODELS, SYSTEMS = ("acme", "globex"), ("m1", "m2"), (None, "be terse")
QUERIES = ("cancel it", "cancel it now", "please cancel it", "cancel my order")
requests = st.tuples(st.sampled_from(TENANTS), st.sampled_from(MODELS),
                     st.sampled_from(SYSTEMS), st.sampled_from(QUERIES))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(("store", "lookup")), requests), min_size=1,
                max_size=30), st.sampled_from(("yes-man", "builtin")))
def test_the_verifier_never_serves_across_partitions(ops, which) -> None:
    config = load_config(ISOLATION)
    from prismcache.embedders import open_embedder
    from prismcache.stores import open_store

    verifiers = {"builtin": YesMan() if which == "yes-man" else open_verifier("builtin")}
    cache = SemanticCache(config, store=open_store("memory://"),
                          embedder=open_embedder("hash:32"), verifiers=verifiers)
    owner: dict[int, tuple] = {}
    try:
        for kind, (tenant, model, system, query) in ops:
            body = chat(query, model=model, system=system)
            if kind == "store":
                stored = cache.store(body, reply(query), tenant=tenant)
                owner[stored.entry_id] = (tenant, model, system)
            else:
                result = cache.lookup(body, tenant=tenant)
                if result.hit:
                    assert owner[result.entry_id] == (tenant, model, system)
    finally:
        cache.close()


def test_the_yes_man_property_is_not_vacuous() -> None:
    config = load_config(ISOLATION)
    from prismcache.embedders import open_embedder
    from prismcache.stores import open_store

    cache = SemanticCache(config, store=open_store("memory://"),
                          embedder=open_embedder("hash:32"), verifiers={"builtin": YesMan()})
    cache.store(chat("cancel it"), reply("x"), tenant="acme")
    assert all(cache.lookup(chat(q), tenant="acme").hit for q in QUERIES)
    cache.close()


# -- explain ----------------------------------------------------------------------------------


def test_explain_shows_each_candidate_and_counts_nothing(make_cache) -> None:
    cache = make_cache({"categories": {"strict": {"threshold": 0.3, "guards": ["negation"]}}})
    cache.store(chat("cancel my subscription"), reply("c"), tenant="t", category="strict")
    before = cache.stats()["strict"].lookups
    explained = cache.explain(chat("don't cancel my subscription"), tenant="t",
                              category="strict")
    assert not explained.result.hit and explained.result.reason is MissReason.GUARD
    assert [c.outcome for c in explained.candidates] == ["guard"]
    assert explained.candidates[0].query == "cancel my subscription"
    assert explained.as_json()["result"]["reason"] == "guard"
    assert cache.stats()["strict"].lookups == before
    hit = cache.explain(chat("cancel my subscription please"), tenant="t", category="strict")
    assert hit.result.hit and hit.candidates[0].outcome == "served"


# -- the llm judge, against a real HTTP judge on loopback ---------------------------------------


def _judge_app(answers: list[dict]):
    """A judge speaking the chat API: 'yes' with logprob p when the two requests in the prompt
    share every word, else 'no'; ``answers`` records each request."""
    import math
    import re

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat_completions(request: Request) -> JSONResponse:
        body = await request.json()
        answers.append(body)
        prompt = body["messages"][0]["content"]
        a = re.search(r"Request A: (.*)\n", prompt)[1]
        b = re.search(r"Request B: (.*)\n", prompt)[1]
        same = set(a.lower().split()) == set(b.lower().split())
        p = 0.9 if same else 0.2
        top = [{"token": "yes", "logprob": math.log(p)},
               {"token": "no", "logprob": math.log(1 - p)}]
        return JSONResponse({"choices": [{"index": 0, "finish_reason": "length",
                                          "message": {"role": "assistant",
                                                      "content": "yes" if same else "no"},
                                          "logprobs": {"content": [{"token": "yes",
                                                                    "top_logprobs": top}]}}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])])


def test_the_llm_judge_verifier_honours_the_contract() -> None:
    from fake_upstream import ServerThread

    answers: list[dict] = []
    server = ServerThread(_judge_app(answers)).start()
    try:
        judge = open_verifier(f"llm:{server.url}/v1?model=judge-1&timeout=5")
        candidates = [candidate(0.9, "my password how do i reset", 1),
                      candidate(0.9, "how do i reset my pin", 2)]
        p = judge.probabilities(QUERY, candidates)
        assert p.shape == (2,) and p[0] == pytest.approx(0.9) and p[1] == pytest.approx(0.2)
        assert answers[0]["model"] == "judge-1" and answers[0]["temperature"] == 0
        assert judge.probabilities(QUERY, []).shape == (0,)
    finally:
        server.stop()
    with pytest.raises(VerifierError):  # the judge is gone: the cache fails open
        judge.probabilities(QUERY, candidates)
    judge.close()


def test_the_shipped_trees_score_as_a_plain_walk_of_each_tree() -> None:
    from prismcache.verifiers.builtin import Trees, load_model

    d = load_model()
    trees = Trees(feature=d["feature"], threshold=d["threshold"], left=d["left"],
                  right=d["right"], leaf=d["leaf"], value=d["value"],
                  missing_left=d["missing_left"], baseline=float(d["baseline"]),
                  depth=int(d["depth"]))
    x = np.random.default_rng(0).normal(size=(20, int(d["feature"].max()) + 1)) * 2

    def walk(row: np.ndarray) -> float:
        total = float(d["baseline"])
        for t in range(d["feature"].shape[0]):
            n = 0
            while not d["leaf"][t, n]:
                go_left = row[d["feature"][t, n]] <= d["threshold"][t, n]
                n = d["left"][t, n] if go_left else d["right"][t, n]
            total += d["value"][t, n]
        return total

    assert np.allclose(trees.raw(x), [walk(row) for row in x])
