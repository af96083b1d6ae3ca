"""``prismcache demo``: the embedded default on real queries, in under a minute.

It stores one real query per intent (Banking77 support questions, CLINC150 small talk, travel,
utility and work requests), then asks *other* real phrasings of the same intents — which should
hit — and out-of-scope CLINC150 queries, which must not. Every hit is checked against the
intent the serving entry was stored for, so the table shows false hits beside hits.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from prismcache.cache import SemanticCache
from prismcache.config import load_config

__all__ = ["register", "run_demo"]

_CLINC_DOMAINS = ("small_talk", "travel", "work", "utility", "banking")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``prismcache demo [--data DIR] [--intents N] [--store URL]``."""
    parser = sub.add_parser("demo", help="store real queries, then hit their paraphrases")
    parser.add_argument("--data", default="../shared/data",
                        help="the shared datasets folder (default: ../shared/data)")
    parser.add_argument("--intents", type=int, default=12,
                        help="intents per source to store (default 12)")
    parser.add_argument("--paraphrases", type=int, default=3,
                        help="other phrasings asked per intent (default 3)")
    parser.add_argument("--store", help="store URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if not (data / "banking77" / "test.csv").exists():
        print(f"prismcache demo: no datasets at {data.resolve()}; pass --data DIR")
        return 2
    with tempfile.TemporaryDirectory(prefix="prismcache-demo-") as tmp:
        store = args.store or f"sqlite:///{tmp}/demo.db"
        run_demo(data, store=store, config=args.config, intents=args.intents,
                 paraphrases=args.paraphrases)
    return 0


def _groups(data: Path, intents: int, rng: random.Random) -> dict[str, list[list[str]]]:
    """source name -> list of intents, each a list of utterances (first one is stored)."""
    by_intent: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    with (data / "banking77" / "test.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_intent["banking77"][row["category"]].append(row["text"])
    clinc = json.loads((data / "clinc150" / "data_full.json").read_text("utf-8"))
    domains = json.loads((data / "clinc150" / "domains.json").read_text("utf-8"))
    domain_of = {intent: d for d, names in domains.items() for intent in names}
    for text, intent in clinc["test"]:
        if domain_of.get(intent) in _CLINC_DOMAINS:
            by_intent[f"clinc150/{domain_of[intent]}"][intent].append(text)
    groups = {}
    for source, table in sorted(by_intent.items()):
        names = rng.sample(sorted(table), min(intents, len(table)))
        groups[source] = [[*table[n]] for n in names]
    groups["clinc150/out-of-scope"] = [[t] for t in rng.sample(
        [t for t, _ in clinc["oos_test"]], intents * 2)]
    return groups


def _answer(intent: str) -> dict[str, Any]:
    return {"object": "chat.completion", "model": "demo",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"[answer for {intent}]"}}]}


def run_demo(data: Path, *, store: str, config: str | None = None, intents: int = 12,
             paraphrases: int = 3, seed: int = 7) -> dict[str, dict[str, int]]:
    """Run the demo and print its table; return counts per category."""
    rng = random.Random(seed)
    started = time.perf_counter()
    cache = SemanticCache.open(replace(load_config(config), store=store))
    print(f"opened {cache!r} in {time.perf_counter() - started:.1f} s")
    groups = _groups(data, intents, rng)
    stored_intents = sum(len(g) for s, g in groups.items() if not s.endswith("out-of-scope"))
    print(f"stored one answer for each of {stored_intents} intents (its first utterance), then "
          f"asked up to {paraphrases} other wordings of every intent, and out-of-scope queries")
    served_for: dict[int, str] = {}
    for source, group in groups.items():
        if source.endswith("out-of-scope"):
            continue
        for n, utterances in enumerate(group):
            intent = f"{source}#{n}"
            stored = cache.store(_body(utterances[0]), _answer(intent), tenant="demo")
            if stored.entry_id is not None:
                served_for[stored.entry_id] = intent

    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    latencies = []
    for source, group in groups.items():
        for n, utterances in enumerate(group):
            intent = f"{source}#{n}"
            asks = utterances[1:1 + paraphrases] if len(utterances) > 1 else utterances
            for text in asks:
                t0 = time.perf_counter()
                result = cache.lookup(_body(text), tenant="demo")
                latencies.append(time.perf_counter() - t0)
                row = counts[source]
                row["asked"] += 1
                if result.hit:
                    row["hits"] += 1
                    if served_for.get(result.entry_id) != intent:
                        row["false_hits"] += 1
                        print(f"  FALSE HIT [{result.category}] {text!r}")
    _print(counts, cache, latencies)
    cache.close()
    return {k: dict(v) for k, v in counts.items()}


def _body(text: str) -> dict[str, Any]:
    return {"model": "demo-model", "messages": [{"role": "user", "content": text}]}


def _print(counts: dict[str, dict[str, int]], cache: SemanticCache, latencies: list[float]) -> None:
    print("\nper dataset: wordings asked, how many were answered from the cache, and how many "
          "of those answers were stored for another intent (false hits):")
    print(f"{'source':<26}{'asked':>7}{'hits':>7}{'false':>7}")
    for source, row in counts.items():
        print(f"{source:<26}{row['asked']:>7}{row['hits']:>7}{row['false_hits']:>7}")
    print("\nper category the classifier chose: entries stored, lookups, hits, candidates a "
          "guard or the verifier refused, and the verifier's cut-off (docs/decision.md):")
    print(f"{'category':<14}{'entries':>8}{'lookups':>9}{'hits':>6}{'guarded':>9}"
          f"{'verifier':>9}  cut-off")
    for name, s in cache.stats().items():
        if s.lookups or s.entries:
            guarded = sum(s.guard_rejections.values())
            policy = cache.config.policy(name)
            bar = policy.cutoff if policy.verifier != "none" else f"cosine {policy.threshold}"
            print(f"{name:<14}{s.entries:>8}{s.lookups:>9}{s.hits:>6}{guarded:>9}"
                  f"{s.verifier_rejections:>9}  {bar}")
    ms = sorted(x * 1000 for x in latencies)
    print(f"\nlookup latency (embedding included): p50 {statistics.median(ms):.2f} ms, "
          f"p99 {ms[int(0.99 * (len(ms) - 1))]:.2f} ms over {len(ms)} lookups")
    print("A hit is false when the entry was stored for another intent; out-of-scope queries "
          "should never hit.")
