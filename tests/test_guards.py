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


@pytest.mark.parametrize(("query", "candidate"), [
    ("where was the man who founded Apple born", "where was the founder of Apple born"),
    ("what is the name of the city where the Titanic was built",
     "what is the name of the city the Titanic was built in"),
    ("who wrote the song that was played when Obama won", "who wrote the song played at Obama's win"),
    ("When my card expires what happens to my account?", "What do I do when my card expires?"),
])
def test_a_relative_question_word_does_not_change_what_a_sentence_asks(query: str,
                                                                      candidate: str) -> None:
    assert guards.check(query, candidate, ("question",)) is None


@pytest.mark.parametrize(("query", "candidate"), [
    ("who founded Apple", "where was Apple founded"),
    ("how and when did the war end", "how did the war end"),  # coordinated: both are asked
    ("who won the cup? where was it held?", "who won the cup"),  # each sentence asks
    ("what is 3.5 times 2. how do I check it", "what is 3.5 times 2"),
    ("tell me who won the 2010 world cup", "tell me where the 2010 world cup was held"),
    ("what do I need to show who I am", "what do I need to show why I am"),  # both have a clause
    ("what category was the hurricane when it hit florida",
     "what category was the hurricane how it hit florida"),
])
def test_different_questions_are_still_told_apart(query: str, candidate: str) -> None:
    assert guards.check(query, candidate, ("question",)) == "question"
