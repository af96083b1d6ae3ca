"""Benchmark the caching proxy on loopback against the fake upstream (tests/fake_upstream.py).

Measures, in one run, for each configuration (embedder; batching of concurrent embeddings on
or off; one worker process or several over Redis):

* hit-path throughput (requests/s) and latency at a fixed concurrency (32 clients by
  default), for exact-tier hits (verbatim repeats) and semantic hits (a different paraphrase
  of the stored question every request);
* the latency a miss adds: each client sends a fresh query once straight to the upstream and
  once through the proxy (a miss), alternating; the added latency is the paired difference;
  measured with one client and with 50 concurrent clients (``--miss-clients 8 16 32 50``:
  one run per value), and for each the CPU time per miss of each process: the proxy's
  process tree, the fake upstream (per call: it answers 2 per pair), this client (per
  request), and how busy the whole machine was (``/proc/stat``).

Every figure also appears as a ratio to the yardstick (``benchkit.yardstick``: one plain
single-query inference of the bundled model), measured in this process right before and right
after each configuration and pooled (the machine's load moves): latencies divided by its
median, throughputs by its one-at-a-time rate.

The upstream, the proxy and this client are separate processes. The hit workloads run on
wrk (``apt-get install wrk``; ``--client python`` otherwise), which costs the two shared CPUs
~25 us per request against ~140 us for the minimal asyncio client in ``benchkit`` (each line
states the client's CPU per request); the miss workloads pair a direct and a proxied call with
that asyncio client.

``--refs`` runs the proxy of other commits beside this one's (each exported with ``git
archive`` and put first on ``PYTHONPATH``), in ``--rounds`` interleaved rounds, so that a change
is measured against its before in the same run, under the same load:

    .venv/bin/python bench/proxy.py [--quick] > bench/results/proxy.txt
    .venv/bin/python bench/proxy.py --setups dynamic --refs 93c320b HEAD --rounds 3 --misses 0
    .venv/bin/python bench/proxy.py --setups hash --no-hits --miss-clients 8 16 32 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import (
    ROOT,
    WRK,
    Conn,
    Yardstick,
    chat,
    cpu_seconds,
    free_port,
    gibberish,
    hits,
    pct,
    python_hits,
    serve_command,
    serving,
    thread_cpu_seconds,
    upstream_command,
    wrk_hits,
    yardstick,
)

#: words of a fresh miss query: ~13 model tokens, like a real short question (8 words: ~35)
MISS_WORDS = 3
FILLERS = ("please", "kindly", "now", "quickly", "again", "today", "here", "exactly", "simply",
           "really", "actually", "properly", "safely", "easily", "fully", "first", "then",
           "also", "still", "just", "maybe", "somehow", "ever", "basically", "honestly")


async def misses(proxy: int, upstream: int, n: int) -> tuple[list[float], list[float], int]:
    """Alternate a direct upstream call and a proxied miss, each with a fresh query."""
    direct_conn, proxy_conn = await Conn(upstream).open(), await Conn(proxy).open()
    direct, proxied, miss_count = [], [], 0
    rng = random.Random(11)
    for i in range(n):
        body = chat(gibberish(rng, MISS_WORDS))
        t = time.perf_counter()
        await direct_conn.post(body)
        direct.append((time.perf_counter() - t) * 1000)
        body = chat(gibberish(rng, MISS_WORDS))
        t = time.perf_counter()
        _, headers, _ = await proxy_conn.post(body)
        proxied.append((time.perf_counter() - t) * 1000)
        miss_count += headers.get("x-prism-cache") == "miss"
    await direct_conn.close()
    await proxy_conn.close()
    return direct, proxied, miss_count


async def posted(conn: Conn, body: dict) -> tuple[int, dict[str, str], bytes]:
    """``conn.post``, reconnecting once if the server closed the idle keep-alive connection
    (uvicorn does after 5 s, which a slow proxied miss under load can exceed)."""
    try:
        return await conn.post(body)
    except (asyncio.IncompleteReadError, ConnectionError):
        await conn.open()
        return await conn.post(body)


async def concurrent_misses(proxy: int, upstream: int, clients: int,
                            per_client: int) -> tuple[list[float], list[float], int]:
    """``clients`` clients at once, each alternating a direct upstream call and a proxied
    miss (fresh queries); returns (direct ms, proxied ms, misses), paired by index."""
    direct: list[float] = []
    proxied: list[float] = []
    miss_count = 0

    async def client(k: int) -> None:
        nonlocal miss_count
        direct_conn, proxy_conn = await Conn(upstream).open(), await Conn(proxy).open()
        # fresh queries in every run: a proxy measured at several concurrencies holds the
        # answers of the runs before (a seed per client index alone would repeat them: hits)
        rng = random.Random(f"{clients} clients, client {k}")
        for _ in range(per_client):
            t = time.perf_counter()
            await posted(direct_conn, chat(gibberish(rng, MISS_WORDS)))
            d = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            _, headers, _ = await posted(proxy_conn, chat(gibberish(rng, MISS_WORDS)))
            direct.append(d)
            proxied.append((time.perf_counter() - t) * 1000)
            miss_count += headers.get("x-prism-cache") == "miss"
        await direct_conn.close()
        await proxy_conn.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    return direct, proxied, miss_count


def added_line(label: str, direct: list[float], proxied: list[float],
               figures: dict[str, float]) -> str:
    added = [p - d for p, d in zip(proxied, direct, strict=True)]
    p50, p99 = statistics.median(added), pct(added, 0.99)
    figures[f"miss {label} p50"], figures[f"miss {label} p99"] = p50, p99
    return (f"added by a miss ({label}): p50 {p50:6.2f} ms  p90 {pct(added, 0.9):6.2f}  "
            f"p99 {p99:6.2f}  (n={len(added)}; direct p50 {statistics.median(direct):.1f} ms)")


def ratios(figures: dict[str, float], stick: Yardstick) -> str:
    """The configuration's figures as multiples of the yardstick."""
    parts = [f"semantic hits/s {stick.rate_ratio(figures['semantic hits/s'])} its rate",
             f"exact hits/s {stick.rate_ratio(figures['exact hits/s'])}"] \
        if "exact hits/s" in figures else []
    parts += [f"{label} {stick.ratio(ms)}" for label, ms in figures.items()
              if label.startswith("miss") and label.endswith(("p50", "p99"))]
    parts += [f"proxy CPU per {label.split()[0]} hit {stick.ratio(us / 1000)}"
              for label, us in figures.items() if label.endswith("cpu us")]
    return "ratios to the yardstick: " + ", ".join(parts)


