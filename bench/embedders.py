"""Measure the embedders: cold start, single-query latency, batch throughput, STS-B quality.

    .venv/bin/python bench/embedders.py [--stsb PATH] [--quality SPEC ...] [--quick]

Prints plain text; docs/embedders.md quotes a run. Sections:

- cold start of the bundled model in a fresh interpreter (imports, sha256 check, session);
- where one query's time goes (tokenize, model, pooling) and a few onnxruntime options;
- single-query latency (median, p90, p99, max) at 1 and 2 intra-op threads, one caller and two
  concurrent callers;
- batch throughput over the STS-B sentences;
- ROC AUC of cosine similarity on STS-B dev: positives score >= 4, negatives score <= 2.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from prismcache.embedders import MiniLMEmbedder, open_embedder

QUERY = "How do I reset my password?"  # 9 tokens with [CLS] and [SEP]
DEFAULT_STSB = Path("/work/shared/data/stsb/sts-dev.csv")


def percentiles(seconds: Sequence[float]) -> str:
    ms = np.asarray(seconds) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return f"p50 {p50:6.2f} ms  p90 {p90:6.2f}  p99 {p99:6.2f}  max {ms.max():6.2f}  (n={len(ms)})"


def timed(call: Callable[[], object], repeat: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def load_stsb(path: Path) -> list[tuple[float, str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        rows = csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(float(row[4]), row[5], row[6]) for row in rows if len(row) >= 7]


def cold_start() -> None:
    code = (
        "import time; t0 = time.perf_counter()\n"
        "from prismcache.embedders import minilm\n"
        "import onnxruntime, tokenizers; t1 = time.perf_counter()\n"
        "minilm._verify(minilm._installed_model()); t2 = time.perf_counter()\n"
        "e = minilm.MiniLMEmbedder(); t3 = time.perf_counter()\n"
        "e.embed(['How do I reset my password?']); t4 = time.perf_counter()\n"
        "print(t1 - t0, t2 - t1, t3 - t2, t4 - t3)\n"
    )
    runs = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout
        runs.append([float(x) for x in out.split()])
    imports, sha, construct, first = np.median(np.array(runs), axis=0) * 1000
    print("## cold start of MiniLMEmbedder in a fresh interpreter (median of 5)")
    print(f"import onnxruntime + tokenizers {imports:6.0f} ms")
    print(f"sha256 of model.onnx            {sha:6.0f} ms")
    print(f"MiniLMEmbedder() (incl. sha256) {construct:6.0f} ms")
    print(f"first embed                     {first:6.0f} ms")
    print(f"total to first vector           {imports + construct + first:6.0f} ms\n")


def breakdown(repeat: int) -> None:
    import onnxruntime as ort

    embedder = MiniLMEmbedder(threads=1)
    tokenizer = embedder._tokenizer
    encoding = tokenizer.encode(QUERY)
    print("## where one 9-token query's time goes (threads=1)")
    print(f"tokenize          {percentiles(timed(lambda: tokenizer.encode(QUERY), repeat))}")
    print(f"_run (model+pool) {percentiles(timed(lambda: embedder._run([encoding]), repeat))}")
    print(f"embed() end to end {percentiles(timed(lambda: embedder.embed([QUERY]), repeat))}\n")

    ids = np.array([encoding.ids], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)}
    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    print("## onnxruntime options, session.run alone, 9 tokens, threads=1")
    for level_name, level in levels.items():
        for arena in (True, False):
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.graph_optimization_level = level
            options.enable_cpu_mem_arena = arena
            session = ort.InferenceSession(str(embedder.model_path), options,
                                           providers=["CPUExecutionProvider"])
            times = timed(lambda: session.run(["last_hidden_state"], feeds), repeat)
            print(f"opt={level_name:8} arena={arena!s:5} {percentiles(times)}")
    print()


def latency(texts: list[str], repeat: int) -> None:
    print("## single-query latency of embed([text])")
    for threads in (1, 2):
        embedder = MiniLMEmbedder(threads=threads)
        fixed = timed(lambda: embedder.embed([QUERY]), repeat)
        print(f"threads={threads} 9-token query        {percentiles(fixed)}")
        varied = []
        for text in texts[:repeat]:
            start = time.perf_counter()
            embedder.embed([text])
            varied.append(time.perf_counter() - start)
        print(f"threads={threads} STS-B sentences      {percentiles(varied)}")
        per_caller: list[list[float]] = [[], []]

        def caller(times: list[float]) -> None:
            for text in texts[:repeat]:
                start = time.perf_counter()
                embedder.embed([text])
                times.append(time.perf_counter() - start)

        start = time.perf_counter()
        workers = [threading.Thread(target=caller, args=(t,)) for t in per_caller]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - start
        both = per_caller[0] + per_caller[1]
        print(f"threads={threads} 2 callers, STS-B     {percentiles(both)}  "
              f"{len(both) / wall:5.0f} queries/s")
    print()


def throughput(texts: list[str]) -> None:
    print(f"## batch throughput: embed() of {len(texts)} STS-B sentences at once (chunks of 64)")
    for threads in (1, 2):
        embedder = MiniLMEmbedder(threads=threads)
        embedder.embed(texts[:64])
        best = min(timed(lambda: embedder.embed(texts), 3, warmup=0))
        print(f"threads={threads} {len(texts) / best:6.0f} sentences/s ({best:.2f} s)")
    print()


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a positive pair scores above a negative pair), ties counting one half."""
    greater = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(greater + ties / 2)


def quality(pairs: list[tuple[float, str, str]], specs: list[str]) -> None:
    positives = [(a, b) for score, a, b in pairs if score >= 4]
    negatives = [(a, b) for score, a, b in pairs if score <= 2]
    print(f"## STS-B dev ROC AUC of cosine: {len(positives)} positives (score >= 4), "
          f"{len(negatives)} negatives (score <= 2)")
    for spec in specs:
        embedder = open_embedder(spec)
        sims = []
        for group in (positives, negatives):
            left = embedder.embed([a for a, _ in group])
            right = embedder.embed([b for _, b in group])
            sims.append((left * right).sum(axis=1))
        print(f"{embedder.id:28} AUC {auc(*sims):.4f}   mean cosine pos {sims[0].mean():.3f}"
              f"  neg {sims[1].mean():.3f}")
    print()


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stsb", type=Path, default=DEFAULT_STSB)
    parser.add_argument("--quality", nargs="+", default=["minilm", "hash:64", "hash:384"],
                        metavar="SPEC", help="embedder specs to score on STS-B")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 200 if args.quick else 1000
    pairs = load_stsb(args.stsb)
    texts = [a for _, a, _ in pairs]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average {load} at start\n")
    cold_start()
    breakdown(repeat)
    latency(texts, repeat)
    throughput(texts)
    quality(pairs, args.quality)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# load average {load} at the end")


if __name__ == "__main__":
    main()
