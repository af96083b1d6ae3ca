"""Multi-turn pairs and a multi-turn trace from the shared intent data sets.

A *source* conversation names what it is about in its first user turn (an utterance of a
Banking77 or CLINC150 intent), gets a generic assistant reply, and ends in an **elliptic
follow-up** that only makes sense with it ("how long does that take?", "is there a fee for
that?"). The cache stores the source; a pair asks whether the stored answer may be served to a
variant of it. Same meaning (``same: true``):

================== ============================================================================
kind               the variant
================== ============================================================================
context-reworded   the first turn is another utterance of the same FAQ intent (the closest of
                   :data:`~prismcache.evaluation.datasets.SAMPLE`, as a cache would hold)
irrelevant-history an unrelated exchange (an utterance of another domain) comes first
extra-chatter      a chit-chat exchange ("hi there", "ok thanks") before or after the first turn
================== ============================================================================

Different meaning (``same: false``): ``context-swap`` (the first turn is of another intent of
the same category), ``detail-swap`` (another utterance of the same slot intent whose slot
words — words rare within the intent — are all different: "weather in Oslo" / "in Rome" — or,
for FAQ intents, the closest utterance of a neighbouring intent: "card
lost" / "card not arrived") and ``intent-flip`` (the same context, a follow-up that asks
something else). The follow-up of the same- and swap-kinds is the source's, word for word: the
context alone decides.

Splits: every sentence of a pair comes from one half of the data sets' *train* splits, halved
by :func:`~prismcache.evaluation.datasets.half_of` (``dev``: the ``"train"`` half, ``test``:
the other), so dev and test share no source sentence; the verifier's training data (the train
splits) may overlap both, as it does for every pair set built from them.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prismcache.evaluation import datasets as ds
from prismcache.evaluation.records import Pair, TraceLine

__all__ = ["DIFFERENT_KINDS", "FOLLOW_UPS", "KINDS", "SAME_KINDS", "conversation_pairs",
           "conversation_pairs_and_trace", "conversation_trace"]

#: elliptic follow-ups: the same words ask different things in different contexts
FOLLOW_UPS = (
    "how long does that take?", "is there a fee for that?", "can I do it online?",
    "what do I need for that?", "can you do it now?", "why is that?", "what happens next?",
    "is that safe?", "how much does it cost?", "can you tell me more about it?",
    "who should I contact about it?", "can I do that from my phone?",
)
REPLIES = ("Sure, I can help with that.", "Of course, let me look into it.",
           "Okay, I understand.", "Happy to help with that.", "Got it.")
CHATTER = (("hi there", "Hello! How can I help?"), ("good morning", "Good morning!"),
           ("ok thanks", "You're welcome."), ("hmm okay", "Take your time."),
           ("cool, thank you", "Anytime."))
SAME_KINDS = ("context-reworded", "irrelevant-history", "extra-chatter")
DIFFERENT_KINDS = ("context-swap", "detail-swap", "intent-flip")
KINDS = SAME_KINDS + DIFFERENT_KINDS
Messages = list[dict[str, Any]]


def _turns(first: str, follow_up: str, reply: str,
           before: Sequence[tuple[str, str]] = (), after: Sequence[tuple[str, str]] = ()
           ) -> Messages:
    messages: Messages = []
    for user, assistant in before:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages += [{"role": "user", "content": first}, {"role": "assistant", "content": reply}]
    for user, assistant in after:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages + [{"role": "user", "content": follow_up}]


def _rows(root: Path, half: str) -> list[tuple[str, str, str, str]]:
    """(text, intent, category, domain) of the train splits' ``half``."""
    rows = [(t, i, "support", "banking77") for t, i in ds.banking77(root, "train")]
    clinc, domain_of, _ = ds.clinc(root, "train")
    rows += [(t, i, domain_of[i], domain_of[i]) for t, i in clinc if i != "oos"]
    return [row for row in rows if ds.half_of(row[0]) == half]


