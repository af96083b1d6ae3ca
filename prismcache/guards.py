"""Lexical guards: checks a semantic match must pass besides the similarity threshold.

Sentence embeddings score some pairs as near-duplicates although their answers differ
(GPTCache#694: a reversed question scored 0.83-0.9997). No threshold separates them from true
paraphrases, so after the threshold each candidate is compared with the query by cheap,
deterministic features of the two texts. A guard that fires turns a would-be hit into a miss:
a wrong cached answer is worse than a miss, so the guards err towards rejecting.

========== =====================================================================================
guard      rejects when
========== =====================================================================================
numbers    the numbers differ: digits, number words, ordinals, months and weekdays
           ("flights on May 3" / "May 5"; GSM8K problems that differ in one value)
negation   one text is negated and the other is not, by the parity of negation cues
           ("cancel my subscription" / "don't cancel my subscription")
entities   capitalised names, acronyms, identifiers or quoted strings differ, or the same pair
           is linked in the opposite direction ("London to Paris" / "Paris to London"); a
           possessive names its base ("Apple's"), an acronym the words it spells ("US" /
           "United States", "DoD" / "Department of Defense"; two letters by names only)
antonyms   one text uses a word whose opposite the other uses ("sort ascending" / "descending";
           "basic plan" / "premium plan")
question   both texts ask with question words, and different ones ("when was X born" / "where
           was X born"; "what time" counts as "when", "how come" as "why"). A sentence asks
           with its first question word (and those joined to it: "how and when"); a later one
           opens a clause ("where was the man who founded Apple born"), which counts only
           when both texts have one ("show who I am" / "show why I am")
scope      both texts use scope words (all, every, any, always, most, total, ...), and different
           ones ("all my orders" / "my last order"; "always" / "sometimes")
========== =====================================================================================

>>> check("cancel my subscription", "don't cancel my subscription", ("negation",))
'negation'
>>> check("how do I reset my password", "how can I reset my password", ("numbers", "negation"))
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["GUARD_TESTS", "QUESTION_WORDS", "Features", "check", "features"]

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
_SENTENCE_END = re.compile(r"[.?!]\s")
_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
# a quote opens after no letter and closes before none: the apostrophes of "Winn's
# governor's" quote nothing
_QUOTED = re.compile(r"(?<![A-Za-z])[\"“”'`]([^\"“”'`]{2,60})[\"“”'`](?![A-Za-z])")
_IDENTIFIER = re.compile(r"\b\w*(?:_\w+|[a-z][A-Z]\w*|\.\w+\()\w*")
_DIRECTED = re.compile(r"\b(?:from\s+)?([a-z][a-z]+)\s+"
                       r"(?:to|into|->|vs\.?|versus|than)\s+([a-z][a-z]+)")

_NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty "
    "ninety hundred thousand million billion trillion half quarter third dozen double triple "
    "first second fourth fifth sixth seventh eighth ninth tenth once twice "
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday".split()
)
_NEGATIONS = frozenset(
    "not no never none nothing nobody nowhere neither nor without cannot unable "
    "cant dont doesnt didnt isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt "
    "havent hadnt".split()
)
_PRONOUNS = frozenset("i i'm i've i'd i'll ok okay".split())
_DIRECTION_STOP = frozenset("how what way want need going have able used due is are".split())
_ANTONYM_PAIRS = (
    ("ascending", "descending"), ("asc", "desc"), ("increase", "decrease"),
    ("increasing", "decreasing"), ("buy", "sell"), ("buying", "selling"), ("before", "after"),
    ("min", "max"), ("minimum", "maximum"), ("enable", "disable"), ("add", "remove"),
    ("upload", "download"), ("import", "export"), ("encrypt", "decrypt"), ("encode", "decode"),
    ("left", "right"), ("first", "last"), ("open", "close"), ("lock", "unlock"),
    ("start", "stop"), ("on", "off"), ("up", "down"), ("credit", "debit"),
    ("deposit", "withdraw"), ("deposit", "withdrawal"), ("send", "receive"), ("sent", "received"),
    ("basic", "premium"), ("largest", "smallest"), ("biggest", "smallest"),
    ("highest", "lowest"), ("more", "less"), ("above", "below"), ("north", "south"),
    ("east", "west"), ("upper", "lower"), ("uppercase", "lowercase"), ("true", "false"),
    ("push", "pull"), ("read", "write"), ("input", "output"), ("inner", "outer"),
    ("horizontal", "vertical"), ("row", "column"), ("rows", "columns"), ("oldest", "newest"),
    ("earliest", "latest"), ("past", "future"), ("win", "lose"), ("hot", "cold"),
    ("male", "female"), ("plus", "minus"), ("add", "subtract"), ("multiply", "divide"),
    ("celsius", "fahrenheit"), ("am", "pm"), ("import", "export"), ("join", "leave"),
    ("install", "uninstall"), ("subscribe", "unsubscribe"), ("include", "exclude"),
    ("inside", "outside"), ("internal", "external"), ("public", "private"),
    ("sync", "async"), ("synchronous", "asynchronous"), ("client", "server"),
    ("encode", "decode"), ("compress", "decompress"), ("serialize", "deserialize"),
    ("cheapest", "most"), ("fastest", "slowest"), ("long", "short"), ("longest", "shortest"),
)
_OPPOSITE: dict[str, frozenset[str]] = {}
for _a, _b in _ANTONYM_PAIRS:
    _OPPOSITE[_a] = _OPPOSITE.get(_a, frozenset()) | {_b}
    _OPPOSITE[_b] = _OPPOSITE.get(_b, frozenset()) | {_a}


#: the question words (the guard reads the first of each sentence; the verifier all of them)
QUESTION_WORDS = frozenset("who whom whose what which when where why how".split())
# Question words that ask the same thing another way.
_WH_SAME = {("what", "time"): "when", ("what", "year"): "when", ("what", "date"): "when",
            ("which", "year"): "when", ("what", "day"): "when", ("how", "come"): "why",
            ("what", "place"): "where", ("which", "place"): "where"}
_SCOPE = frozenset("all every each any always sometimes usually often most least both either "
                   "whole entire total average only single half last first latest recent next "
                   "this everyone someone anyone everything something anything".split())


@dataclass(frozen=True, slots=True)
class Features:
    """What the guards compare, extracted once per text."""

    words: frozenset[str]
    numbers: tuple[tuple[str, int], ...]
    negated: bool
    entities: frozenset[str]
    directed: frozenset[tuple[str, str]]
    asks: frozenset[str] = frozenset()  # the question words, read as _WH_SAME says
    leads: frozenset[str] = frozenset()  # those that lead a sentence (see _question_words)
    scope: frozenset[str] = frozenset()
    tokens: tuple[str, ...] = ()  # the lower-cased words in order, possessives cut to their base


@lru_cache(maxsize=8192)
def features(text: str) -> Features:
    """Extract the guard features of ``text`` (memoised: stored queries recur)."""
    matches = list(_WORD.finditer(text))
    tokens = [match.group() for match in matches]
    lower = [t.lower().replace("’", "'") for t in tokens]
    # a possessive names what its base names: "Apple's revenue" / "the revenue of Apple"
    bases = [w[:-2] if w.endswith("'s") and len(w) > 2 else w for w in lower]
    words = frozenset(lower) | frozenset(bases)

    numbers = Counter(n.replace(",", "") for n in _NUMBER.findall(text))
    numbers.update(w for w in lower if w in _NUMBER_WORDS)
    # "may" is a month only next to a number ("May 3"), otherwise a modal verb.
    if "may" in numbers and not _NUMBER.search(text):
        del numbers["may"]
    # "second" as a unit of time or "first" as an ordinal both count; "one" as a pronoun is
    # rare enough in questions to accept the occasional extra miss.

    negations = sum(
        1 for w in lower if w in _NEGATIONS or w.endswith("n't") or w.endswith("n’t")
    )

    entities: set[str] = set()
    for i, token in enumerate(tokens):
        if lower[i] in _PRONOUNS:
            continue
        starts_sentence = i == 0 or text[: text.find(token)].rstrip()[-1:] in ".?!:"
        acronym = token.isupper() and len(token) > 1 and not token.isdigit()
        if acronym or (token[:1].isupper() and not starts_sentence
                       and token.lower() not in _NUMBER_WORDS):
            entities.add(bases[i])
    entities.update(m.lower() for m in _QUOTED.findall(text))
    entities.update(m.lower() for m in _IDENTIFIER.findall(text) if len(m) > 2)

    asks, leads = _question_words(text, lower, [match.span() for match in matches])
    directed = frozenset(
        (a, b)
        for a, b in _DIRECTED.findall(text.lower())
        if a not in _DIRECTION_STOP and b not in _DIRECTION_STOP and a != b
    )
    return Features(
        words=words,
        numbers=tuple(sorted(numbers.items())),
        negated=negations % 2 == 1,
        entities=frozenset(entities),
        directed=directed,
        asks=asks,
        leads=leads,
        scope=words & _SCOPE,
        tokens=tuple(bases),
    )


def _question_words(text: str, lower: list[str], spans: list[tuple[int, int]]
                    ) -> tuple[frozenset[str], frozenset[str]]:
    """The question words of ``text`` read as :data:`_WH_SAME` says, and those that lead a
    sentence: its first (with those joined to it: "how and when"). A later one opens a relative
    or subordinate clause ("where was the man **who** founded Apple born"). ``lower`` and
    ``spans``: the lower-cased words of ``text`` and where each stands in it."""
    asks: set[str] = set()
    leads: set[str] = set()
    asked = False  # the current sentence's question word is found
    for i, w in enumerate(lower):
        if i and _SENTENCE_END.search(text, spans[i - 1][1], spans[i][0]):
            asked = False
        if w not in QUESTION_WORDS:
            continue
        ask = _WH_SAME.get((w, lower[i + 1] if i + 1 < len(lower) else ""), w)
        asks.add(ask)
        coordinated = i >= 2 and lower[i - 1] in ("and", "or") and lower[i - 2] in QUESTION_WORDS
        if not asked or coordinated:
            leads.add(ask)
            asked = True
    return frozenset(asks), frozenset(leads)


def _numbers(q: Features, c: Features) -> bool:
    return q.numbers != c.numbers


def _negation(q: Features, c: Features) -> bool:
    return q.negated != c.negated


def _entities(q: Features, c: Features) -> bool:
    if q.entities != c.entities and (q.entities or c.entities):
        # Capitalisation is unreliable in typed queries; compare case-insensitively and only
        # reject when a name appears in one text and not anywhere in the other.
        only_q = {e for e in q.entities - c.entities if not set(e.split()) <= c.words}
        only_c = {e for e in c.entities - q.entities if not set(e.split()) <= q.words}
        # an acronym and the words it abbreviates name one thing ("US" / "United States")
        for acronyms, names, other in ((only_q, only_c, c), (only_c, only_q, q)):
            for acronym in [e for e in acronyms if " " not in e]:
                spelled = _spelled(acronym, other.tokens, other.entities)
                if spelled:
                    acronyms.discard(acronym)
                    names.difference_update(spelled)
        if only_q or only_c:
            return True
    return any((b, a) in c.directed and (a, b) not in c.directed for a, b in q.directed)


_ACRONYM_GLUE = frozenset(("of", "the", "and", "for", "&"))


def _spelled(acronym: str, tokens: tuple[str, ...], names: frozenset[str]) -> frozenset[str]:
    """The words of the first run of ``tokens`` whose initials spell ``acronym`` (2-6
    letters; "of", "the", "and", "for" inside the run are skipped: "Department of Defense"
    spells "dod"), or an empty set. A two-letter acronym is spelled by names only (capitalised
    words, ``names``), or "an interesting" would spell "AI"."""
    if not 2 <= len(acronym) <= 6 or not acronym.isalpha():
        return frozenset()
    for start, first in enumerate(tokens):
        if first[:1] != acronym[0] or first in _ACRONYM_GLUE:
            continue
        run, j = [first], start + 1
        while len(run) < len(acronym) and j < len(tokens):
            if tokens[j] in _ACRONYM_GLUE and tokens[j][:1] != acronym[len(run)]:
                j += 1
                continue
            if tokens[j][:1] != acronym[len(run)]:
                break
            run.append(tokens[j])
            j += 1
        if len(run) == len(acronym) and (len(acronym) > 2 or names.issuperset(run)):
            return frozenset(run)
    return frozenset()


def _antonyms(q: Features, c: Features) -> bool:
    for word in q.words ^ c.words:
        opposites = _OPPOSITE.get(word)
        if opposites is None:
            continue
        other = c.words if word in q.words else q.words
        mine = q.words if word in q.words else c.words
        if any(o in other and o not in mine for o in opposites):
            return True
    return False


def _question(q: Features, c: Features) -> bool:
    if not q.asks or not c.asks or q.asks == c.asks:
        return False
    # one text's extra clause ("the man who founded Apple") does not change what it asks
    return q.leads != c.leads or bool(q.asks - q.leads) and bool(c.asks - c.leads)


def _scope(q: Features, c: Features) -> bool:
    return bool(q.scope) and bool(c.scope) and q.scope != c.scope


#: guard name -> its test on two texts' :class:`Features` (``True``: the pair differs)
GUARD_TESTS = {"numbers": _numbers, "negation": _negation, "entities": _entities,
               "antonyms": _antonyms, "question": _question, "scope": _scope}


def check(query: str, candidate: str, guards: Sequence[str]) -> str | None:
    """Return the name of the first guard in ``guards`` that rejects serving the answer stored
    for ``candidate`` to ``query``, or ``None`` when every guard passes."""
    if query == candidate:
        return None
    q, c = features(query), features(candidate)
    for name in guards:
        if GUARD_TESTS[name](q, c):
            return name
    return None
