"""Pair features of the built-in verifier: what, besides one cosine, tells a paraphrase from
a near-miss.

Each feature compares the query with one candidate; all are cheap (a few microseconds of
Python per pair) and need nothing but the two texts, their unit vectors and a word-frequency
table shipped with the verifier:

================ ==========================================================================
feature          meaning
================ ==========================================================================
cos              cosine of the two sentence vectors
jaccard          overlap of the two sets of content words (stop words dropped, light stem)
unmatched_q/_c   content words of one side with no counterpart in the other
idf_q/_c         share of one side's information (IDF mass) carried by unmatched words
max_idf_q/_c     the rarest unmatched word of each side (a swapped name is rare)
numbers          the numbers, number words, months or weekdays differ (guard)
negation         the parity of negation cues differs (guard)
entities         capitalised names, identifiers or quoted strings differ (guard)
antonyms         one side has a word whose opposite the other has (guard)
wh               both sides ask with question words, and they differ (who / when / how many)
length           |log| of the ratio of the two word counts
order            disorder of the shared content words (swapped roles: "A to B" / "B to A")
min_words        word count of the shorter side
================ ==========================================================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import lru_cache
from itertools import pairwise

import numpy as np

from prismcache import guards

__all__ = ["NAMES", "Text", "content_words", "pair_features", "reordered", "text_features"]

NAMES = ("cos", "jaccard", "unmatched_q", "unmatched_c", "idf_q", "idf_c", "max_idf_q",
         "max_idf_c", "numbers", "negation", "entities", "antonyms", "wh", "length", "order",
         "min_words")

_STOP = frozenset("""
a an the is are was were be been being am do does did doing have has had having i me my mine
myself we us our ours you your yours he him his she her hers it its they them their theirs this
that these those there here of to in on at by for with about from into onto over under as than
then and or but if so because while what which who whom whose when where why how can could
would should will shall may might must please tell know want need like just also any some get
got go going s t ll ve re d m o y
""".split())
_WH = guards.QUESTION_WORDS
_HOW = frozenset(("many", "much", "long", "old", "far", "often", "big", "tall", "fast"))
_WORD = re.compile(r"[a-z0-9]+")
_SUFFIXES = ("ing", "ed", "es", "s", "ly")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> list[str]:
    """The stemmed content words of ``text``, in order (the IDF table's vocabulary)."""
    return _content(_WORD.findall(text.lower()))


def _content(words: list[str]) -> list[str]:
    return [_stem(w) for w in words if w not in _STOP]


class Text:
    """What the features read from one text, computed once (memoised by text)."""

    __slots__ = ("content", "content_set", "guard", "wh", "words")

    def __init__(self, text: str) -> None:
        words = _WORD.findall(text.lower())
        self.words = len(words)
        self.content = _content(words)
        self.content_set = frozenset(self.content)
        self.guard = guards.features(text)
        wh = {w for w in words if w in _WH}
        for i, w in enumerate(words[:-1]):
            if w == "how" and words[i + 1] in _HOW:
                wh.add("how " + words[i + 1])
        self.wh = frozenset(wh)


@lru_cache(maxsize=16384)
def text_features(text: str) -> Text:
    """The per-text part of the features (memoised: stored queries recur)."""
    return Text(text)


def pair_features(query: str, candidate: str, cosine: float, idf: Mapping[str, float],
                  default_idf: float) -> np.ndarray:
    """The :data:`NAMES` features of one (query, candidate) pair as a float64 row.

    ``idf`` maps content words (:func:`content_words`) to inverse document frequencies;
    unknown words get ``default_idf`` (rare).
    """
    q, c = text_features(query), text_features(candidate)
    only_q, only_c = q.content_set - c.content_set, c.content_set - q.content_set
    union = q.content_set | c.content_set

    def mass(words: frozenset[str]) -> float:
        return sum(idf.get(w, default_idf) for w in words)

    total_q, total_c = mass(q.content_set) or 1.0, mass(c.content_set) or 1.0
    return np.array([
        cosine,
        len(q.content_set & c.content_set) / len(union) if union else 1.0,
        len(only_q),
        len(only_c),
        mass(only_q) / total_q,
        mass(only_c) / total_c,
        max((idf.get(w, default_idf) for w in only_q), default=0.0),
        max((idf.get(w, default_idf) for w in only_c), default=0.0),
        float(guards.GUARD_TESTS["numbers"](q.guard, c.guard)),
        float(guards.GUARD_TESTS["negation"](q.guard, c.guard)),
        float(guards.GUARD_TESTS["entities"](q.guard, c.guard)),
        float(guards.GUARD_TESTS["antonyms"](q.guard, c.guard)),
        float(bool(q.wh) and bool(c.wh) and q.wh != c.wh),
        abs(math.log((q.words + 1) / (c.words + 1))),
        _disorder(q.content, c.content, c.content_set),
        float(min(q.words, c.words)),
    ], dtype=np.float64)


def reordered(query: str, candidate: str) -> bool:
    """Whether two or more content words shared by ``query`` and ``candidate`` appear in
    opposite orders ("18 in California, 2 in Nevada" / "18 in Nevada, 2 in California"): a
    sentence embedding barely sees word order, so such a pair can score near-verbatim while
    its roles are swapped. Pure; memoised per text like :func:`text_features`."""
    q, c = text_features(query), text_features(candidate)
    seq = _shared_positions(q.content, c.content, c.content_set)
    return any(a > b for a, b in pairwise(seq))  # linear: any inversion


def _shared_positions(q: list[str], c: list[str], c_set: frozenset[str]) -> list[int]:
    """Where each content word of ``q`` that ``c`` shares first appears in ``c``, in ``q``'s
    order (each word once)."""
    first: dict[str, int] = {}
    for i, w in enumerate(c):
        first.setdefault(w, i)
    return [first[w] for w in dict.fromkeys(q) if w in c_set]


def _disorder(q: list[str], c: list[str], c_set: frozenset[str]) -> float:
    """Share of pairs of shared words that appear in opposite orders (0: same order)."""
    seq = _shared_positions(q, c, c_set)
    if len(seq) < 2:
        return 0.0
    swapped = sum(1 for a in range(len(seq)) for b in range(a + 1, len(seq)) if seq[a] > seq[b])
    return swapped / (len(seq) * (len(seq) - 1) / 2)
