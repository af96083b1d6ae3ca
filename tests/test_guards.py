"""The lexical guards on pairs that name the same things in other words, and pairs that do not."""

from __future__ import annotations

import pytest

from prismcache import guards


@pytest.mark.parametrize(("query", "candidate"), [
    ("What is Apple's revenue", "what is the revenue of Apple"),
    ("James Madison is Richard Winn's governor's appointer.",
     "James Madison is the appointer of the governor of Richard Winn."),
    ("West Germany is the Dornier Aerodyne's origin.",
     "West Germany is the national origin of Dornier Aerodyne."),
    ("Dan Patrick’s show", "the Dan Patrick show"),
    ("the US Navy's command structure", "the command structure of the United States Navy"),
    ("NYC weather today", "New York City weather today"),
    ("who heads the DoD", "who heads the Department of Defense"),
    ("AWS pricing", "Amazon Web Services pricing"),
])
def test_a_possessive_or_an_acronym_names_what_its_base_or_its_words_name(query: str, candidate: str) -> None:
    assert guards.check(query, candidate, ("entities",)) is None


@pytest.mark.parametrize(("query", "candidate"), [
    ("What is Apple's revenue", "what is the revenue of Google"),
    ("it's Tom's car", "it is Jim's car"),
    ("say 'hello world' in french", "say 'goodbye world' in french"),
    ("flights from London to Paris", "flights from Paris to London"),
    ("the US Navy", "the United Kingdom Navy"),
    ("IBM stock", "Intel stock"),
    ("AI jobs list", "an interesting jobs list"),  # two letters: spelled by names only
])
def test_different_names_are_still_told_apart(query: str, candidate: str) -> None:
    assert guards.check(query, candidate, ("entities",)) == "entities"


def test_apostrophes_inside_words_quote_nothing() -> None:
    assert guards.features("the governor is Richard Winn's").entities == {"richard", "winn"}
