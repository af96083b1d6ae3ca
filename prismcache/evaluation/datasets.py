"""Read the development data in ``../shared/data`` and turn it into labelled pairs.

Which rows count as "the same answer" is a choice; every choice is listed here and in
``docs/evaluation.md``:

- **STS-B** (category ``sts``): score >= 4 -> same (``sts_high``), score <= 2 -> different
  (``sts_low``); scores in between are dropped. Its own category, not ``general``: its
  negatives are mostly unrelated sentences, far easier than the near-duplicates a cache meets,
  so a threshold fitted on them would be far too loose for real traffic.
- **Banking77** (category ``support``) and **CLINC150** (category = its domain): for FAQ-like
  intents, two utterances of one intent are the same (``paraphrase``). Utterances of an intent
  in :data:`SLOT_INTENTS`, whose answer depends on a slot ("weather in Oslo" / "in Rome"), are
  different from each other (``same_intent_other_slot``). Each query is also paired with an
  utterance of one of its intent's neighbouring intents (``neighbour_intent``): the
  :data:`NEIGHBOURS` intents of the same domain whose centroids are closest. Both candidates
  are the closest of :data:`SAMPLE` random utterances of their intent, as a cache holding that
  many entries of each would serve the closest; closeness is measured with the deterministic
  ``hash:256`` embedder, so the pairs do not depend on the model under test.
- **GSM8K** (category ``math``): a problem and the same problem with one number changed are
  different (``number_changed``); a problem and its nearest other problem are different
  (``neighbour_problem``); a problem and the same problem in a neutral wrapper ("Solve this
  problem: ...") are the same (``rewrapped``, synthetic: GSM8K has no paraphrases).

Splits: Banking77, CLINC150 and STS-B have their own ``train``/``test`` splits. GSM8K ships only
its test split here, so it is halved by a hash of the question (:func:`half_of`): ``train``
pairs use one half, ``test`` traces the other. NQ-open and Arena-Hard only feed traces.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prismcache.embedders.hashing import HashEmbedder
from prismcache.evaluation.records import Pair

__all__ = [
    "NEIGHBOURS",
    "SAMPLE",
    "SLOT_INTENTS",
    "WRAPPERS",
    "arena_hard",
    "banking77",
    "build_pairs",
    "change_one_number",
    "clinc",
    "gsm8k",
    "half_of",
    "intent_pairs",
    "math_pairs",
    "nq_open",
    "stsb_pairs",
]

#: neighbouring intents considered per intent (closest centroids within the domain)
NEIGHBOURS = 3
#: candidates sampled per side: a pair's candidate is the closest of SAMPLE utterances of the
#: query's own intent (same) or of one neighbouring intent (different), as if the cache held
#: SAMPLE entries of each and served the closest
SAMPLE = 8
#: CLINC150 intents whose answer depends on a slot in the words (a place, a date, an amount, a
#: dish, a name, a phrase to translate...): every distinct request is its own answer.
SLOT_INTENTS = frozenset("""
transfer pay_bill interest_rate transactions spending_history bill_balance bill_due
credit_limit_change
recipe calories nutrition_info ingredients_list ingredient_substitution cook_time food_last
restaurant_reviews restaurant_reservation restaurant_suggestion accept_reservations how_busy
confirm_reservation cancel_reservation meal_suggestion
play_music todo_list_update reminder_update calendar_update shopping_list_update update_playlist
order smart_home calendar shopping_list order_status
directions distance traffic uber gas schedule_maintenance
translate exchange_rate flight_status international_visa timezone plug_type travel_alert vaccines
travel_suggestion book_flight book_hotel car_rental travel_notification carry_on
weather alarm timer calculator definition measurement_conversion spelling make_call text time
roll_dice share_location
schedule_meeting pto_request meeting_schedule
change_speed change_volume change_language change_accent change_user_name change_ai_name
""".split())  # noqa: SIM905 - a word list reads better as text
#: neutral wrappers that leave a math problem's answer unchanged
WRAPPERS = ("{q}", "Solve this problem: {q}", "Can you help me with this math problem? {q}")

_NUMBER = re.compile(r"(?<![\d.])\d+(?![\d.])")
_HASH = HashEmbedder(dim=256)
Labelled = list[tuple[str, str]]


def half_of(text: str) -> str:
    """``"train"`` or ``"test"``: a stable hash split for sets that ship in one piece."""
    return "train" if hashlib.blake2b(text.encode(), digest_size=1).digest()[0] % 2 == 0 \
        else "test"


def clinc(root: Path, split: str) -> tuple[Labelled, dict[str, str], list[str]]:
    """CLINC150 ``split``: (text, intent) rows, intent -> domain, and the ``oos_<split>`` texts."""
    data = json.loads((root / "clinc150" / "data_full.json").read_text("utf-8"))
    domains = json.loads((root / "clinc150" / "domains.json").read_text("utf-8"))
    domain_of = {intent: domain for domain, intents in domains.items() for intent in intents}
    rows = [(text, intent) for text, intent in data[split]]
    return rows, domain_of, [text for text, _ in data[f"oos_{split}"]]


def banking77(root: Path, split: str) -> Labelled:
    """Banking77 ``split`` (``train``/``test``): (text, intent) rows."""
    with open(root / "banking77" / f"{split}.csv", encoding="utf-8", newline="") as handle:
        return [(row["text"], row["category"]) for row in csv.DictReader(handle)]


def gsm8k(root: Path, split: str) -> list[str]:
    """The GSM8K questions in the ``split`` half (see :func:`half_of`)."""
    with open(root / "gsm8k" / "test.jsonl", encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for line in handle if line.strip()]
    return [q for q in questions if half_of(q) == split]


def nq_open(root: Path) -> list[str]:
    """NQ-open dev questions."""
    with open(root / "nq_open" / "NQ-open.dev.jsonl", encoding="utf-8") as handle:
        return [json.loads(line)["question"] for line in handle if line.strip()]


def arena_hard(root: Path, subcategory: str) -> list[str]:
    """Arena-Hard prompts of one ``subcategory`` (``coding``, ``creative_writing``, ``math``)."""
    with open(root / "arena_hard" / "arena-hard-v2.0_question.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    return [d["prompt"] for d in docs if d.get("subcategory") == subcategory]


def stsb_pairs(root: Path, split: str, *, rng: np.random.Generator,
               limit: int = 800) -> list[Pair]:
    """STS-B ``split`` pairs: score >= 4 same, <= 2 different; at most ``limit`` of each."""
    same, different = [], []
    with open(root / "stsb" / f"sts-{split}.csv", encoding="utf-8") as handle:
        for line in handle:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 7:
                continue
            score, a, b = float(cols[4]), cols[5], cols[6]
            if score >= 4:
                same.append(Pair(query=a, candidate=b, same=True, category="sts",
                                 kind="sts_high", source="stsb"))
            elif score <= 2:
                different.append(Pair(query=a, candidate=b, same=False, category="sts",
                                      kind="sts_low", source="stsb"))
    out = []
    for group in (same, different):
        picked = rng.permutation(len(group))[:limit]
        out.extend(group[i] for i in sorted(picked))
    return out


def _unit(texts: Sequence[str]) -> np.ndarray:
    return _HASH.embed(list(texts))


def intent_pairs(rows: Labelled, *, domain_of: dict[str, str] | None, category: str | None,
                 source: str, per_intent: int, rng: np.random.Generator,
                 slot_intents: frozenset[str] = frozenset()) -> list[Pair]:
    """Pairs from intent-labelled rows: up to ``per_intent`` queries per intent, each paired
    with another utterance of its intent and with the closest utterance of a neighbouring
    intent of the same domain. The category is ``category`` or the intent's domain."""
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, intent in rows:
        if intent != "oos":
            by_intent[intent].append(text)
    intents = sorted(by_intent)
    vectors = {i: _unit(by_intent[i]) for i in intents}
    centroids = np.stack([vectors[i].mean(axis=0) for i in intents])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    similar = centroids @ centroids.T
    domain = domain_of or {}
    pairs = []
    for a, intent in enumerate(intents):
        peers = [b for b in np.argsort(-similar[a]) if b != a
                 and domain.get(intents[b]) == domain.get(intent)][:NEIGHBOURS]
        texts = by_intent[intent]
        cat = category or domain[intent]
        slot = intent in slot_intents
        for qi in rng.permutation(len(texts))[:per_intent]:
            query = texts[qi]
            others = [j for j in rng.permutation(len(texts))[:SAMPLE + 1] if j != qi][:SAMPLE]
            best = max(others, key=lambda j: float(vectors[intent][j] @ vectors[intent][qi]))
            pairs.append(Pair(query=query, candidate=texts[best], same=not slot, category=cat,
                              kind="same_intent_other_slot" if slot else "paraphrase",
                              source=source))
            if peers:
                neighbour = intents[peers[rng.integers(len(peers))]]
                sample = rng.permutation(len(by_intent[neighbour]))[:SAMPLE]
                nearest = max(sample, key=lambda j: float(vectors[neighbour][j]
                                                          @ vectors[intent][qi]))
                pairs.append(Pair(query=query, candidate=by_intent[neighbour][nearest],
                                  same=False, category=cat, kind="neighbour_intent",
                                  source=source))
    return pairs


