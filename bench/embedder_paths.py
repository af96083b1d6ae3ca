"""The single-query path of the bundled embedder, its variants measured side by side in one run.

    .venv/bin/python bench/embedder_paths.py [--queries 300] > bench/results/embedder_paths.txt

Every variant embeds the same real queries (Banking77 / CLINC150 test texts, one at a time,
end to end: tokenize, run, pool, normalise); the variants take turns in blocks of queries (each
block after a few untimed queries that bring its model's weights back into the CPU caches, as
a server running one model has them), so a burst of load from the machine's other users falls
on all of them alike. Figures are also
given as ratios to the yardstick (``benchkit.yardstick``), measured at the start and the end of
the run. Sections:

- the single-query variants: onnxruntime graph optimisation level, intra-op threads, IO
  binding, pooling without the mask when nothing is padded, and the int8 derivatives: the
  per-call one ``minilm:dynamic`` was (``quantize_dynamic`` as is, one activation scale per
  call) and the per-row one it is now;
- tokenizing alone (``encode`` against ``encode_batch`` of one text);
- batch throughput at 1 / 8 / 16 / 32 texts per call, 1 and 2 threads, both models (what the
  proxy's ``BatchingEmbedder`` gets when requests arrive together);
- STS-B dev ROC AUC of the three models (``prismcache eval`` on the labelled pairs is the other
  quality figure; docs/embedders.md has both).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchkit import ROOT, Yardstick, pct, yardstick, yardstick_run

from prismcache.embedders.minilm import (
    MiniLMEmbedder,
    bundled_tokenizer,
    onnx_session,
    quantize_int8,
)

DATA = ROOT.parent / "shared" / "data"


def per_call_path() -> Path:
    """The per-call int8 derivative (what ``minilm:dynamic`` ran before its activations were
    quantized per row), made once into ``bench/out/``."""
    path = ROOT / "bench" / "out" / "minilm-int8-per-call.onnx"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        quantize_int8(MiniLMEmbedder().model_path, path)
    return path


def per_call_model() -> MiniLMEmbedder:
    """The default embedder's code running the per-call derivative, batches and all (its id
    stays the default's: for measuring only)."""
    embedder = MiniLMEmbedder()
    embedder._session = onnx_session(per_call_path(), 1)
    return embedder


