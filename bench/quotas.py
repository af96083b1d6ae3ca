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

    .venv/bin/python bench/quotas.py > bench/results/quotas.txt
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import subprocess
import time
from typing import Any

from benchkit import PYTHON, ROOT

from prismcache.config import CacheConfig, load_config
from prismcache.embedders import open_embedder
from prismcache.evaluation.records import TraceLine, read_trace
from prismcache.evaluation.replay import replay
from prismcache.evaluation.vectors import EmbeddingTable

TRACE = ROOT / "bench" / "out" / "trace_test_20k.jsonl"
FLOOD_CAPACITY = 3000
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


def main() -> None:
    base = dataclasses.replace(load_config(None), store="memory://", snapshot=None)
    table = EmbeddingTable(open_embedder("minilm"), ROOT / "bench" / "out" / "emb")
    lines = trace()
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
    out = [f"# bench/quotas.py  {time.strftime('%Y-%m-%d %H:%M')}  python "
           f"{platform.python_version()}  cpus {os.cpu_count()}  load avg "
           + " ".join(f"{x:.2f}" for x in os.getloadavg()),
           f"trace: {TRACE.relative_to(ROOT)} ({len(lines)} lines, "
           f"{len({line.query for line in lines})} distinct queries); embedder minilm", "",
           "1. every line in `general` (quota 0.05 of 100,000 entries), default config", head]
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
