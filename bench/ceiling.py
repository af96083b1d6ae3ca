"""The compute ceiling of semantic hits: the bundled embedder's best throughput on this machine.

A semantic hit embeds its query once, so no proxy serves more semantic hits per second than
the embedder embeds texts per second with every core busy. This measures that rate for
``minilm`` and ``minilm:dynamic`` (``MiniLMEmbedder.embed`` end to end: tokenize, run, pool,
normalise) over the texts ``bench/proxy.py`` sends as semantic hits (~13 tokens), beside the
per-call int8 derivative that ``minilm:dynamic`` was before its activations were quantized per
row (``bench/batch_invariance.py``; it could only run one text per call), across

* texts per call (1 to 32: what ``BatchingEmbedder`` hands it when requests arrive together),
* callers at once (1 or 2 threads, each its own one-intra-op-thread call, as the proxy runs
  them: one per core), and onnxruntime intra-op threads (1 or 2) for a lone caller,
* the session prismcache opens (``onnx_session``: no ``SkipLayerNormalization`` fusion,
  denormals flushed) beside the session as it was before (``... before``: onnxruntime's
  defaults, ``embedder_paths.session``: for ``minilm:dynamic`` the retired
  ``...-int8-rowwise`` model), same graph, same embedder code,

each cell for ``--seconds``, with the yardstick (``benchkit.yardstick``) timed between cells,
so every rate is also a ratio to the yardstick's one-at-a-time rate. The proxy's goal is 5x
that rate in semantic hits/s: a ceiling below 5x shows the goal is beyond this machine's
compute, whatever the proxy does.

The machine is shared, so the rates move with other people's load; the CPU time per text
(this process's, all its threads) moves far less. The **compute ceiling** is therefore also
given as ``cores / CPU per text`` against ``1 / the yardstick's CPU per inference``: what
every core of an otherwise idle machine would embed, as a multiple of the yardstick's rate.

    .venv/bin/python bench/ceiling.py [--seconds 2] [--specs minilm ...] > bench/results/ceiling.txt
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
from collections.abc import Callable

from benchkit import Yardstick, yardstick_run
from embedder_paths import per_call_model, session
from proxy import FILLERS

from prismcache.embedders.minilm import MiniLMEmbedder

BASE = "how do i reset my password"
PER_CALL = "per-call int8"  # the old minilm:dynamic: one text per call, as it ran
SPECS = ("minilm", "minilm:dynamic", "minilm before", "minilm:dynamic before", PER_CALL)


def texts(n: int, seed: int = 7) -> list[str]:
    """``n`` distinct semantic-hit queries, as ``bench/proxy.py`` words them."""
    rng = random.Random(seed)
    return [f"{BASE} {rng.choice(FILLERS)} {rng.choice(FILLERS)} {i}x" for i in range(n)]


def throughput(embedder: MiniLMEmbedder, batch: int, callers: int,
               seconds: float) -> tuple[float, float]:
    """(texts per second, CPU seconds per text) embedded by ``callers`` threads, each calling
    ``embed`` with ``batch`` texts at a time, for ``seconds``."""
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
    t, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - t), (time.process_time() - cpu) / sum(done)


def embedder(spec: str, threads: int) -> MiniLMEmbedder:
    """The embedder a ``spec`` of :data:`SPECS` names, with ``threads`` intra-op threads."""
    if spec == PER_CALL:
        return per_call_model()
    made = MiniLMEmbedder(threads=threads, dynamic=spec.startswith("minilm:dynamic"))
    if spec.endswith(" before"):
        made._session = session(made.run_path, threads=threads)
    return made


def stick_times(run: Callable[[], None], n: int = 60,
                cpu: list[float] | None = None) -> list[float]:
    """``n`` timings (ms) of the yardstick; their CPU seconds appended to ``cpu``."""
    times = []
    start = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
    if cpu is not None:
        cpu.append((time.process_time() - start) / n)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per cell")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--specs", nargs="+", choices=SPECS, default=list(SPECS))
    parser.add_argument("--pairs", nargs="+", default=["1,1", "2,1", "1,2"],
                        help="intra-op threads,callers cells to run")
    args = parser.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"bench/ceiling.py  {time.strftime('%Y-%m-%d %H:%M')}  cpus {os.cpu_count()}  "
          f"load average {load}  ({args.seconds:g} s per cell; CPUs shared)")
    run = yardstick_run()
    for _ in range(30):
        run()
    stick_cpu: list[float] = []
    sticks: list[float] = stick_times(run, cpu=stick_cpu)
    best: dict[str, tuple[float, str]] = {}
    cheapest: dict[str, tuple[float, str]] = {}
    cores = os.cpu_count() or 1
    pairs = [tuple(int(n) for n in pair.split(",")) for pair in args.pairs]
    cells = [(spec, intra, callers, batch) for spec in args.specs if spec != PER_CALL
             for intra, callers in pairs for batch in args.batches]
    if PER_CALL in args.specs:
        cells += [(PER_CALL, 1, callers, 1) for callers in (1, 2)]
    embedders: dict[tuple[str, int], MiniLMEmbedder] = {}
    for spec, intra, callers, batch in cells:
        if (spec, intra) not in embedders:
            embedders[spec, intra] = embedder(spec, intra)
        rate, cpu = throughput(embedders[spec, intra], batch, callers, args.seconds)
        local = stick_times(run, 30, stick_cpu)
        sticks += local
        stick_rate = 1000 / statistics.median(local)
        cell = f"{spec:22s} intra-op threads {intra}  callers {callers}  batch {batch:2d}"
        print(f"{cell}  {rate:6.0f} texts/s  = {rate / stick_rate:4.2f}x the yardstick's "
              f"rate ({stick_rate:.0f}/s, timed right after)  CPU {cpu * 1000:5.2f} ms/text",
              flush=True)
        if rate / stick_rate > best.get(spec, (0.0, ""))[0]:
            best[spec] = (rate / stick_rate, f"{rate:.0f} texts/s, {cell.strip()}")
        if intra == 1 and cpu < cheapest.get(spec, (1e9, ""))[0]:
            cheapest[spec] = (cpu, cell.strip())
    stick = Yardstick.of(sticks)
    stick_cpu_s = statistics.median(stick_cpu)
    print(f"\nyardstick over the run: {stick}; CPU {stick_cpu_s * 1000:.2f} ms per inference")
    for spec, (ratio, where) in best.items():
        print(f"best measured {spec:22s} {ratio:4.2f}x the yardstick's rate  ({where})")
    for spec, (cpu, where) in cheapest.items():
        print(f"compute ceiling {spec:22s} {cores} cores / {cpu * 1000:.2f} ms CPU per text = "
              f"{cores / cpu:.0f} texts/s = {cores / cpu * stick_cpu_s:4.2f}x the yardstick's "
              f"rate (1 / its CPU per inference)  ({where})")
    print("goal: semantic hits/s >= 5x the yardstick's rate; a semantic hit embeds once, so the "
          "proxy's semantic hits/s cannot pass these ceilings")


if __name__ == "__main__":
    main()
