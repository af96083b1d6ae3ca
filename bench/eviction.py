"""GDSF (+ cost-aware admission) versus LRU at equal memory, with ``prismcache replay``.

Replays the multi-category dev trace (``prismcache data trace --requests 20000``, written to
bench/out/eviction_trace.jsonl) through the configs bench/results/eviction_*.yaml — the same
byte capacity, small enough to force evictions — and summarises hit rate, false-hit rate,
upstream seconds and money saved (replay's per-category prices), and the completion bytes the
hits spared the upstream (replay's assumed completion tokens x 4 bytes per token).

    .venv/bin/python bench/eviction.py > bench/results/eviction_summary.txt
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "bench" / "out" / "eviction_trace.jsonl"
CONFIGS = ("lru", "gdsf_only", "gdsf", "unbounded")
BYTES_PER_TOKEN = 4


def main() -> None:
    from prismcache.config import load_config
    from prismcache.evaluation.replay import COMPLETION_TOKENS
    if not TRACE.exists():
        subprocess.run([sys.executable, "-m", "prismcache.cli", "data", "trace", "--data",
                        str(ROOT.parent / "shared" / "data"), "--requests", "20000",
                        "--out", str(TRACE)], check=True, cwd=ROOT)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# bench/eviction.py  {time.strftime('%Y-%m-%d %H:%M')}  load avg {load}")
    print(f"trace: {TRACE.relative_to(ROOT)} (20,000 requests, classified by the cache)")
    print(f"{'config':<12}{'capacity':>10}{'hit':>7}{'false':>7}{'oracle':>8}"
          f"{'upstream s saved':>18}{'USD saved':>11}{'MB not generated':>18}")
    for name in CONFIGS:
        config = ROOT / "bench" / "results" / f"eviction_{name}.yaml"
        out = ROOT / "bench" / "results" / f"eviction_{name}.json"
        subprocess.run([sys.executable, "-m", "prismcache.cli", "replay", str(TRACE),
                        "--config", str(config), "--vector-cache", str(ROOT / "bench" / "out" /
                                                                      "emb"),
                        "--latency-samples", "50", "--json", str(out)], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text("utf-8"))
        o = result["overall"]
        tokens = sum(c["hits"] * COMPLETION_TOKENS.get(name_, COMPLETION_TOKENS["default"])
                     for name_, c in result["categories"].items())
        cap = load_config(config).capacity_bytes
        print(f"{name:<12}{'none' if cap is None else f'{cap // 1000} KB':>10}"
              f"{o['hit_rate']:>7.3f}{o['false_hit_rate']:>7.3f}{o['oracle_hit_rate']:>8.3f}"
              f"{o['latency_saved_s']:>18.0f}{o['money_saved_usd']:>11.3f}"
              f"{tokens * BYTES_PER_TOKEN / 1e6:>18.2f}")


if __name__ == "__main__":
    main()