def conversation_pairs_and_trace(root: Path, *, split: str = "dev", seed: int = 0,
                                 per_intent: int = 2) -> tuple[list[Pair], list[TraceLine]]:
    """Labelled multi-turn pairs (:data:`KINDS`, about equal numbers of each) and a trace of
    the same conversations, from ``split`` (``"dev"`` or ``"test"``); ``per_intent`` source
    conversations per intent. Deterministic for a ``seed``. Raises ``OSError`` when a data
    set is missing, ``ValueError`` for an unknown split."""
    if split not in ("dev", "test"):
        raise ValueError(f"split must be 'dev' or 'test', got {split!r}")
    rng = np.random.default_rng(seed)
    rows = _rows(root, "train" if split == "dev" else "test")
    by_intent: dict[str, list[str]] = defaultdict(list)
    category_of: dict[str, str] = {}
    domain_of: dict[str, str] = {}
    for text, intent, category, domain in rows:
        by_intent[intent].append(text)
        category_of[intent], domain_of[intent] = category, domain
    intents = sorted(i for i in by_intent if len(by_intent[i]) >= 3)
    vectors = {i: ds._unit(by_intent[i]) for i in intents}
    centroids = np.stack([vectors[i].mean(axis=0) for i in intents])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    similar = centroids @ centroids.T

    def closest(intent: str, vector: np.ndarray, exclude: int = -1) -> str:
        sample = [j for j in rng.permutation(len(by_intent[intent]))[:ds.SAMPLE + 1]
                  if j != exclude][:ds.SAMPLE]
        return by_intent[intent][max(sample, key=lambda j: float(vectors[intent][j] @ vector))]

    def pick(seq: Sequence[Any]) -> Any:
        return seq[int(rng.integers(len(seq)))]

    rare = {i: _rare_words(by_intent[i]) for i in intents}
    pairs: list[Pair] = []
    trace: list[TraceLine] = []
    for a, intent in enumerate(intents):
        category, slot = category_of[intent], intent in ds.SLOT_INTENTS
        peers = [intents[b] for b in np.argsort(-similar[a]) if b != a
                 and category_of[intents[b]] == category][:ds.NEIGHBOURS]
        others = [i for i in intents if category_of[i] == category and i != intent
                  and i not in peers]
        far = [i for i in intents if domain_of[i] != domain_of[intent]]
        texts = by_intent[intent]
        for qi in rng.permutation(len(texts))[:per_intent]:
            first, vector = texts[qi], vectors[intent][qi]
            follow = pick(FOLLOW_UPS)
            source = _turns(first, follow, pick(REPLIES))
            answer = f"{intent}|{follow}" + (f"|{first}" if slot else "")
            trace.append(TraceLine(query=source, answer_key=answer, category=category))

            def add(kind: str, query: Messages, same: bool, key: str,
                    source: Messages = source, category: str = category,
                    origin: str = domain_of[intent]) -> None:
                pairs.append(Pair(query=query, candidate=source, same=same, category=category,
                                  kind=kind, source=origin))
                trace.append(TraceLine(query=query, answer_key=key, category=category))

            if not slot:
                add("context-reworded", _turns(closest(intent, vector, qi), follow,
                                               pick(REPLIES)), True, answer)
                unrelated = pick(by_intent[pick(far)])
                add("irrelevant-history", _turns(first, follow, pick(REPLIES),
                                                 before=[(unrelated, pick(REPLIES))]),
                    True, answer)
                chat = [pick(CHATTER)]
                before, after = (chat, []) if rng.random() < 0.5 else ([], chat)
                add("extra-chatter", _turns(first, follow, pick(REPLIES), before, after),
                    True, answer)
            if others:
                other = pick(others)
                add("context-swap", _turns(closest(other, vector), follow, pick(REPLIES)),
                    False, f"{other}|{follow}")
            if slot:
                detail = _other_detail(texts, qi, rare[intent], rng)
                if detail is not None:
                    add("detail-swap", _turns(detail, follow, pick(REPLIES)), False,
                        f"{intent}|{follow}|{detail}")
            elif peers:
                peer = pick(peers)
                add("detail-swap", _turns(closest(peer, vector), follow, pick(REPLIES)),
                    False, f"{peer}|{follow}")
            flip = pick([f for f in FOLLOW_UPS if f != follow])
            add("intent-flip", _turns(first, flip, pick(REPLIES)), False,
                f"{intent}|{flip}" + (f"|{first}" if slot else ""))
    return pairs, trace


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9$']+", text.lower()))


def _rare_words(texts: Sequence[str]) -> set[str]:
    """Words in at most 5% of an intent's utterances: its slot values (places, dates, names,
    amounts), not its wording."""
    counts: Counter[str] = Counter(w for t in texts for w in _words(t))
    return {w for w, n in counts.items() if n <= max(1, len(texts) // 20)}


def _other_detail(texts: Sequence[str], qi: int, rare: set[str],
                  rng: np.random.Generator) -> str | None:
    """Another utterance of the same slot intent about another detail: both have slot words
    and share none (same-intent utterances often repeat a slot: "weather in tallahassee")."""
    mine = _words(texts[qi]) & rare
    if not mine:
        return None
    for j in rng.permutation(len(texts)):
        theirs = _words(texts[j]) & rare
        if j != qi and theirs and not theirs & mine:
            return texts[j]
    return None


def conversation_pairs(root: Path, *, split: str = "dev", seed: int = 0,
                       per_intent: int = 2) -> list[Pair]:
    """The pairs of :func:`conversation_pairs_and_trace`."""
    return conversation_pairs_and_trace(root, split=split, seed=seed, per_intent=per_intent)[0]


def conversation_trace(root: Path, *, split: str = "dev", seed: int = 0,
                       per_intent: int = 2) -> list[TraceLine]:
    """The multi-turn trace of :func:`conversation_pairs_and_trace`: each source conversation,
    then its variants, each with the ``answer_key`` it deserves."""
    return conversation_pairs_and_trace(root, split=split, seed=seed, per_intent=per_intent)[1]