def real_queries(n: int) -> list[str]:
    """``n`` distinct short user queries from the test splits (Banking77, CLINC150)."""
    with (DATA / "banking77" / "test.csv").open(newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    clinc = json.loads((DATA / "clinc150" / "data_full.json").read_text())
    texts += [text for text, _ in clinc["test"]]
    return sorted(set(texts))[:: max(1, len(set(texts)) // n)][:n]


def session(path: Path, *, threads: int, level: str = "all") -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def one_query(sess: Any, *, masked: bool = True, bind: bool = False) -> Callable[[str], Any]:
    """The single-query path over ``sess``: tokenize, run, pool, normalise."""
    tokenizer = bundled_tokenizer()

    def embed(text: str) -> np.ndarray:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        mask = np.ones_like(ids)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        if bind:
            binding = sess.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            binding.bind_output("last_hidden_state")
            sess.run_with_iobinding(binding)
            hidden = binding.copy_outputs_to_cpu()[0]
        else:
            (hidden,) = sess.run(["last_hidden_state"], feeds)
        if masked:
            weights = mask[:, :, None].astype(np.float32)
            vector = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        else:
            vector = hidden.mean(axis=1)
        return vector / np.linalg.norm(vector, axis=1, keepdims=True)

    return embed


def line(label: str, ms: list[float], stick: Yardstick) -> str:
    p50 = statistics.median(ms)
    return (f"{label:44s} p50 {p50:6.2f} ms  p90 {pct(ms, 0.9):6.2f}  p99 {pct(ms, 0.99):6.2f}"
            f"  = {stick.ratio(p50)} yardstick")


def single_query(queries: list[str], stick: Yardstick) -> None:
    default, dynamic = MiniLMEmbedder(), MiniLMEmbedder(dynamic=True)
    shipped, derived = default.model_path, dynamic.run_path
    variants: dict[str, Callable[[str], Any]] = {
        "before: opt=all, 1 thread, masked pooling": one_query(session(shipped, threads=1)),
        "pooling without the mask": one_query(session(shipped, threads=1), masked=False),
        "opt=extended": one_query(session(shipped, threads=1, level="extended"), masked=False),
        "2 intra-op threads": one_query(session(shipped, threads=2), masked=False),
        "IO binding": one_query(session(shipped, threads=1), masked=False, bind=True),
        "per-call int8 derivative (before), 1 thread": one_query(
            session(per_call_path(), threads=1), masked=False),
        "per-row int8 derivative, 1 thread": one_query(session(derived, threads=1),
                                                       masked=False),
        "per-row int8 derivative, 2 threads": one_query(session(derived, threads=2),
                                                        masked=False),
        "MiniLMEmbedder().embed (shipped code)": lambda text: default.embed([text]),
        "MiniLMEmbedder(dynamic=True).embed": lambda text: dynamic.embed([text]),
    }
    run = yardstick_run()
    variants["the yardstick itself (9 tokens, run only)"] = lambda text: run()
    times: dict[str, list[float]] = {label: [] for label in variants}
    rounds = 10
    for r in range(rounds):  # blocks of queries, variants taking turns block by block
        block = queries[r::rounds]
        for label, embed in variants.items():
            for text in block[:3]:  # warm this variant's weights into the caches again
                embed(text + " warm")
            for text in block:
                t = time.perf_counter()
                embed(text)
                times[label].append((time.perf_counter() - t) * 1000)
    print(f"## one query at a time, end to end ({len(queries)} real queries; the variants and "
          f"the yardstick take turns in {rounds} blocks, each block after 3 untimed queries; "
          f"ratios to the yardstick timed in these blocks)")
    stick = Yardstick.of(times["the yardstick itself (9 tokens, run only)"])
    for label, ms in times.items():
        print(line(label, ms, stick))
    tokenizer = bundled_tokenizer()
    for label, call in (("tokenize: encode(text)", lambda t: tokenizer.encode(t)),
                        ("tokenize: encode_batch([text])", lambda t: tokenizer.encode_batch([t]))):
        ms = []
        for text in queries:
            t = time.perf_counter()
            call(text)
            ms.append((time.perf_counter() - t) * 1000)
        print(line(label, ms, stick))
    print()


def batches(queries: list[str], stick: Yardstick, seconds: float) -> None:
    print(f"## batch throughput (texts per call; {seconds:.0f} s per row; real queries)")
    for dynamic in (False, True):
        for threads in (1, 2):
            embedder = MiniLMEmbedder(threads=threads, dynamic=dynamic)
            for size in (1, 8, 16, 32):
                embedder.embed(queries[:size])
                done, i, started = 0, 0, time.perf_counter()
                while time.perf_counter() - started < seconds:
                    embedder.embed(queries[i:i + size])
                    i = (i + size) % (len(queries) - size)
                    done += size
                rate = done / (time.perf_counter() - started)
                print(f"{'per-row' if dynamic else 'default'} threads={threads} batch={size:2d}  "
                      f"{rate:6.0f} texts/s  = {stick.rate_ratio(rate)} the yardstick's rate")
    print()


def embed_all(embedder: MiniLMEmbedder, texts: list[str], alone: bool) -> np.ndarray:
    """``embedder.embed(texts)``, or one text per call when ``alone`` (as the per-call
    derivative shipped: batched, its vectors would depend on their companions)."""
    if alone:
        return np.concatenate([embedder.embed([text]) for text in texts])
    return embedder.embed(texts)


def stsb_auc() -> None:
    from embedders import DEFAULT_STSB, auc, load_stsb

    pairs = load_stsb(DEFAULT_STSB)
    positives = [(a, b) for score, a, b in pairs if score >= 4]
    negatives = [(a, b) for score, a, b in pairs if score <= 2]
    print(f"## STS-B dev ROC AUC of cosine ({len(positives)} pairs >= 4, {len(negatives)} <= 2)")
    for label, embedder, per_call in (("default", MiniLMEmbedder(), False),
                                      ("per-call int8", per_call_model(), True),
                                      ("per-row int8", MiniLMEmbedder(dynamic=True), False)):
        sims = [(embed_all(embedder, [a for a, _ in g], per_call)
                 * embed_all(embedder, [b for _, b in g], per_call)).sum(1)
                for g in (positives, negatives)]
        print(f"{label:14s} AUC {auc(*sims):.4f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=3.0, help="per batch row")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# bench/embedder_paths.py  {time.strftime('%Y-%m-%d %H:%M')}  cpus {os.cpu_count()}"
          f"  load average {load}")
    stick = yardstick()
    print(f"{stick}\n")
    queries = real_queries(args.queries)
    single_query(queries, stick)
    batches(queries, stick, args.seconds)
    if not args.skip_quality:
        stsb_auc()
    end = yardstick()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"at the end: {end}  (load average {load})")


if __name__ == "__main__":
    main()
