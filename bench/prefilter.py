"""Does a static pre-filter pay on the miss path? Static vs full cosine on replayed traces.

    .venv/bin/python bench/prefilter.py --requests 20000

A static embedding distilled from the bundled model (:mod:`prismcache.embedders.static`)
costs a tokenizer call and a gather. If the best static cosine of a request against the
entries of its partition is below a bound, the request is called a miss before the model runs.

1. **Table**: every vocabulary token through the bundled model alone (the raw rows are cached
   in ``bench/out/``), then variants: PCA dimension x SIF weighting.
2. **Hits it would lose**: a ``train`` trace and a ``test`` trace (``prismcache data trace``'s
   builder, other utterances) are replayed through a cache with the shipped config and the
   bundled model's (precomputed) vectors. For every request the best static cosine against
   the entries stored before it (one partition: one tenant, one model) is recorded. On the
   train trace, each variant's bound is the largest that loses <= ``--loss`` of the semantic
   hits (exact-tier hits come first and are never at risk); the variant that skips the most
   train misses is chosen. Only then is the test trace read: hits lost, misses skipped.
3. **Cost**: one static embedding, one static search at ``--entries`` entries (the
   tiered index the cache uses, on static vectors of real texts plus noise), and the
   yardstick (one plain single-query inference of the bundled model), in the same run.

Prints everything; writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from prismcache.cache import SemanticCache
from prismcache.classify import load_examples
from prismcache.config import load_config
from prismcache.decision import MissReason
from prismcache.embedders import open_embedder
from prismcache.embedders.static import StaticEmbedder, distil, token_vectors
from prismcache.evaluation.records import last_user_turn
from prismcache.evaluation.replay import _body, _response, prepare_config
from prismcache.evaluation.traces import build_trace
from prismcache.evaluation.vectors import EmbeddingTable, PrecomputedEmbedder
from prismcache.index import IndexSpec, make_index
from prismcache.stores.memory import MemoryStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from benchkit import pct  # noqa: E402

VARIANTS = [(dim, sif) for dim in (384, 256, 128, 64) for sif in (None, 1e-3, 1e-4)]


def replay_full(trace: list, table: EmbeddingTable) -> dict[str, np.ndarray]:
    """Replay ``trace`` with the shipped config; per request: kind (0 miss after a semantic
    lookup, 1 exact hit, 2 semantic hit, 3 miss without a semantic lookup) and the decision's
    best cosine (-1 when no search ran); and the request index of each stored entry."""
    config = load_config({"store": "memory://"})
    names = sorted({line.category for line in trace if line.category})
    config = prepare_config(config, names)
    texts = [last_user_turn(line.query)[0] for line in trace]
    extra = ([t for t, _ in load_examples(config.classifier.examples)]
             if config.classifier.examples is not None else [])
    table.ensure(texts + extra, progress=True)
    cache = SemanticCache.open(config, store=MemoryStore(), embedder=PrecomputedEmbedder(table))
    kinds = np.zeros(len(trace), dtype=np.int8)
    full = np.full(len(trace), -1.0, dtype=np.float32)
    stored_at: list[int] = []  # request index of each stored entry, in order
    for i, line in enumerate(trace):
        body = _body(line)
        result = cache.lookup(body, tenant="default")
        if result.similarity is not None:
            full[i] = result.similarity
        if result.hit:
            kinds[i] = 1 if result.tier == "exact" else 2
            continue
        semantic = result.reason not in (MissReason.BYPASS, MissReason.EXACT_ONLY,
                                         MissReason.DISABLED)
        kinds[i] = 0 if semantic else 3
        if cache.store(body, _response(line.answer_key), tenant="default").entry_id is not None:
            stored_at.append(i)
    cache.close()
    return {"kinds": kinds, "full": full, "stored_at": np.array(stored_at, dtype=np.int64)}


def static_best(vectors: np.ndarray, stored_at: np.ndarray) -> np.ndarray:
    """Per request (row of ``vectors``), the best cosine against the rows of the entries
    stored before it (``stored_at``: their request indexes); -1 when there were none."""
    best = np.full(len(vectors), -1.0, dtype=np.float32)
    if not len(stored_at):
        return best
    stored = vectors[stored_at]
    for start in range(0, len(vectors), 2048):
        rows = np.arange(start, min(len(vectors), start + 2048))
        sims = vectors[rows] @ stored.T
        sims[stored_at[None, :] >= rows[:, None]] = -1.0  # only entries stored before
        best[rows] = sims.max(axis=1)
    return best


def bound_for(best: np.ndarray, kinds: np.ndarray, loss: float) -> float:
    """The largest bound that leaves at most ``loss`` of the semantic hits below it."""
    hits = np.sort(best[kinds == 2])
    allowed = int(np.floor(loss * len(hits)))
    return float(hits[allowed]) if len(hits) else 1.0


def outcome(best: np.ndarray, kinds: np.ndarray, bound: float) -> dict[str, float]:
    """Hits lost and misses skipped at ``bound``."""
    semantic = kinds == 2
    misses = kinds == 0
    hits = int((kinds == 1).sum() + semantic.sum())
    lost = int((best[semantic] < bound).sum())
    skipped = int((best[misses] < bound).sum())
    return {"bound": round(bound, 4), "hits": hits, "semantic_hits": int(semantic.sum()),
            "hits_lost": lost, "hits_lost_share": lost / max(hits, 1),
            "semantic_hits_lost_share": lost / max(int(semantic.sum()), 1),
            "misses": int(misses.sum()), "misses_skipped": skipped,
            "misses_skipped_share": skipped / max(int(misses.sum()), 1)}


def timings(static: StaticEmbedder, texts: list[str], entries: int, model, rng) -> dict:
    """Milliseconds: one static embedding; one static search at ``entries`` entries; the
    yardstick; one full MiniLM embedding of the same texts."""
    sample = [texts[i] for i in rng.integers(0, len(texts), size=300)]
    base = static.embed(texts)
    picks = base[rng.integers(0, len(base), size=entries)]
    noisy = picks + rng.normal(0, 0.02, size=picks.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    index = make_index(static.dim, IndexSpec())
    started = time.perf_counter()
    for s in range(0, entries, 8192):
        index.add(np.arange(s + 1, min(entries, s + 8192) + 1), noisy[s:s + 8192])
    build = time.perf_counter() - started

    def run(fn) -> list[float]:
        out = []
        for text in sample[:5]:
            fn(text)
        for text in sample:
            t = time.perf_counter()
            fn(text)
            out.append((time.perf_counter() - t) * 1000)
        return out

    embed = run(lambda text: static.embed([text]))
    search = run(lambda text: index.search(static.embed([text])[0], 1))
    full = run(lambda text: model.embed([text]))
    yard = yardstick(model)
    return {"static_embed_ms": _stats(embed), "static_embed_search_ms": _stats(search),
            "full_embed_ms": _stats(full), "yardstick_ms": _stats(yard),
            "static_index_build_s": build, "entries": entries}


def yardstick(model) -> list[float]:
    """The yardstick: a default ORT session, 1 thread, one 9-token query, ``run`` alone."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model.model_path), options,
                                   providers=["CPUExecutionProvider"])
    ids = np.array([[101, 2129, 2079, 1045, 25141, 2026, 20786, 1029, 102]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)}
    for _ in range(10):
        session.run(None, feeds)
    out = []
    for _ in range(300):
        t = time.perf_counter()
        session.run(None, feeds)
        out.append((time.perf_counter() - t) * 1000)
    return out


