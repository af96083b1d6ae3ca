"""Build a multi-category trace from the test splits, with Zipf-distributed repeats.

Each category holds a pool of answer keys, each with the utterances that deserve that answer.
A request picks a category by its share of traffic (:data:`MIX`), an answer key by a Zipf law
over the pool (exponent per category, :data:`ZIPF`; the key ranks are a seeded shuffle), and one
of the key's utterances uniformly, so a repeated key comes back both verbatim and paraphrased.
Arrivals are a Poisson process (``rate`` requests per second) giving each line a ``t``.

======================= ========================================================= =========
category                answer keys and utterances                                  source
======================= ========================================================= =========
support                 one key per intent; its test utterances                     Banking77
<clinc domain> (x10)    FAQ-like intent: one key, its utterances; slot intent       CLINC150
                        (:data:`~prismcache.evaluation.datasets.SLOT_INTENTS`): one
                        key per distinct utterance
general                 ``oos_test`` queries, one key each, uniform (should miss)   CLINC150
factual                 one key per question                                        NQ-open
                                                                                    (half)
math                    one key per problem (utterances: the problem in neutral     GSM8K
                        wrappers) and one per one-number-changed variant            (test half)
code, creative          one key per prompt (``coding``, ``creative_writing``)       Arena-Hard
======================= ========================================================= =========
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prismcache.evaluation import datasets as ds
from prismcache.evaluation.records import TraceLine
from prismcache.request import normalise

__all__ = ["MIX", "ZIPF", "Pool", "build_pools", "build_trace"]

#: default share of requests per category (CLINC's share is split evenly over its domains)
MIX: dict[str, float] = {"support": 0.25, "clinc": 0.35, "factual": 0.12, "math": 0.08,
                         "code": 0.06, "creative": 0.04, "general": 0.10}
#: default Zipf exponent per category ("clinc" applies to every CLINC domain)
ZIPF: dict[str, float] = {"support": 1.1, "clinc": 1.0, "factual": 0.9, "math": 0.8,
                          "code": 0.8, "creative": 0.8, "general": 0.0}


@dataclass(frozen=True, slots=True)
class Pool:
    """The answer keys of one category, each with its utterances, in Zipf rank order."""

    category: str
    keys: list[str]
    utterances: list[list[str]]
    weights: np.ndarray  # Zipf probabilities, aligned with ``keys``


def _key(prefix: str, text: str) -> str:
    return f"{prefix}:{hashlib.blake2b(normalise(text).encode(), digest_size=6).hexdigest()}"


def _groups(root: Path, split: str, rng: np.random.Generator) -> dict[str, dict[str, list[str]]]:
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for text, intent in ds.banking77(root, split):
        groups["support"][f"b77:{intent}"].append(text)
    rows, domain_of, oos = ds.clinc(root, split)
    for text, intent in rows:
        key = (_key(f"clinc:{intent}", text) if intent in ds.SLOT_INTENTS
               else f"clinc:{intent}")
        groups[domain_of[intent]][key].append(text)
    for text in oos:
        groups["general"][_key("oos", text)].append(text)
    for text in ds.nq_open(root):  # halved like GSM8K: the verifier trains on the other half
        if ds.half_of(text) == split:
            groups["factual"][_key("nq", text)].append(text)
    for question in ds.gsm8k(root, split):
        variants = [question]
        changed = ds.change_one_number(question, rng)
        if changed is not None:
            variants.append(changed)
        for variant in variants:
            key = _key("gsm8k", variant)
            groups["math"][key] = [w.format(q=variant) for w in ds.WRAPPERS]
    for sub, category in (("coding", "code"), ("creative_writing", "creative")):
        for text in ds.arena_hard(root, sub):
            groups[category][_key(f"arena:{category}", text)].append(text)
    return groups


def build_pools(root: Path, *, split: str = "test", seed: int = 0,
                zipf: Mapping[str, float] | None = None) -> dict[str, Pool]:
    """One :class:`Pool` per category from the ``split`` data under ``root``."""
    rng = np.random.default_rng(seed)
    exponents = {**ZIPF, **(zipf or {})}
    pools = {}
    for category, keyed in sorted(_groups(root, split, rng).items()):
        keys = sorted(keyed)
        order = rng.permutation(len(keys))
        keys = [keys[i] for i in order]
        s = exponents.get(category, exponents["clinc"])
        weights = 1.0 / np.arange(1, len(keys) + 1) ** s
        pools[category] = Pool(category, keys, [sorted(set(keyed[k])) for k in keys],
                               weights / weights.sum())
    return pools


def _shares(pools: Mapping[str, Pool], mix: Mapping[str, float]) -> dict[str, float]:
    merged = {**MIX, **mix}
    clinc = [c for c in pools if c not in MIX]
    shares = {c: merged.get(c, merged["clinc"] / max(len(clinc), 1)) if c in clinc
              else merged.get(c, 0.0) for c in pools}
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("the traffic mix gives every category a zero share")
    return {c: s / total for c, s in shares.items()}


def build_trace(root: Path, *, requests: int, split: str = "test", seed: int = 0,
                rate: float = 10.0, zipf: Mapping[str, float] | None = None,
                mix: Mapping[str, float] | None = None) -> list[TraceLine]:
    """A trace of ``requests`` lines, deterministic for ``seed``. ``zipf`` and ``mix`` override
    :data:`ZIPF` and :data:`MIX` per category (a CLINC domain may be named, or ``clinc``).
    Raises ``ValueError`` for a non-positive ``requests`` or ``rate``."""
    if requests <= 0 or rate <= 0:
        raise ValueError("requests and rate must be positive")
    pools = build_pools(root, split=split, seed=seed, zipf=zipf)
    shares = _shares(pools, mix or {})
    rng = np.random.default_rng(seed + 1)
    names = sorted(shares)
    chosen = rng.choice(len(names), size=requests, p=[shares[n] for n in names])
    times = np.cumsum(rng.exponential(1.0 / rate, size=requests))
    lines = []
    for i, c in enumerate(chosen):
        pool = pools[names[c]]
        k = int(rng.choice(len(pool.keys), p=pool.weights))
        utterances = pool.utterances[k]
        text = utterances[int(rng.integers(len(utterances)))]
        lines.append(TraceLine(query=text, answer_key=pool.keys[k], category=pool.category,
                               t=round(float(times[i]), 3)))
    return lines