def run_config(name: str, config: dict, upstream_port: int, args: argparse.Namespace,
               store: str | None, workers: int, tree: Path | None = None) -> dict[str, float]:
    """Serve ``config`` (the code of ``tree``, else this checkout's), measure, print; return
    the figures and, under ``"yardstick rate"``, the pooled yardstick's one-at-a-time rate."""
    env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "bench.yaml")
        path.write_text(json.dumps(config))  # JSON is YAML
        port = free_port()
        before = yardstick(150)
        t = time.perf_counter()
        command = serve_command(path, port, f"http://127.0.0.1:{upstream_port}/v1",
                                store=store, workers=workers)
        args.workers = workers
        with serving(command, port, cwd=tmp, env=env, timeout=180) as proc:
            print(f"\n== {name}  (proxy ready in {time.perf_counter() - t:.1f} s)", flush=True)
            figures = asyncio.run(measure(port, upstream_port, args, proc.pid))
        after = yardstick(150)
        # the load moves during a configuration: the yardstick before and after, pooled
        stick = Yardstick(p50_ms=(before.p50_ms + after.p50_ms) / 2,
                          p99_ms=max(before.p99_ms, after.p99_ms), n=before.n + after.n)
        print(f"yardstick p50 {before.p50_ms:.2f} ms before, {after.p50_ms:.2f} ms after: "
              f"{stick.p50_ms:.2f} ms = {stick.rate:.0f}/s one at a time")
        print(ratios(figures, stick), flush=True)
        return {**figures, "yardstick rate": stick.rate}


