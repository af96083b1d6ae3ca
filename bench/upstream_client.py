"""Benchmark HTTP clients for the proxy's upstream calls against the fake upstream on loopback.

The proxy forwards every miss with one shared client (:mod:`prismcache.server.upstream`:
``httpx.AsyncClient``). This compares, in one process and one run, the candidates for that
job, each set up as the proxy would (keep-alive pool, no compression, a JSON body):

* ``httpx``: ``httpx.AsyncClient`` (today's client);
* ``httpcore``: httpx's own connection pool, ``httpcore.AsyncConnectionPool``, called directly;
* ``aiohttp``: ``aiohttp.ClientSession`` with a ``TCPConnector``.

For each: requests/s, latency p50/p99 and the client's CPU time per request (the proxy's event
loop is what a miss waits on under load), for a JSON answer one at a time and with 50
concurrent requests, and for a streamed answer (read line by line) with 50 concurrent.
Rounds alternate the clients (A B C A B C) so a change of the shared machine's load hits all;
figures are pooled over the rounds. The yardstick (``benchkit.yardstick``) runs before and
after, as in every benchmark here.

    .venv/bin/python bench/upstream_client.py > bench/results/upstream_client.txt
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time

import aiohttp
import httpcore
import httpx
from benchkit import free_port, pct, serving, upstream_command, yardstick

BODY = json.dumps({"model": "m1", "messages": [{"role": "user", "content": "hello there"}]}
                  ).encode()
STREAM_BODY = json.dumps({"model": "m1", "stream": True,
                          "messages": [{"role": "user", "content": "hello there"}]}).encode()
HEADERS = {"content-type": "application/json", "accept-encoding": "identity",
           "authorization": "Bearer sk-bench"}



class Client:
    """One candidate: open, call, close."""

    name = ""

    def __init__(self, base: str) -> None:
        self.url = base + "/chat/completions"

    async def open(self) -> None: ...

    async def call(self, body: bytes, stream: bool) -> int:
        raise NotImplementedError

    async def close(self) -> None: ...


class Httpx(Client):
    name = "httpx"

    async def open(self) -> None:
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(300, connect=5, pool=300),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
            follow_redirects=False)

    async def call(self, body: bytes, stream: bool) -> int:
        if not stream:
            response = await self.client.request("POST", self.url, content=body,
                                                 headers=HEADERS)
            return len(response.content)
        request = self.client.build_request("POST", self.url, content=body, headers=HEADERS)
        response = await self.client.send(request, stream=True)
        try:
            return sum([len(line) async for line in response.aiter_lines()])
        finally:
            await response.aclose()

    async def close(self) -> None:
        await self.client.aclose()


class Httpcore(Client):
    name = "httpcore"

    async def open(self) -> None:
        self.pool = httpcore.AsyncConnectionPool(max_connections=512,
                                                 max_keepalive_connections=64)
        self.headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]

    async def call(self, body: bytes, stream: bool) -> int:
        headers = [*self.headers, (b"content-length", str(len(body)).encode())]
        if not stream:
            response = await self.pool.request("POST", self.url, headers=headers, content=body)
            return len(response.content)
        async with self.pool.stream("POST", self.url, headers=headers, content=body) as r:
            n, pending = 0, b""
            async for chunk in r.aiter_stream():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                n += sum(len(line) for line in lines)
            return n

    async def close(self) -> None:
        await self.pool.aclose()


class Aiohttp(Client):
    name = "aiohttp"

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(sock_read=300, sock_connect=5),
            auto_decompress=False)

    async def call(self, body: bytes, stream: bool) -> int:
        async with self.session.post(self.url, data=body, headers=HEADERS) as response:
            if not stream:
                return len(await response.read())
            return sum([len(line) async for line in response.content])

    async def close(self) -> None:
        await self.session.close()


async def load(client: Client, n: int, concurrency: int, stream: bool
               ) -> tuple[float, list[float], float]:
    """``n`` calls over ``concurrency`` tasks; returns (req/s, latencies ms, CPU ms/req)."""
    body = STREAM_BODY if stream else BODY
    latencies: list[float] = []
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t = time.perf_counter()
            assert await client.call(body, stream) > 0
            latencies.append((time.perf_counter() - t) * 1000)

    cpu, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
    return len(latencies) / wall, latencies, cpu / len(latencies) * 1000


WORKLOADS = (("JSON, 1 at a time", 1, False), ("JSON, 50 concurrent", 50, False),
             ("stream, 50 concurrent", 50, True))


async def run(base: str, rounds: int, n: int) -> None:
    clients = [cls(base) for cls in (Httpx, Httpcore, Aiohttp)]
    results: dict[tuple[str, str], list[tuple[float, list[float], float]]] = {}
    for client in clients:
        await client.open()
        await load(client, 200, 10, False)  # warm up: connections, imports
    for _ in range(rounds):
        for label, concurrency, stream in WORKLOADS:
            count = n // 5 if concurrency == 1 else n
            for client in clients:
                results.setdefault((label, client.name), []).append(
                    await load(client, count, concurrency, stream))
    for client in clients:
        await client.close()
    for label, _, _ in WORKLOADS:
        print(f"\n{label}:")
        base_rate = None
        for client in clients:
            runs = results[(label, client.name)]
            lat = [x for _, lats, _ in runs for x in lats]
            rate = statistics.median(r for r, _, _ in runs)
            cpu = statistics.median(c for _, _, c in runs)
            base_rate = base_rate or rate
            print(f"  {client.name:8s} {rate:7.0f} req/s ({rate / base_rate:4.2f}x httpx)  "
                  f"p50 {statistics.median(lat):6.2f} ms  p99 {pct(lat, 0.99):6.2f} ms  "
                  f"client CPU {cpu:5.3f} ms/req  (n={len(lat)})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="per round and workload")
    parser.add_argument("--latency", type=float, default=0.0, help="upstream latency (s)")
    args = parser.parse_args()
    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"prismcache upstream client benchmark  {time.strftime('%Y-%m-%d %H:%M')}  "
          f"python {platform.python_version()}  cpus {os.cpu_count()}  load average "
          f"{load_avg}  httpx {httpx.__version__}  httpcore {httpcore.__version__}  "
          f"aiohttp {aiohttp.__version__}  upstream latency {args.latency * 1000:.0f} ms")
    before = yardstick(150)
    port = free_port()
    with serving(upstream_command(port, "--latency", str(args.latency)), port):
        asyncio.run(run(f"http://127.0.0.1:{port}/v1", args.rounds, args.requests))
    after = yardstick(150)
    print(f"\nyardstick p50 {before.p50_ms:.2f} ms before, {after.p50_ms:.2f} ms after "
          "(the machine's speed in this run; the figures above are ratios to httpx)")


if __name__ == "__main__":
    main()