def change_one_number(text: str, rng: np.random.Generator) -> str | None:
    """``text`` with one of its integers replaced by another value, or ``None`` if it has
    none. The new value differs from every number already in the text.

    >>> change_one_number("no digits here", np.random.default_rng(0)) is None
    True
    """
    found = list(_NUMBER.finditer(text))
    if not found:
        return None
    match = found[int(rng.integers(len(found)))]
    present = {int(m[0]) for m in found}
    value = int(match[0])
    new = value + int(rng.integers(1, 10))
    while new in present:
        new += 1
    return text[:match.start()] + str(new) + text[match.end():]


def math_pairs(questions: Sequence[str], *, rng: np.random.Generator,
               limit: int = 300) -> list[Pair]:
    """GSM8K pairs for at most ``limit`` problems: rewrapped (same), one number changed and
    nearest problem (different)."""
    questions = [questions[i] for i in sorted(rng.permutation(len(questions))[:limit])]
    vectors = _unit(questions)
    similar = vectors @ vectors.T
    np.fill_diagonal(similar, -1.0)
    pairs = []
    for i, q in enumerate(questions):
        wrapper = WRAPPERS[1 + int(rng.integers(len(WRAPPERS) - 1))]
        pairs.append(Pair(query=wrapper.format(q=q), candidate=q, same=True, category="math",
                          kind="rewrapped", source="gsm8k"))
        changed = change_one_number(q, rng)
        if changed is not None:
            pairs.append(Pair(query=changed, candidate=q, same=False, category="math",
                              kind="number_changed", source="gsm8k"))
        pairs.append(Pair(query=q, candidate=questions[int(np.argmax(similar[i]))],
                          same=False, category="math", kind="neighbour_problem",
                          source="gsm8k"))
    return pairs


def build_pairs(root: Path, *, split: str = "train", seed: int = 0,
                sources: Sequence[str] = ("stsb", "banking77", "clinc150", "gsm8k"),
                per_intent: int = 30) -> list[Pair]:
    """All labelled pairs of ``split`` from ``sources``, deterministic for a ``seed``.
    Raises ``OSError`` when a dataset file is missing, ``ValueError`` for an unknown source."""
    rng = np.random.default_rng(seed)
    pairs: list[Pair] = []
    for source in sources:
        if source == "stsb":
            pairs += stsb_pairs(root, split, rng=rng)
        elif source == "banking77":
            pairs += intent_pairs(banking77(root, split), domain_of=None, category="support",
                                  source=source, per_intent=per_intent, rng=rng)
        elif source == "clinc150":
            rows, domain_of, _ = clinc(root, split)
            pairs += intent_pairs(rows, domain_of=domain_of, category=None, source=source,
                                  per_intent=per_intent, rng=rng, slot_intents=SLOT_INTENTS)
        elif source == "gsm8k":
            pairs += math_pairs(gsm8k(root, split), rng=rng)
        else:
            raise ValueError(f"unknown pair source {source!r}")
    return pairs