def config_low() -> float:
    """The shipped lower bound of the grey zone (``verify_low``): nothing below it is served."""
    return float(load_config({}).policy("general").verify_low)


def _stats(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p99": pct(values, 0.99)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--loss", type=float, default=0.005,
                        help="share of semantic hits a bound may lose on train")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "prefilter.json"))
    args = parser.parse_args(argv)
    root, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = open_embedder("minilm")
    raw_path = out / "static_raw_rows.npy"
    if raw_path.exists():
        raw = np.load(raw_path)
    else:
        started = time.perf_counter()
        raw = token_vectors(model)
        np.save(raw_path, raw)
        print(f"token vectors: {raw.shape} in {time.perf_counter() - started:.1f} s")
    statics = {f"d{dim}-sif{sif}": StaticEmbedder(distil(raw, dim=dim, sif=sif),
                                                  model._tokenizer)
               for dim, sif in VARIANTS}
    table = EmbeddingTable(model, out / "emb")
    results: dict = {"requests": args.requests, "loss": args.loss}
    runs = {}
    for split in ("train", "test"):
        trace = build_trace(root, requests=args.requests, split=split, seed=0)
        texts = [last_user_turn(line.query)[0] for line in trace]
        saved = out / f"prefilter_{split}_{args.requests}.npz"
        started = time.perf_counter()
        if saved.exists():
            run = dict(np.load(saved))
        else:
            run = replay_full(trace, table)
            np.savez(saved, **run)
        kinds = run["kinds"]
        print(f"{split}: replayed {len(trace)} in {time.perf_counter() - started:.0f} s: "
              f"misses {int((kinds == 0).sum())}, exact hits {int((kinds == 1).sum())}, "
              f"semantic hits {int((kinds == 2).sum())}, no semantic lookup "
              f"{int((kinds == 3).sum())}; misses the decision found nothing >= "
              f"{config_low():.2f} for: {int(((kinds == 0) & (run['full'] < config_low())).sum())}")
        for name, static in statics.items():
            run[name] = static_best(static.embed(texts), run["stored_at"])
        runs[split] = run
    train = runs["train"]
    print(f"\ntrain: bound at <= {args.loss:.1%} of semantic hits lost, per variant")
    chosen, chosen_skip = "", -1.0
    results["train"] = {}
    for name in statics:
        bound = bound_for(train[name], train["kinds"], args.loss)
        o = outcome(train[name], train["kinds"], bound)
        results["train"][name] = o
        print(f"  {name:16s} bound {bound:6.3f}  misses skipped {o['misses_skipped_share']:6.1%}"
              f"  hits lost {o['hits_lost_share']:.2%}")
        if o["misses_skipped_share"] > chosen_skip:
            chosen, chosen_skip = name, o["misses_skipped_share"]
    bound = results["train"][chosen]["bound"]
    test = outcome(runs["test"][chosen], runs["test"]["kinds"], bound)
    results["chosen"], results["test"] = chosen, test
    print(f"\nchosen on train: {chosen}, bound {bound}")
    print(f"test: hits lost {test['hits_lost']}/{test['hits']} = {test['hits_lost_share']:.2%} "
          f"of hits ({test['semantic_hits_lost_share']:.2%} of semantic hits); misses skipped "
          f"{test['misses_skipped']}/{test['misses']} = {test['misses_skipped_share']:.1%}")
    results["test_all_variants"] = {
        name: outcome(runs["test"][name], runs["test"]["kinds"],
                      results["train"][name]["bound"]) for name in statics}
    static = statics[chosen]
    texts = [last_user_turn(line.query)[0] for line in
             build_trace(root, requests=2000, split="test", seed=1)]
    t = timings(static, texts, args.entries, model, np.random.default_rng(0))
    results["timings"] = t
    y = t["yardstick_ms"]["p50"]
    print(f"\nyardstick p50 {y:.2f} ms p99 {t['yardstick_ms']['p99']:.2f}")
    for key in ("static_embed_ms", "static_embed_search_ms", "full_embed_ms"):
        print(f"{key:24s} p50 {t[key]['p50']:7.3f} ms  p99 {t[key]['p99']:7.3f}  "
              f"= p50 {t[key]['p50'] / y:.2f}x yardstick")
    print(f"static index of {args.entries} entries built in {t['static_index_build_s']:.1f} s;"
          f" table {static.table.nbytes / 1e6:.1f} MB float32")
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