async def measure(port: int, upstream_port: int, args: argparse.Namespace,
                  pid: int | None = None) -> dict[str, float]:
    """Run the workloads, print their lines, return the key figures (ms, req/s; the CPU
    microseconds per hit of the proxy's process tree ``pid``, and per miss of each process)."""
    base = "how do i reset my password"
    conn = await Conn(port).open()
    await conn.post(chat(base))  # the one entry every hit serves
    await conn.close()
    await asyncio.sleep(0.5)  # other workers learn of it through the change feed
    figures: dict[str, float] = {}
    if not args.no_hits:
        await hit_workloads(port, base, args, pid, figures)
    if not args.misses:
        return figures
    direct, proxied, n_miss = await misses(port, upstream_port, args.misses)
    print(added_line("1 client", direct, proxied, figures) +
          f"  miss rate {n_miss / len(proxied):.2f}", flush=True)
    for clients in args.miss_clients:
        cpu = Cpu(pid, args.upstream_pid, loop=args.workers == 1)
        direct, proxied, n_miss = await concurrent_misses(port, upstream_port, clients,
                                                          args.misses_per_client)
        label = f"{clients} clients"
        print(added_line(label, direct, proxied, figures) +
              f"  miss rate {n_miss / len(proxied):.2f}", flush=True)
        print(cpu.line(label, len(proxied), figures), flush=True)
    print(f"proxy's own view: {await own_view(port)}")
    return figures


async def hit_workloads(port: int, base: str, args: argparse.Namespace, pid: int | None,
                        figures: dict[str, float]) -> None:
    """The exact-hit and semantic-hit workloads: print their lines, fill ``figures``."""
    c = args.concurrency
    exact = [chat(base)] * args.hits
    rng = random.Random(7)
    semantic = [chat(f"{base} {rng.choice(FILLERS)} {rng.choice(FILLERS)} {i}x")
                for i in range(args.semantic)]
    await hits([port], exact[:300], c)  # warm up
    for label, bodies in (("exact", exact), ("semantic", semantic)):
        if args.client == "wrk":
            load = wrk_hits(port, base, FILLERS, semantic=label == "semantic",
                            seconds=args.seconds, concurrency=c, server_pid=pid)
        else:
            load = await python_hits([port], bodies, c, server_pid=pid)
        figures[f"{label} hits/s"] = load.rate * load.hits / max(1, load.n)
        if load.server_cpu_us is not None:
            figures[f"{label} cpu us"] = load.server_cpu_us
        print(load.line(f"{label} hits", c), flush=True)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every core, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


class Cpu:
    """The CPU time each process spends over a miss workload: the proxy's process tree (and
    its main thread: the event loop of a single-process proxy), the fake upstream, this
    client (which also runs the yardstick, not meanwhile), the whole machine."""

    def __init__(self, proxy_pid: int | None, upstream_pid: int | None, *,
                 loop: bool = True) -> None:
        """``loop``: ``proxy_pid`` serves itself (no worker processes), so its main thread
        is the event loop."""
        self.pids = proxy_pid, upstream_pid
        self.start = time.perf_counter()
        self.proxy, self.upstream = (cpu_seconds(p) if p else 0.0 for p in self.pids)
        self.has_loop = loop and proxy_pid is not None
        self.loop = thread_cpu_seconds(proxy_pid) if self.has_loop and proxy_pid else 0.0
        self.client = time.process_time()
        self.busy, self.total = machine_busy()

    def line(self, label: str, pairs: int, figures: dict[str, float]) -> str:
        """One line: CPU per miss of each process (a pair is one direct call and one proxied
        miss: the client sends 2 requests per pair, the upstream answers 2), the load."""
        wall = time.perf_counter() - self.start
        proxy, upstream = (cpu_seconds(p) - before if p else 0.0
                           for p, before in zip(self.pids, (self.proxy, self.upstream),
                                                strict=True))
        client = time.process_time() - self.client
        busy, total = machine_busy()
        us = {"proxy": proxy / pairs * 1e6, "upstream": upstream / (2 * pairs) * 1e6,
              "client": client / (2 * pairs) * 1e6}
        if self.has_loop and self.pids[0]:
            us["loop"] = (thread_cpu_seconds(self.pids[0]) - self.loop) / pairs * 1e6
        for name, value in us.items():
            figures[f"cpu {label} {name} us"] = value
        cores = os.cpu_count() or 1
        machine = (busy - self.busy) / max(1e-9, total - self.total)
        ours = (proxy + upstream + client) / wall / cores
        figures[f"cpu {label} machine"] = machine
        loop = f" (its main thread {us['loop']:.0f} us)" if "loop" in us else ""
        return (f"CPU per miss ({label}, {wall:.1f} s): proxy {us['proxy']:.0f} us{loop}, "
                f"upstream {us['upstream']:.0f} us per call, client {us['client']:.0f} us per "
                f"request; {pairs / wall:.0f} misses/s; these 3 processes "
                f"{ours:.0%} of the {cores} cores, the machine {machine:.0%} busy")


