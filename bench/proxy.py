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
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
FILLERS = ("please", "kindly", "now", "quickly", "again", "today", "here", "exactly", "simply",
           "really", "actually", "properly", "safely", "easily", "fully", "first", "then",
           "also", "still", "just", "maybe", "somehow", "ever", "basically", "honestly")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Conn:
    """One keep-alive HTTP/1.1 connection: POST JSON, read the whole answer."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> Conn:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def post(self, path: str, body: dict) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer sk-bench\r\ncontent-length: {len(data)}\r\n\r\n".encode()
            + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body_bytes = await self.reader.readexactly(int(headers["content-length"]))
        return status, headers, body_bytes

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def chat(text: str) -> dict:
    return {"model": "m1", "messages": [{"role": "user", "content": text}]}


def gibberish(rng: random.Random) -> str:
    """A query unlike any other (random letters share few trigrams or word pieces)."""
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9)))
                    for _ in range(8))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values_ms: list[float]) -> str:
    return (f"p50 {statistics.median(values_ms):7.2f} ms  p90 {pct(values_ms, 0.9):7.2f}  "
            f"p99 {pct(values_ms, 0.99):7.2f}  max {max(values_ms):7.2f}  (n={len(values_ms)})")


async def hits(port: int, bodies: list[dict], concurrency: int) -> tuple[float, list[float], int]:
    """Send ``bodies`` over ``concurrency`` connections; return (req/s, latencies ms, hits)."""
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    hit_count = 0

    async def worker() -> None:
        nonlocal hit_count
        conn = await Conn(port).open()
        while not queue.empty():
            body = queue.get_nowait()
            t = time.perf_counter()
            status, headers, _ = await conn.post("/v1/chat/completions", body)
            latencies.append((time.perf_counter() - t) * 1000)
            hit_count += status == 200 and headers.get("x-prism-cache") == "hit"
        await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(bodies) / (time.perf_counter() - t0), latencies, hit_count


async def misses(proxy: int, upstream: int, n: int) -> tuple[list[float], list[float], int]:
    """Alternate a direct upstream call and a proxied miss, each with a fresh query."""
    direct_conn, proxy_conn = await Conn(upstream).open(), await Conn(proxy).open()
    direct, proxied, miss_count = [], [], 0
    rng = random.Random(11)
    for i in range(n):
        body = chat(gibberish(rng))
        t = time.perf_counter()
        await direct_conn.post("/v1/chat/completions", body)
        direct.append((time.perf_counter() - t) * 1000)
        body = chat(gibberish(rng))
        t = time.perf_counter()
        _, headers, _ = await proxy_conn.post("/v1/chat/completions", body)
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
        proc = subprocess.Popen(
            [PYTHON, "-m", "prismcache.cli", "serve", "--config", str(path), "--port", str(port),
             "--upstream", f"http://127.0.0.1:{upstream_port}/v1"],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(port, proc)
            print(f"\n== {name}  (proxy ready in {time.perf_counter() - t:.1f} s)")
            asyncio.run(measure(port, upstream_port, args))
        finally:
            proc.terminate()
            proc.wait(timeout=30)


async def measure(port: int, upstream_port: int, args: argparse.Namespace) -> None:
    base = "how do i reset my password"
    conn = await Conn(port).open()
    await conn.post("/v1/chat/completions", chat(base))  # the one entry every hit serves
    await conn.close()
    exact = [chat(base)] * args.hits
    rng = random.Random(7)
    semantic = [chat(f"{base} {rng.choice(FILLERS)} {rng.choice(FILLERS)} {i}x")
                for i in range(args.hits)]
    await hits(port, exact[:300], args.concurrency)  # warm up
    for label, bodies in (("exact-tier hits", exact), ("semantic hits", semantic)):
        rate, lat, n_hit = await hits(port, bodies, args.concurrency)
        print(f"{label:16s} c={args.concurrency}: {rate:7.0f} req/s  {summary(lat)}  "
              f"hit rate {n_hit / len(bodies):.2f}")
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
    upstream = subprocess.Popen(
        [PYTHON, str(ROOT / "tests" / "fake_upstream.py"), "--port", str(upstream_port),
         "--latency", str(args.latency)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(upstream_port, upstream)
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
    finally:
        upstream.terminate()
        upstream.wait(timeout=30)


if __name__ == "__main__":
    main()
