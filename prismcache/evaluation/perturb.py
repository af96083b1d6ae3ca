"""Near-miss pairs made by perturbation: one small edit that changes the answer.

Sentence embeddings score these pairs as near-duplicates although a different answer is
required (``DESIGN.md``, "Known ways embedding caches serve wrong answers"). Each function
returns the edited text, or ``None`` when the edit does not apply to the text:

============ =========================================================================
kind         edit
============ =========================================================================
negation     remove a negation, or add one after the first auxiliary ("is" -> "is not")
             or before an imperative ("cancel it" -> "don't cancel it")
number       change one integer, month or weekday ("May 3" -> "May 7")
entity       replace a named value (a city, an artist, a restaurant, ... from the SNIPS
             slot lists, or a capitalised name) with another of the same type
argorder     swap the two sides of "X to/into/than/vs Y" ("London to Paris" -> "Paris
             to London")
scope        change a quantifier or scope word ("all my orders" -> "my last orders")
question     ask another question about the same thing ("when was X born" -> "where ...")
reworded     (same answer) the text in a neutral wrapper ("can you tell me ...")
============ =========================================================================

Used to train the built-in verifier (``tools/train_verifier.py``, on train splits) and to
measure it (``bench/quality.py``, on test splits), each kind reported separately.

>>> rng = np.random.default_rng(0)
>>> negation("how do i cancel my card", rng)
'how do i not cancel my card'
>>> argorder("flights from London to Paris", rng)
'flights from Paris to London'
>>> scope("show all my orders", rng)
'show my last my orders'
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from prismcache.evaluation.datasets import change_one_number
from prismcache.guards import QUESTION_WORDS

__all__ = ["KINDS", "argorder", "entity", "load_entities", "negation", "number", "perturb",
           "question", "reworded", "scope"]

_NEGATED = re.compile(r"\b(?:not|never|no)\b ?|n't\b", re.IGNORECASE)
_AUX = re.compile(r"\b(is|are|was|were|can|could|do|does|did|will|would|should|has|have|am)\b",
                  re.IGNORECASE)
_SUBJECT = re.compile(r"\s+(?:i|you|we|they|he|she|it|my \w+|the \w+)\b", re.IGNORECASE)
_WH = QUESTION_WORDS
_MONTHS = ("january february march april may june july august september october november "
           "december").split()
_DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_SCOPE = (("all", "my last"), ("every", "one"), ("always", "sometimes"), ("any", "this"),
          ("total", "average"), ("everyone", "someone"), ("each", "one"), ("both", "either"),
          ("most", "least"), ("whole", "half of the"), ("entire", "first"), ("my", "all"))
_ARGS = re.compile(r"\b([A-Za-z][\w']+)\s+(to|into|than|vs\.?|versus)\s+([A-Za-z][\w']+)")
_NOT_ARGS = frozenset("how what want need going have able used is are way like has had "
                      "due so according".split())
_QUESTIONS = {"when": ("where", "why", "how"), "where": ("when", "why"),
              "who": ("when", "where", "why"), "why": ("how", "when"), "how": ("why", "when")}
_WRAPPERS = ("can you tell me {q}", "I'd like to know {q}", "{q} please",
             "quick question: {q}", "do you know {q}")
Entities = Mapping[str, str]  # lower-cased value -> its type
EntityPools = Mapping[str, Sequence[str]]  # type -> values


def negation(text: str, rng: np.random.Generator) -> str | None:
    """Flip the negation of ``text``: drop its first negation, or add one."""
    if _NEGATED.search(text):
        out = re.sub(r"\s+", " ", _NEGATED.sub("", text, count=1)).strip()
        return out if out and out != text else None
    aux = _AUX.search(text)
    if aux:
        at = aux.end()
        subject = _SUBJECT.match(text, at)  # "do i cancel" -> "do i not cancel"
        if subject:
            at = subject.end()
        return text[:at] + " not" + text[at:]
    words = text.split()
    if words and words[0].lower() not in _WH:
        return "don't " + text[0].lower() + text[1:]
    return None


def number(text: str, rng: np.random.Generator) -> str | None:
    """Change one integer, or failing that one month or weekday name."""
    changed = change_one_number(text, rng)
    if changed is not None:
        return changed
    lower = text.lower()
    for names in (_MONTHS, _DAYS):
        for name in names:
            found = re.search(rf"\b{name}\b", lower)
            if found and not (name == "may" and not re.search(r"\d", text)):
                other = names[(names.index(name) + 1 + int(rng.integers(len(names) - 1)))
                              % len(names)]
                return text[: found.start()] + other + text[found.end():]
    return None


def entity(text: str, rng: np.random.Generator, entities: Entities,
           pools: EntityPools) -> str | None:
    """Replace the longest known named value in ``text`` by another of its type."""
    lower = text.lower()
    words = re.findall(r"[\w']+", lower)
    grams = {" ".join(words[i:i + n]) for n in (3, 2, 1) for i in range(len(words) - n + 1)}
    found = [g for g in grams if g in entities and len(g) > 3]
    if not found:
        return None
    value = max(found, key=len)
    pool = pools[entities[value]]
    where = re.search(rf"\b{re.escape(value)}\b", lower)
    if where is None:
        return None
    for _ in range(8):
        new = pool[int(rng.integers(len(pool)))]
        if new.lower() != value:
            return text[: where.start()] + new + text[where.end():]
    return None


def argorder(text: str, rng: np.random.Generator) -> str | None:
    """Swap the two sides of the first "X to Y" (into, than, vs)."""
    found = _ARGS.search(text)
    if not found:
        return None
    a, b = found.group(1), found.group(3)
    if a.lower() == b.lower() or a.lower() in _NOT_ARGS or b.lower() in _NOT_ARGS:
        return None
    return text[: found.start(1)] + b + text[found.end(1): found.start(3)] + a + text[found.end(3):]


def scope(text: str, rng: np.random.Generator) -> str | None:
    """Replace the first scope word (all, every, always, ...) by a narrower or wider one."""
    lower = text.lower()
    for a, b in _SCOPE:
        for old, new in ((a, b), (b, a)):
            found = re.search(rf"\b{re.escape(old)}\b", lower)
            if found:
                return text[: found.start()] + new + text[found.end():]
    return None


def question(text: str, rng: np.random.Generator) -> str | None:
    """Ask another question about the same thing: swap the question word ("when was X born"
    -> "where was X born")."""
    found = re.search(r"\b(when|where|who|why|how)\b", text, re.IGNORECASE)
    if found is None or re.match(r"how\s+(?:to|do|does|can|could|should|many|much|long|old|far"
                                 r"|often|big)\b", text[found.start():], re.IGNORECASE):
        return None  # "how do I ...", "how many ...": another wh-word rarely fits
    options = _QUESTIONS[found.group(1).lower()]
    new = options[int(rng.integers(len(options)))]
    if found.group(1)[0].isupper():
        new = new.capitalize()
    return text[: found.start()] + new + text[found.end():]


def reworded(text: str, rng: np.random.Generator) -> str:
    """``text`` in a neutral wrapper: a positive (same answer) pair."""
    q = text.rstrip("?. ")
    wrapper = _WRAPPERS[int(rng.integers(len(_WRAPPERS)))]
    return wrapper.format(q=q[:1].lower() + q[1:])


#: near-miss kinds (different answer) in reporting order, then the positive kind
KINDS = ("negation", "number", "entity", "argorder", "scope", "question", "reworded")


def perturb(texts: Sequence[str], rng: np.random.Generator, *, entities: Entities,
            pools: EntityPools) -> list[tuple[str, str, bool, str]]:
    """Every applicable perturbation of every text: ``(text, edited, same, kind)`` rows."""
    edits: dict[str, Callable[[str, np.random.Generator], str | None]] = {
        "negation": negation, "number": number, "argorder": argorder, "scope": scope,
        "question": question,
        "entity": lambda t, r: entity(t, r, entities, pools)}
    rows = []
    for text in texts:
        for kind, edit in edits.items():
            out = edit(text, rng)
            if out and out.strip().lower() != text.strip().lower():
                rows.append((text, out, False, kind))
        rows.append((text, reworded(text, rng), True, "reworded"))
    return rows


def load_entities(root: Path, *, min_values: int = 20) -> tuple[Entities, EntityPools]:
    """Named values by type from the SNIPS slot annotations under ``root`` (cities, countries,
    artists, restaurants, ...): ``(value -> type, type -> values)``. Types with fewer than
    ``min_values`` values are left out. Raises ``OSError`` when the files are missing."""
    pools: dict[str, set[str]] = {}
    for path in sorted((root / "snips_2017").glob("train_*_full.json")):
        data = json.loads(path.read_text(encoding="latin-1"))
        for rows in data.values():
            for row in rows:
                for chunk in row["data"]:
                    value = chunk["text"].strip()
                    if "entity" in chunk and 2 < len(value) < 30:
                        pools.setdefault(chunk["entity"], set()).add(value)
    kept = {kind: sorted(values) for kind, values in pools.items() if len(values) >= min_values}
    index = {v.lower(): kind for kind, values in kept.items() for v in values}
    return index, kept
