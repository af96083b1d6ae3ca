"""The compute ceiling of semantic hits: the bundled embedder's best throughput on this machine.

A semantic hit embeds its query once, so no proxy serves more semantic hits per second than
the embedder embeds texts per second with every core busy. This measures that rate for
``minilm`` and ``minilm:dynamic`` (``MiniLMEmbedder.embed`` end to end: tokenize, run, pool,
normalise) over the texts ``bench/proxy.py`` sends as semantic hits (~13 tokens), across

* texts per call (1 to 32: what ``BatchingEmbedder`` hands it when requests arrive together),
* callers at once (1 or 2 threads, each its own one-intra-op-thread call, as the proxy runs
  them: one per core), and onnxruntime intra-op threads (1 or 2) for a lone caller,

each cell for ``--seconds``, with the yardstick (``benchkit.yardstick``) timed between cells,
so every rate is also a ratio to the yardstick's one-at-a-time rate. The proxy's goal is 5x
that rate in semantic hits/s: a ceiling below 5x shows the goal is beyond this machine's
compute, whatever the proxy does.

    .venv/bin/python bench/ceiling.py [--seconds 2] > bench/results/ceiling.txt
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time

from benchkit import Yardstick, yardstick_run

from prismcache.embedders.minilm import MiniLMEmbedder

from proxy import FILLERS  # noqa: I001 - the proxy benchmark's semantic-hit texts

BASE = "how do i reset my password"


def texts(n: int, seed: int = 7) -> list[str]:
    """``n`` distinct semantic-hit queries, as ``bench/proxy.py`` words them."""
    rng = random.Random(seed)
    return [f"{BASE} {rng.choice(FILLERS)} {rng.choice(FILLERS)} {i}x" for i in range(n)]


def throughput(embedder: MiniLMEmbedder, batch: int, callers: int, seconds: float) -> float:
    """Texts per second embedded by ``callers`` threads, each calling ``embed`` with ``batch``
    texts at a time, for ``seconds``."""
    pool = texts(4096)
    done = [0] * callers
    stop = time.perf_counter() + seconds

    def caller(k: int) -> None:
        i = k * 997
        while time.perf_counter() < stop:
            start = (i * batch) % (len(pool) - batch)
            embedder.embed(pool[start:start + batch])
            done[k] += batch
            i += 1

    embedder.embed(pool[:batch])  # warm
    t = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - t)


def stick_times(run, n: int = 60) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per cell")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    args = parser.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"bench/ceiling.py  {time.strftime('%Y-%m-%d %H:%M')}  cpus {os.cpu_count()}  "
          f"load average {load}  ({args.seconds:g} s per cell; CPUs shared)")
    run = yardstick_run()
    for _ in range(30):
        run()
    sticks: list[float] = stick_times(run)
    best: dict[str, tuple[float, str]] = {}
    rows = []
    for spec in ("minilm", "minilm:dynamic"):
        for intra, callers in ((1, 1), (2, 1), (1, 2)):
            embedder = MiniLMEmbedder(threads=intra, dynamic=spec == "minilm:dynamic")
            for batch in args.batches:
                rate = throughput(embedder, batch, callers, args.seconds)
                local = stick_times(run, 30)
                sticks += local
                stick_rate = 1000 / statistics.median(local)
                cell = f"{spec:15s} intra-op threads {intra}  callers {callers}  batch {batch:2d}"
                rows.append((cell, rate, stick_rate))
                print(f"{cell}  {rate:6.0f} texts/s  = {rate / stick_rate:4.2f}x the yardstick's "
                      f"rate ({stick_rate:.0f}/s, timed right after)", flush=True)
                if rate / stick_rate > best.get(spec, (0.0, ""))[0]:
                    best[spec] = (rate / stick_rate, f"{rate:.0f} texts/s, {cell.strip()}")
    stick = Yardstick.of(sticks)
    print(f"\nyardstick over the run: {stick}")
    for spec, (ratio, where) in best.items():
        print(f"ceiling {spec:15s} {ratio:4.2f}x the yardstick's rate  ({where})")
    print("goal: semantic hits/s >= 5x the yardstick's rate; a semantic hit embeds once, so the "
          "proxy's semantic hits/s cannot pass these ceilings")


if __name__ == "__main__":
    main()
