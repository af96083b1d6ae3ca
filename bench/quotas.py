"""Quota benchmark: work-conserving shares versus hard ceilings, in-process replays.

Two experiments, each replayed with ``prismcache.evaluation.replay`` (memory store, fake clock,
precomputed MiniLM vectors in bench/out/emb, trace categories passed to the cache):

1. **One category.** The 20,000-request dev trace (``prismcache data trace --split test``) with
   every line relabelled ``general`` (quota 0.05 of the default 100,000 entries = 5,000; the
   trace has 6,729 distinct queries): an operator whose traffic is all one category. Replayed
   with the default capacity as *ceiling* (``max_share = quota`` for every category: the old
   semantics), as *shares* (the new default) and *unbounded* (capacity 10^7: no eviction at
   all, i.e. the uniform threshold 0.93 without capacity pressure).
2. **One category floods.** The same trace with its own categories, capacity 3,000 entries,
   interleaved 1:1 with 20,000 one-off ``general`` requests (distinct, never repeated): hit rate
   of every other category without and with the flood, under ceilings and under shares.
3. **Guaranteed shares under a flood, measured.** Every category of the trace (and ``general``)
   gets an equal share of a cache of 2,000 entries (each category asks for more distinct
   entries than its share, so every share is contended), and the trace is interleaved 1:1
   with the 20,000 one-off ``general`` requests. Every 250 requests after the cache first
   fills, the entries each category holds are read from ``cache.stats()``; reported: the
   fewest each non-flooding category held against its guarantee, the flood's, and hit rates.

    .venv/bin/python bench/quotas.py > bench/results/quotas.txt
    .venv/bin/python bench/quotas.py --experiments 3     # only the third
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import subprocess
import time
from typing import Any

from benchkit import PYTHON, ROOT

from prismcache.cache import SemanticCache
from prismcache.config import CacheConfig, load_config
from prismcache.embedders import open_embedder
from prismcache.evaluation.records import TraceLine, read_trace
from prismcache.evaluation.replay import T0, replay
from prismcache.evaluation.vectors import EmbeddingTable, PrecomputedEmbedder
from prismcache.stores.memory import MemoryStore

TRACE = ROOT / "bench" / "out" / "trace_test_20k.jsonl"
FLOOD_CAPACITY = 3000
SHARED_CAPACITY = 2000  # experiment 3
SAMPLE_EVERY = 250
WORDS = ("invoice", "garden", "orbit", "violin", "ledger", "harbor", "pixel", "canyon", "tariff",
         "meadow", "socket", "glacier", "saffron", "turbine", "lantern", "quartz", "meteor",
         "velvet", "cobalt", "falcon", "prairie", "compass", "walnut", "beacon")


def trace() -> list[TraceLine]:
    if not TRACE.exists():
        subprocess.run([PYTHON, "-m", "prismcache.cli", "data", "trace", "--data",
                        str(ROOT.parent / "shared" / "data"), "--split", "test",
                        "--requests", "20000", "--out", str(TRACE)], check=True, cwd=ROOT)
    return read_trace(TRACE)


def flood(lines: list[TraceLine]) -> list[TraceLine]:
    """``lines`` interleaved 1:1 with one-off ``general`` requests (seeded word salad)."""
    rng = random.Random(0)
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        words = " ".join(rng.choice(WORDS) for _ in range(6))
        out.append(TraceLine(query=f"please summarise note {i}: {words}",
                             answer_key=f"flood:{i}", category="general", t=line.t))
    return out


def ceilings(config: CacheConfig) -> CacheConfig:
    """``config`` with the old semantics: every quota is also a hard ceiling."""
    return dataclasses.replace(config, categories={
        n: dataclasses.replace(p, max_share=p.quota) for n, p in config.categories.items()})


def run(name: str, lines: list[TraceLine], config: CacheConfig,
        table: EmbeddingTable) -> dict[str, Any]:
    t = time.perf_counter()
    out = replay(lines, config, table, use_trace_categories=True)
    out["name"], out["wall_s"] = name, time.perf_counter() - t
    return out


def row(res: dict[str, Any]) -> str:
    o = res["overall"]
    return (f"{res['name']:<34}{res['requests']:>7}{o['hit_rate']:>8.4f}"
            f"{o['false_hit_rate']:>8.4f}{o['oracle_hit_rate']:>8.4f}{res['wall_s']:>8.1f}")


def guaranteed(lines: list[TraceLine], base: CacheConfig,
               table: EmbeddingTable) -> tuple[list[str], dict[str, Any]]:
    """Experiment 3: equal shares of a contended cache, one category flooding; the fewest
    entries each category held once the cache was full, and hit rates per category."""
    names = sorted({line.category or "general" for line in lines} | {"general"})
    share = 1 / len(names)
    general = base.policy("general")
    config = dataclasses.replace(  # categories come with the trace: no rules, no classifier
        base, capacity_entries=SHARED_CAPACITY, rules=(),
        classifier=dataclasses.replace(base.classifier, examples=None), categories={
        n: dataclasses.replace(base.categories.get(n, general), quota=share, max_share=None)
        for n in names})
    flooded = flood(lines)
    table.ensure([line.query for line in flooded if isinstance(line.query, str)])
    now = [T0]
    cache = SemanticCache.open(config, store=MemoryStore(), embedder=PrecomputedEmbedder(table),
                               clock=lambda: now[0])
    limit = int(share * SHARED_CAPACITY)
    fewest: dict[str, int] = {}  # of the categories that reached their share
    previous: dict[str, int] = {}
    broken: set[str] = set()
    asked = {n: [0, 0] for n in names}  # requests, hits
    full_at = None
    t = time.perf_counter()
    for i, line in enumerate(flooded):
        now[0] = T0 + i * 0.1
        body = {"model": "replay", "messages": [{"role": "user", "content": line.query}]}
        result = cache.lookup(body, category=line.category)
        asked[line.category or "general"][0] += 1
        if result.hit:
            asked[line.category or "general"][1] += 1
        else:
            cache.store(body, {"choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": line.answer_key}}]}, category=line.category)
        if i % SAMPLE_EVERY == 0:
            stats = cache.stats()
            if full_at is None and sum(s.entries for s in stats.values()) >= SHARED_CAPACITY:
                full_at = i
            for n in names:
                held = stats[n].entries
                # below its share a category may only grow (it loses entries to nobody);
                # once it reached its share it never falls below it
                if held < (limit if n in fewest else previous.get(n, 0)):
                    broken.add(n)
                if n in fewest or held >= limit:
                    fewest[n] = min(fewest.get(n, held), held)
                previous[n] = held
    final = cache.stats()
    wall = time.perf_counter() - t
    cache.close()
    alone = run("no flood", lines, config, table)["categories"]  # the same shares, no flood
    out = [f"3. equal shares ({share:.4f} = {limit} entries each of {SHARED_CAPACITY}, "
           f"{len(names)} categories), flood = 20,000 one-off `general` requests interleaved "
           f"1:1; cache full from request {full_at}; sampled every {SAMPLE_EVERY} requests; "
           f"wall {wall:.1f} s",
           "fewest held: the fewest entries held after first reaching the guarantee ('-': "
           "never reached it; then it must never have shrunk)",
           f"{'category':<18}{'reqs':>7}{'hit':>8}{'no flood':>10}{'fewest held':>13}"
           f"{'at end':>8}{'guarantee':>11}{'kept it':>9}"]
    for n in names:
        requests, hits = asked[n]
        verdict = "(flood)" if n == "general" else "NO" if n in broken else "yes"
        unflooded = alone[n]["hit_rate"] if n in alone else 0.0
        out.append(f"{n:<18}{requests:>7}{hits / max(requests, 1):>8.4f}{unflooded:>10.4f}"
                   f"{fewest.get(n, '-'):>13}{final[n].entries:>8}{limit:>11}{verdict:>9}")
    out.append("every non-flooding category kept its guaranteed share throughout: "
               + ("NO: " + ", ".join(sorted(broken - {"general"}))
                  if broken - {"general"} else "yes"))
    return out, {"names": names, "limit": limit, "fewest": fewest, "asked": asked,
                 "broken": sorted(broken), "full_at": full_at,
                 "final": {n: final[n].entries for n in names}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default="1,2,3", help="which to run, e.g. 3")
    wanted = {int(x) for x in parser.parse_args().experiments.split(",")}
    base = dataclasses.replace(load_config(None), store="memory://", snapshot=None)
    table = EmbeddingTable(open_embedder("minilm"), ROOT / "bench" / "out" / "emb")
    lines = trace()
    head = [f"# bench/quotas.py  {time.strftime('%Y-%m-%d %H:%M')}  python "
            f"{platform.python_version()}  cpus {os.cpu_count()}  load avg "
            + " ".join(f"{x:.2f}" for x in os.getloadavg()),
            f"trace: {TRACE.relative_to(ROOT)} ({len(lines)} lines, "
            f"{len({line.query for line in lines})} distinct queries); embedder minilm", ""]
    if wanted != {3}:
        print("\n".join(head[:-1]))
        both(lines, base, table)
    if 3 in wanted:
        out, data = guaranteed(lines, base, table)
        print("\n".join((head if wanted == {3} else [""]) + out))
        path = ROOT / "bench" / "out" / "quotas_guaranteed.json"
        path.write_text(json.dumps(data, indent=1), "utf-8")


def both(lines: list[TraceLine], base: CacheConfig, table: EmbeddingTable) -> None:
    """Experiments 1 and 2 (printed, and saved to bench/out/quotas.json)."""
    general = [dataclasses.replace(line, category="general") for line in lines]
    unbounded = dataclasses.replace(base, capacity_entries=10_000_000)
    single = [run("ceiling (max_share = quota)", general, ceilings(base), table),
              run("shares (work-conserving)", general, base, table),
              run("unbounded (uniform 0.93)", general, unbounded, table)]
    small = dataclasses.replace(base, capacity_entries=FLOOD_CAPACITY)
    flooded = flood(lines)
    mixed = [run("ceiling, no flood", lines, ceilings(small), table),
             run("ceiling, flood", flooded, ceilings(small), table),
             run("shares, no flood", lines, small, table),
             run("shares, flood", flooded, small, table)]
    head = f"{'config':<34}{'reqs':>7}{'hit':>8}{'false':>8}{'oracle':>8}{'wall s':>8}"
    out = ["", "1. every line in `general` (quota 0.05 of 100,000 entries), default config", head]
    out += [row(r) for r in single]
    out += ["", f"2. own categories, capacity {FLOOD_CAPACITY} entries; flood = 20,000 one-off "
            "`general` requests interleaved 1:1", head]
    out += [row(r) for r in mixed]
    cats = sorted(c for c in mixed[0]["categories"] if c != "general")
    out += ["", "hit rate per non-flooding category (requests of the category, as in the trace)",
            f"{'category':<18}{'reqs':>6}" + "".join(f"{r['name']:>20}" for r in mixed)]
    for c in cats:
        out.append(f"{c:<18}{mixed[0]['categories'][c]['requests']:>6}" + "".join(
            f"{r['categories'][c]['hit_rate']:>20.4f}" for r in mixed))
    others = [sum(r["categories"][c]["hits"] for c in cats) / sum(
        r["categories"][c]["requests"] for c in cats) for r in mixed]
    out.append(f"{'all but general':<18}{'':>6}" + "".join(f"{h:>20.4f}" for h in others))
    print("\n".join(out))
    path = ROOT / "bench" / "out" / "quotas.json"
    path.write_text(json.dumps({"single": single, "mixed": mixed}, indent=1), "utf-8")


if __name__ == "__main__":
    main()
