"""The category classifier on real data: held-apart CLINC150 test queries, by domain."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from prismcache.classify import CategoryRouter, EmbeddingClassifier, RuleClassifier
from prismcache.config import Rule, load_config
from prismcache.embedders import open_embedder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "clinc150"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"shared data not found at {DATA}")


@pytest.fixture(scope="module")
def clinc() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """20 training utterances per intent (3,000) and 600 held-apart test utterances, labelled
    by the intent's domain (10 domains)."""
    data = json.loads((DATA / "data_full.json").read_text("utf-8"))
    domains = json.loads((DATA / "domains.json").read_text("utf-8"))
    domain_of = {intent: d for d, names in domains.items() for intent in names}
    rng = random.Random(0)
    by_intent: dict[str, list[str]] = {}
    for text, intent in data["train"]:
        by_intent.setdefault(intent, []).append(text)
    train = [(t, domain_of[i]) for i, texts in sorted(by_intent.items())
             for t in rng.sample(texts, 20)]
    test = [(t, domain_of[i]) for t, i in rng.sample(data["test"], 600)]
    return train, test


@pytest.mark.slow
def test_held_apart_clinc150_queries_land_in_their_domain(clinc, tmp_path) -> None:
    train, test = clinc
    examples = tmp_path / "examples.jsonl"
    examples.write_text("\n".join(json.dumps({"text": t, "category": c}) for t, c in train))
    embedder = open_embedder("minilm")
    config = load_config({
        "embedder": "minilm", "rules": [], "default_category": "small_talk",
        "classifier": {"examples": str(examples), "min_confidence": 0.0},
        "categories": {d: {} for d in sorted({c for _, c in train})},
    })
    vectors = np.concatenate([embedder.embed([t for t, _ in train][i:i + 256])
                              for i in range(0, len(train), 256)])
    model = EmbeddingClassifier.fit(vectors, [c for _, c in train], kind="logistic")
    router = CategoryRouter(config, model)
    test_vectors = embedder.embed([t for t, _ in test])
    predicted = [router.by_vector(v).category for v in test_vectors]
    accuracy = float(np.mean([p == c for p, (_, c) in zip(predicted, test, strict=True)]))
    print(f"\nCLINC150 domain accuracy on {len(test)} held-apart test queries: {accuracy:.3f}")
    assert accuracy >= 0.85


def test_the_shipped_classifier_routes_obvious_queries() -> None:
    from prismcache import SemanticCache

    cache = SemanticCache.open({"store": "memory://"})
    router = cache._router  # the same router lookups use
    cases = {
        "Natalia sold clips to 48 of her friends in April. How many clips did she sell?": "math",
        "who sang the original version of hallelujah": "factual",
        "I still have not received my new card, what should I do?": "support",
        "tell me a joke": "conversation",
    }
    for text, expected in cases.items():
        got = router.by_text(text) or router.by_vector(cache._embed(text))
        assert got.category == expected, (text, got)
    cache.close()


def test_rules_match_whole_words_and_phrases() -> None:
    rules = RuleClassifier([Rule(category="volatile", keywords=("stock price", "news")),
                            Rule(category="code", regex=r"\bdef \w+\(")])
    assert rules.classify("what's the stock   price of ACME") == "volatile"
    assert rules.classify("newsletter signup") is None
    assert rules.classify("def f(x): return x") == "code"