async def own_view(port: int) -> str:
    """Mean miss overhead and upstream wait, and the work shed, from the proxy's /metrics."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    sums: dict[str, float] = {}
    shed: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("prismcache_shed_total{"):
            what = line.split('what="', 1)[1].split('"', 1)[0]
            shed[what] = shed.get(what, 0) + int(float(line.rsplit(" ", 1)[1]))
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
    parts += [f"shed {what} {n}" for what, n in sorted(shed.items())]
    return ", ".join(parts)


#: (label, embedder, embed_batch_max, workers); workers > 0 run over Redis, 0 over memory://
SETUPS = {
    "before": ("no batching (before)", "minilm", 1, 0),
    "batched": ("batching", "minilm", 16, 0),
    "dynamic": ("batching", "minilm:dynamic", 16, 0),
    "redis1": ("batching, Redis store, 1 worker", "minilm:dynamic", 16, 1),
    "redis2": ("batching, Redis store, --workers 2", "minilm:dynamic", 16, 2),
    "hash": ("hash embedder, batching", "hash:64", 16, 0),
    # the workers over Redis without model work: what a second event loop adds
    "hredis1": ("hash embedder, batching, Redis store, 1 worker", "hash:64", 16, 1),
    "hredis2": ("hash embedder, batching, Redis store, --workers 2", "hash:64", 16, 2),
    # exact hits without the hop to a worker thread (semantic ones then embed on the loop)
    "inline": ("batching, lookup_inline", "minilm:dynamic", 16, 0),
    # every lookup embeds, however long the embedder's queue (no busy misses)
    "unshed": ("batching, lookup_budget_ms 0", "minilm:dynamic", 16, 0),
    # a fixed budget in place of the automatic one (hit rate x upstream latency)
    "shed20": ("batching, lookup_budget_ms 20", "minilm:dynamic", 16, 0),
}
#: the ``server:`` keys a setup sets beside ``embed_batch_max`` (refs before a key existed
#: reject it: run such setups at refs that have it)
SERVER = {"inline": {"lookup_inline": True}, "unshed": {"lookup_budget_ms": 0},
          "shed20": {"lookup_budget_ms": 20}}


def export(ref: str, into: Path) -> Path:
    """The ``prismcache`` package of git ``ref``, exported under ``into``; returns the
    directory to put first on ``PYTHONPATH``."""
    tree = into / ref.replace("/", "_")
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "prismcache"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def config_of(embedder: str, batch_max: int, server: dict | None = None) -> dict:
    """The proxy's config: one category that threshold alone decides; ``server``: further
    keys of its ``server:`` section."""
    return {
        "store": "memory://", "embedder": embedder, "rules": [],
        "default_category": "general",
        # threshold and nothing else decides (no guards, no verifier): the
        # benchmark measures the hit path, not the verifier's verdicts
        "categories": {"general": {"threshold": 0.5 if embedder == "hash:64" else 0.8,
                                   "guards": [], "verifier": "none"}},
        "classifier": {"examples": None},
        "server": {"embed_batch_max": batch_max, **(server or {})},
    }


def compared(results: dict[str, list[dict[str, float]]]) -> None:
    """The refs side by side: medians over the rounds, absolute and in yardstick ratio, and
    the proxy's CPU per hit and per miss (which the machine's load moves far less than the
    rates and latencies)."""
    print("\n== side by side (median over rounds; ratio = hits/s / the yardstick's rate; "
          "CPU = the proxy's CPU time per hit or miss; 'the first' = the first ref's, same setup)")
    first: dict[tuple[str, str], float] = {}  # (setup, figure): the first ref's
    for name, runs in results.items():
        setup, parts = name.rsplit(", at ", 1)[0], []
        for figure in ("exact hits/s", "semantic hits/s"):
            if all(figure in r for r in runs):
                rate = statistics.median(r[figure] for r in runs)
                ratio = statistics.median(r[figure] / r["yardstick rate"] for r in runs)
                parts.append(f"{figure} {rate:6.0f} ({ratio:5.2f}x)")
        for figure in ("exact cpu us", "semantic cpu us"):
            if all(figure in r for r in runs):
                us = statistics.median(r[figure] for r in runs)
                before = first.setdefault((setup, figure), us)
                parts.append(f"CPU/{figure.split()[0]} hit {us:5.0f} us "
                             f"({us / before:.2f}x the first)")
        shown = [f for f in runs[0] if f.startswith("miss") or f.endswith(("proxy us", "loop us"))]
        for figure in (f for f in shown if all(f in r for r in runs)):
            value = statistics.median(r[figure] for r in runs)
            before = first.setdefault((setup, figure), value)
            unit = "us" if figure.endswith("us") else "ms"
            parts.append(f"{figure.removesuffix(' us')} {value:.1f} {unit} "
                         f"({value / before:.2f}x the first)")
        print(f"{name:48s} " + "  ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05, help="upstream latency (s)")
    parser.add_argument("--concurrency", type=int, default=32, help="clients for hits")
    parser.add_argument("--client", choices=("wrk", "python"),
                        default="wrk" if WRK else "python", help="hit-workload client")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="seconds per hit workload (wrk)")
    parser.add_argument("--hits", type=int, default=4000,
                        help="requests, exact-hit workload (python client)")
    parser.add_argument("--semantic", type=int, default=2000,
                        help="requests, semantic-hit workload (python client)")
    parser.add_argument("--misses", type=int, default=200,
                        help="paired misses, one client (0: no miss workloads)")
    parser.add_argument("--miss-clients", type=int, nargs="+", default=[50],
                        help="concurrent clients of the miss workload (one run per value)")
    parser.add_argument("--misses-per-client", type=int, default=8)
    parser.add_argument("--setups", nargs="+", choices=sorted(SETUPS),
                        default=["before", "batched", "dynamic", "redis1", "redis2"])
    parser.add_argument("--refs", nargs="+", default=[],
                        help="git refs whose proxy runs each setup, side by side")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of --refs")
    parser.add_argument("--no-hits", action="store_true",
                        help="skip the hit workloads (the miss workloads only)")
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.hits, args.semantic, args.misses_per_client, args.seconds = 600, 300, 2, 3.0
        args.misses = min(args.misses, 40)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"prismcache proxy benchmark  {time.strftime('%Y-%m-%d %H:%M')}  "
          f"python {platform.python_version()}  cpus {os.cpu_count()}  load average {load}  "
          f"upstream latency {args.latency * 1000:.0f} ms  (loopback; CPUs shared)  "
          f"hit client {args.client}")
    upstream_port = free_port()
    redis = None
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, \
            serving(upstream_command(upstream_port, "--latency", str(args.latency)),
                    upstream_port) as upstream:
        args.upstream_pid = upstream.pid
        trees = {ref: export(ref, Path(tmp, "trees")) for ref in args.refs}
        try:
            for round_ in range(args.rounds):
                for key in args.setups:
                    label, embedder, batch_max, workers = SETUPS[key]
                    store = None
                    if workers:
                        if redis is None:
                            sys.path.insert(0, str(ROOT / "tests"))
                            from redis_support import RedisServer

                            redis = RedisServer("redis-server", Path(tmp))
                            redis.start()
                        redis.command("FLUSHALL")
                        store = redis.url
                    for ref, tree in (trees or {"": None}).items():
                        if redis is not None and workers:
                            redis.command("FLUSHALL")
                        name = f"embedder {embedder}, {label}" + (f", at {ref}" if ref else "")
                        if args.rounds > 1:
                            name += f", round {round_ + 1}"
                        figures = run_config(name, config_of(embedder, batch_max, SERVER.get(key)),
                                             upstream_port, args, store, max(workers, 1), tree)
                        results.setdefault(name.rsplit(", round", 1)[0], []).append(figures)
        finally:
            if redis is not None:
                redis.stop()
    if args.refs:
        compared(results)
    print(f"\nat the end: {yardstick()}")


if __name__ == "__main__":
    main()
