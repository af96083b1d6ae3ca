"""Cache traces from data sets the static pre-filter's map never saw (``bench/prefilter.py
--ood``): per set, answer keys with the texts that deserve each (groups of paraphrases and
distinct texts that should miss), drawn into a trace by a Zipf law over the keys.

The scripts run as ``python bench/<script>.py``, so this directory is on ``sys.path`` and they
``from ood_traces import ...``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from prismcache.evaluation.records import TraceLine

#: the data sets, by their folder under ``../shared/data``
OOD = ("paraqa", "paws_wiki", "snips_2017", "stsb", "snli_dev_test")


def _merged(pairs: list[tuple[str, str]], apart: list[tuple[str, str]],
            texts: list[str]) -> dict[str, list[str]]:
    """Answer key -> texts: ``texts`` each alone, except that the two texts of every pair of
    ``pairs`` (paraphrases) share one key, joined transitively unless that would put a pair
    of ``apart`` (labelled different) under one key."""
    members = {t: frozenset([t]) for t in texts}
    different = {frozenset(p) for p in apart}
    for a, b in pairs:
        joined = members[a] | members[b]
        if members[a] is members[b] or any(
                frozenset((x, y)) in different for x in members[a] for y in members[b]):
            continue
        for t in joined:
            members[t] = joined
    groups: dict[str, list[str]] = {}
    for t in texts:
        groups.setdefault(f"k:{min(members[t])}", []).append(t)
    return groups


def ood_groups(root: Path, name: str) -> dict[str, list[str]]:
    """Answer key -> the texts that deserve it, for one data set the static map never saw:
    ParaQA test (each question's reworded answers share a key; questions: one key per
    SPARQL query), PAWS-Wiki test (label-1 pairs share a key), SNIPS train_full (intent and
    slot values: same intent, same values, one key), STS-B test (score >= 4 pairs share a key;
    texts of pairs scored between 2 and 4 left out), SNLI test (every premise and hypothesis
    its own key: entailment is not equivalence)."""
    folder = root / name
    groups: dict[str, list[str]] = {}
    if name == "paraqa":
        for d in json.loads((folder / "test.json").read_text("utf-8")):
            answers = {d[f] for f in ["verbalized_answer"] + [f"verbalized_answer_{i}"
                                                              for i in range(2, 9)] if d.get(f)}
            groups[f"pqa:{d['uid']}"] = sorted(answers)
            if d.get("question"):
                groups.setdefault(f"pq:{d['query']}", []).append(d["question"])
    elif name == "paws_wiki":
        rows = _tsv(folder / "test.tsv")
        texts = sorted({r[c] for r in rows for c in ("sentence1", "sentence2")})
        pairs = {label: [(r["sentence1"], r["sentence2"]) for r in rows
                         if r["label"].strip() == label] for label in ("0", "1")}
        groups = _merged(pairs["1"], pairs["0"], texts)
    elif name == "snips_2017":
        for path in sorted(folder.glob("train_*_full.json")):
            for intent, items in json.loads(path.read_text("latin-1")).items():
                for item in items:
                    chunks = item["data"]
                    text = "".join(c["text"] for c in chunks).strip()
                    slots = sorted((c["entity"], c["text"].strip().lower()) for c in chunks
                                   if c.get("entity"))
                    groups.setdefault(f"snips:{intent}:{slots}", []).append(text)
    elif name == "stsb":
        same, apart, kept = [], [], set()
        for line in (folder / "sts-test.csv").read_text("utf-8").splitlines():
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 7 and (float(cols[4]) >= 4 or float(cols[4]) <= 2):
                kept.update(cols[5:7])
                (same if float(cols[4]) >= 4 else apart).append((cols[5], cols[6]))
        groups = _merged(same, apart, sorted(kept))
    elif name == "snli_dev_test":
        rows = _tsv(folder / "snli_test.tsv")
        texts = sorted({r[c] for r in rows for c in ("premise", "hypothesis")})
        groups = {f"snli:{t}": [t] for t in texts}
    else:
        raise ValueError(f"no out-of-domain trace for {name!r}")
    return {k: sorted(set(v)) for k, v in groups.items() if v}


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def ood_trace(groups: dict[str, list[str]], *, requests: int, seed: int = 0,
              zipf: float = 0.9) -> list[TraceLine]:
    """``requests`` lines: an answer key by a Zipf law over a seeded shuffle of ``groups``'
    keys, then one of its texts uniformly (no category: the classifier decides)."""
    rng = np.random.default_rng(seed)
    keys = sorted(groups)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    weights = 1.0 / np.arange(1, len(keys) + 1) ** zipf
    picks = rng.choice(len(keys), size=requests, p=weights / weights.sum())
    lines = []
    for k in picks:
        texts = groups[keys[k]]
        lines.append(TraceLine(query=texts[int(rng.integers(len(texts)))],
                               answer_key=keys[k]))
    return lines
