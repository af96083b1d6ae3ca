"""Benchmark the caching proxy on loopback against the fake upstream (tests/fake_upstream.py).

Measures, in one run, for each embedder (``hash:64``, the bundled ``minilm``) and each way of
calling the cache's lookup (on a worker thread, or inline on the event loop):

* hit-path throughput (requests/s) and latency at a fixed concurrency, for exact-tier hits
  (verbatim repeats) and semantic hits (a different paraphrase every request);
* the latency a miss adds: each request goes once straight to the upstream and once through
  the proxy (a fresh query, so a miss), alternating; the added latency is the paired
  difference.

The upstream, the proxy and this client are three processes. The client is a minimal
HTTP/1.1 keep-alive client on asyncio streams, so that it costs the shared CPUs as little as
possible (httpx spends more per request than the proxy does on a hit).

    .venv/bin/python bench/proxy.py [--quick] > bench/results/proxy.txt
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from benchkit import (
    Conn,
    chat,
    free_port,
    gibberish,
    hit_workloads,
    pct,
    serve_command,
    serving,
    summary,
    upstream_command,
)

FILLERS = ("please", "kindly", "now", "quickly", "again", "today", "here", "exactly", "simply",
           "really", "actually", "properly", "safely", "easily", "fully", "first", "then",
           "also", "still", "just", "maybe", "somehow", "ever", "basically", "honestly")


async def misses(proxy: int, upstream: int, n: int) -> tuple[list[float], list[float], int]:
    """Alternate a direct upstream call and a proxied miss, each with a fresh query."""
    direct_conn, proxy_conn = await Conn(upstream).open(), await Conn(proxy).open()
    direct, proxied, miss_count = [], [], 0
    rng = random.Random(11)
    for i in range(n):
        body = chat(gibberish(rng))
        t = time.perf_counter()
        await direct_conn.post(body)
        direct.append((time.perf_counter() - t) * 1000)
        body = chat(gibberish(rng))
        t = time.perf_counter()
        _, headers, _ = await proxy_conn.post(body)
        proxied.append((time.perf_counter() - t) * 1000)
        miss_count += headers.get("x-prism-cache") == "miss"
    await direct_conn.close()
    await proxy_conn.close()
    return direct, proxied, miss_count


def run_config(name: str, config: dict, upstream_port: int, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "bench.yaml")
        path.write_text(json.dumps(config))  # JSON is YAML
        port = free_port()
        t = time.perf_counter()
        with serving(serve_command(path, port, f"http://127.0.0.1:{upstream_port}/v1"), port,
                     cwd=tmp):
            print(f"\n== {name}  (proxy ready in {time.perf_counter() - t:.1f} s)")
            asyncio.run(measure(port, upstream_port, args))


async def measure(port: int, upstream_port: int, args: argparse.Namespace) -> None:
    base = "how do i reset my password"
    conn = await Conn(port).open()
    await conn.post(chat(base))  # the one entry every hit serves
    await conn.close()
    await hit_workloads([port], base, args.hits, args.concurrency, FILLERS, print)
    direct, proxied, n_miss = await misses(port, upstream_port, args.misses)
    added = [p - d for p, d in zip(proxied, direct, strict=True)]
    print(f"upstream direct : {summary(direct)}")
    print(f"through proxy   : {summary(proxied)}  miss rate {n_miss / len(proxied):.2f}")
    print(f"added by a miss : p50 {statistics.median(added):6.2f} ms  p90 {pct(added, 0.9):6.2f}"
          f"  p99 {pct(added, 0.99):6.2f}  (paired differences; p99(proxy) - p99(direct) = "
          f"{pct(proxied, 0.99) - pct(direct, 0.99):.2f} ms)")
    print(f"proxy's own view: {await own_view(port)}")


async def own_view(port: int) -> str:
    """Mean miss overhead and upstream wait, from the proxy's /metrics."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("miss_overhead_seconds", "upstream_seconds"):
            for part in ("_sum", "_count"):
                if line.startswith(f"prismcache_{name}{part}{{"):
                    key = name + part
                    sums[key] = sums.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    parts = []
    for name in ("miss_overhead_seconds", "upstream_seconds"):
        if sums.get(name + "_count"):
            mean = sums[name + "_sum"] / sums[name + "_count"] * 1000
            parts.append(f"mean {name.replace('_seconds', '')} {mean:.2f} ms")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05, help="upstream latency (s)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--hits", type=int, default=4000, help="requests per hit workload")
    parser.add_argument("--misses", type=int, default=300, help="paired miss measurements")
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--only", choices=("hash", "minilm"), help="one embedder only")
    args = parser.parse_args()
    if args.quick:
        args.hits, args.misses = 600, 40
    print(f"prismcache proxy benchmark  {time.strftime('%Y-%m-%d %H:%M')}  "
          f"python {platform.python_version()}  cpus {os.cpu_count()}  "
          f"upstream latency {args.latency * 1000:.0f} ms  (loopback; CPUs shared with other jobs)")
    upstream_port = free_port()
    with serving(upstream_command(upstream_port, "--latency", str(args.latency)),
                 upstream_port):
        for embedder in ("hash:64", "minilm"):
            if args.only and not embedder.startswith(args.only):
                continue
            for inline in (False, True):
                config = {
                    "store": "memory://", "embedder": embedder, "rules": [],
                    "default_category": "general",
                    "categories": {"general": {"threshold": 0.5 if embedder == "hash:64" else 0.8,
                                               "guards": []}},
                    "classifier": {"examples": None},
                    "server": {"lookup_inline": inline},
                }
                run_config(f"embedder {embedder}, lookup {'inline' if inline else 'in a thread'}",
                           config, upstream_port, args)


if __name__ == "__main__":
    main()
