"""Does a static pre-filter pay on the miss path? Static vs full cosine on replayed traces.

    .venv/bin/python bench/prefilter.py --requests 20000
    .venv/bin/python bench/prefilter.py --ood
    .venv/bin/python bench/prefilter.py --miss-path

A static embedding distilled from the bundled model (:mod:`prismcache.embedders.static`)
costs a tokenizer call and a gather. If the best static cosine of a request against the
entries of its partition is below a bound, the request is called a miss before the model runs.

1. **Tables**: every vocabulary token through the bundled model alone (the raw rows are
   cached in ``bench/out/``); Model2Vec-only variants (centred, PCA, SIF weights) beside the
   shipped table (``tools/make_static_table.py``: a map fit on the train pools, 128-d).
2. **Hits it would lose**: a ``train`` trace and a ``test`` trace (``prismcache data trace``'s
   builder, other utterances) are replayed through a cache with the shipped config and the
   bundled model's (precomputed) vectors. For every request the best static cosine against
   the entries stored before it (one partition: one tenant, one model) is recorded. On the
   train trace, each table's bound is the largest that loses <= ``--loss`` of the semantic
   hits (exact-tier hits come first and are never at risk). Only then is the test trace read
   at that bound: hits lost, misses skipped.
3. **Miss path**: a cache of ``--entries`` entries in one partition (train-split texts, the
   model's vectors plus small noise), ``--queries`` new questions (NQ-open test half) looked
   up with the real bundled model, pre-filter off and on (at the shipped table's train
   bound), each lookup after one timed yardstick inference (``benchkit.yardstick_run``).

``--ood``: only the out-of-domain check. Five data sets the static map never saw (ParaQA,
PAWS-Wiki, SNIPS, STS-B, SNLI: :func:`ood_groups`), each as a trace of groups of paraphrases
that deserve one answer plus distinct texts (:func:`ood_trace`), replayed twice through the
shipped config with the same (precomputed) vectors, pre-filter off and on at the shipped
bound: semantic hits lost, misses skipped, and the verdict of the rule stated before the run
(``docs/prefilter.md``). Writes ``prefilter_ood.json`` beside ``--json``.

``--rebuild N``: only the time to open a cache over ``N`` entries of a SQLite store (the
rebuild from the store makes every static vector and its index), off and as shipped.

``--miss-path``: only step 3, on the default config (classifier and rules as shipped), with
``prefilter.enabled: false`` and as shipped. Writes ``prefilter_miss_path.json``.

The out-of-domain traces are built by ``bench/ood_traces.py``.

Prints everything; writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from prismcache.cache import SemanticCache
from prismcache.classify import build_classifier, load_examples
from prismcache.classify.embedding import EmbeddingClassifier
from prismcache.config import load_config
from prismcache.decision import MissReason
from prismcache.embedders import open_embedder
from prismcache.embedders.minilm import bundled_tokenizer
from prismcache.embedders.static import StaticEmbedder, distil, token_vectors
from prismcache.entry import Entry
from prismcache.evaluation import datasets as ds
from prismcache.evaluation.records import last_user_turn
from prismcache.evaluation.replay import _body, _response, prepare_config
from prismcache.evaluation.traces import build_trace
from prismcache.evaluation.vectors import EmbeddingTable, PrecomputedEmbedder
from prismcache.request import key_request
from prismcache.stores import open_store
from prismcache.stores.memory import MemoryStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from benchkit import pct, yardstick_run
from ood_traces import OOD, ood_groups, ood_trace

VARIANTS = [(384, None), (384, 1e-3), (128, 1e-3)]
SHIPPED = "shipped (fit map, d128)"


def replay_full(trace: list, table: EmbeddingTable, *,
                prefilter: bool = False) -> dict[str, np.ndarray]:
    """Replay ``trace`` with the shipped config (``prefilter``: with ``prefilter.enabled`` at
    the shipped bound); per request: kind (0 miss after a semantic lookup, 1 exact hit,
    2 semantic hit, 3 miss without a semantic lookup, 4 far miss), whether a hit served
    another answer key (``wrong``), whether a miss had a candidate at or above its category's
    ``fallback_threshold`` (``near``: a ``near`` answer if the upstream refused), and the
    decision's best cosine (-1 when no search ran); and the request index of each stored
    entry."""
    config = load_config({"store": "memory://", "prefilter": {"enabled": prefilter}})
    names = sorted({line.category for line in trace if line.category})
    config = prepare_config(config, names)
    texts = [last_user_turn(line.query)[0] for line in trace]
    extra = ([t for t, _ in load_examples(config.classifier.examples)]
             if config.classifier.examples is not None else [])
    table.ensure(texts + extra, progress=True)
    cache = SemanticCache.open(config, store=MemoryStore(), embedder=PrecomputedEmbedder(table))
    kinds = np.zeros(len(trace), dtype=np.int8)
    wrong = np.zeros(len(trace), dtype=bool)
    near = np.zeros(len(trace), dtype=bool)
    full = np.full(len(trace), -1.0, dtype=np.float32)
    stored_at: list[int] = []  # request index of each stored entry, in order
    keys: dict[int, str] = {}
    for i, line in enumerate(trace):
        body = _body(line)
        result = cache.lookup(body, tenant="default")
        if result.similarity is not None:
            full[i] = result.similarity
        if result.hit:
            kinds[i] = 1 if result.tier == "exact" else 2
            wrong[i] = keys.get(result.entry_id) != line.answer_key
            continue
        semantic = result.reason not in (MissReason.BYPASS, MissReason.EXACT_ONLY,
                                         MissReason.DISABLED)
        kinds[i] = 4 if result.reason is MissReason.FAR else 0 if semantic else 3
        if result.similarity is not None and result.category is not None:
            bound = config.policy(result.category).fallback_threshold
            near[i] = bound is not None and result.similarity >= bound
        stored = cache.store(body, _response(line.answer_key), tenant="default")
        if stored.entry_id is not None:
            stored_at.append(i)
            keys[stored.entry_id] = line.answer_key
    cache.close()
    return {"kinds": kinds, "wrong": wrong, "near": near, "full": full,
            "stored_at": np.array(stored_at, dtype=np.int64)}


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


class Hybrid:
    """The bundled model, except for texts given a vector up front (the fillers)."""

    def __init__(self, model, given: dict[str, np.ndarray]) -> None:
        self.model, self.given, self.calls = model, given, 0
        self.name, self.dim = model.name, model.dim

    @property
    def id(self) -> str:
        return self.model.id

    def embed(self, texts):
        if all(t in self.given for t in texts):
            return np.stack([self.given[t] for t in texts])
        self.calls += 1
        return self.model.embed(texts)


def miss_path(model, table: EmbeddingTable, pool: list[str], far: list[str], entries: int,
              variants: dict[str, dict], rng: np.random.Generator) -> dict:
    """Far-miss lookups (real model) in one partition of ``entries`` entries (texts from
    ``pool``, numbered when repeated; vectors: the model's of the base text plus noise),
    once per config of ``variants`` (label -> keys over the defaults). Milliseconds per
    lookup, and how many the pre-filter skipped."""
    table.ensure(pool + far)
    given = {}
    for i in range(entries):
        base = pool[i % len(pool)]
        text = base if i < len(pool) else f"{base} ({i // len(pool)})"
        vector = table.vector(base) + rng.normal(0, 0.02, table.embedder.dim)
        given[text] = (vector / np.linalg.norm(vector)).astype(np.float32)
    reply = {"choices": [{"message": {"role": "assistant", "content": "x"},
                          "finish_reason": "stop"}]}
    run_yardstick = yardstick_run()
    out = {}
    for label, keys in variants.items():
        config = load_config({**keys, "store": "memory://",
                              "capacity": {"entries": entries * 2}})
        embedder = Hybrid(model, given)
        cache = SemanticCache.open(config, store=MemoryStore(), embedder=embedder)
        started = time.perf_counter()
        for text in given:
            cache.store(_chat(text), reply, tenant="bench", category="general")
        fill = time.perf_counter() - started
        for text in far[:5]:
            cache.lookup(_chat(text + " warm"), tenant="bench")
        lat, yard, far_count = [], [], 0
        for text in far:  # the yardstick interleaved, so both see the same load
            t = time.perf_counter()
            run_yardstick()
            yard.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            result = cache.lookup(_chat(text), tenant="bench")
            lat.append((time.perf_counter() - t) * 1000)
            far_count += (not result.hit) and result.reason is MissReason.FAR
        out[label] = {"fill_s": fill, "miss_ms": _stats(lat), "yardstick_ms": _stats(yard),
                      "far": far_count, "n": len(far)}
        cache.close()
    return out


def rebuild(model, table: EmbeddingTable, pool: list[str], entries: int,
            rng: np.random.Generator) -> dict[str, float]:
    """Seconds to open a cache over a SQLite store of ``entries`` entries in one partition
    (texts from ``pool``, numbered; the model's vectors plus noise; bulk-written with
    ``store.put``), default config with ``prefilter.enabled: false`` and as shipped (the
    rebuild from the store); and, when on, until its static index (built in the background)
    is ready."""
    table.ensure(pool)
    tmp = Path(tempfile.mkdtemp(prefix="prism-prefilter-"))
    url = f"sqlite:///{tmp / 'cache.db'}"
    partition = key_request(_chat("x"), tenant="bench").partition
    store = open_store(url)
    reply = {"choices": [{"message": {"role": "assistant", "content": "x"},
                          "finish_reason": "stop"}]}
    for i in range(entries):
        text = f"{pool[i % len(pool)]} #{i}"
        vector = table.vector(pool[i % len(pool)]) + rng.normal(0, 0.02, table.embedder.dim)
        store.put(Entry(id=i + 1, tenant="bench", partition=partition, category="general",
                        model="m", exact_key=key_request(_chat(text), tenant="bench").exact_key,
                        query=text, request=_chat(text), response=reply,
                        vector=(vector / np.linalg.norm(vector)).astype(np.float32),
                        embedder=model.id, created=time.time(), expires=None,
                        last_access=time.time(), cost=0.001, latency=1.0))
    store.close()
    out = {}
    try:
        for label, enabled in (("off", False), ("auto", "auto")):
            started = time.perf_counter()
            cache = SemanticCache.open({"store": url, "capacity": {"entries": entries * 2},
                                        "prefilter": {"enabled": enabled}}, embedder=model)
            out[label] = time.perf_counter() - started
            prefilter = cache._tiers.prefilter
            if prefilter is not None:  # static vectors are indexed in the background
                prefilter.wait()
                out[f"{label}_static_ready"] = time.perf_counter() - started
            cache.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _chat(text: str) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def ood_run(root: Path, table: EmbeddingTable, requests: int) -> dict[str, dict]:
    """Per out-of-domain set: its trace replayed with the pre-filter off and on (shipped
    bound); semantic hits lost, misses skipped, and what the lost hits were."""
    out = {}
    for name in OOD:
        groups = ood_groups(root, name)
        trace = ood_trace(groups, requests=requests)
        started = time.perf_counter()
        off = replay_full(trace, table)
        on = replay_full(trace, table, prefilter=True)
        semantic, misses = off["kinds"] == 2, off["kinds"] == 0
        lost = semantic & (on["kinds"] == 4)
        row = {"keys": len(groups), "paraphrase_keys": sum(len(v) > 1 for v in groups.values()),
               "requests": len(trace), "exact_hits": int((off["kinds"] == 1).sum()),
               "semantic_hits": int(semantic.sum()),
               "wrong_semantic_hits": int((semantic & off["wrong"]).sum()),
               "semantic_hits_lost": int(lost.sum()),
               "right_hits_lost": int((lost & ~off["wrong"]).sum()),
               "misses": int(misses.sum()), "far_on": int((on["kinds"] == 4).sum()),
               "misses_skipped": int((misses & (on["kinds"] == 4)).sum()),
               "near_candidates": int(off["near"].sum()),
               "near_candidates_lost": int((off["near"] & (on["kinds"] == 4)).sum()),
               "hits_on": int(np.isin(on["kinds"], (1, 2)).sum()),
               "hits_off": int(np.isin(off["kinds"], (1, 2)).sum()),
               "seconds": round(time.perf_counter() - started, 1),
               "lost_examples": [trace[i].query for i in np.flatnonzero(lost)[:5]]}
        row["semantic_hits_lost_share"] = row["semantic_hits_lost"] / max(row["semantic_hits"], 1)
        row["misses_skipped_share"] = row["misses_skipped"] / max(row["misses"], 1)
        out[name] = row
    return out


def classifier_agreement(texts: list[str], table: EmbeddingTable) -> dict[str, float]:
    """Could a far miss be given its category without the model? The shipped classifier's
    kind fitted on the static vectors of its built-in examples, against the shipped
    classifier on the model's vectors, for ``texts`` (both after ``min_confidence``)."""
    config = load_config({})
    spec = config.classifier
    full = build_classifier(spec, table.embedder)
    assert full is not None and spec.examples is not None
    pairs = load_examples(spec.examples)
    static = StaticEmbedder.bundled(bundled_tokenizer())
    fitted = EmbeddingClassifier.fit(static.embed([t for t, _ in pairs]),
                                     [c for _, c in pairs], kind=spec.kind)
    labels = []
    for model, vectors in ((full, table.matrix(texts)), (fitted, static.embed(texts))):
        names, probs = model.predict_many(vectors)
        labels.append([n if p >= spec.min_confidence else "" for n, p in zip(names, probs)])
    agree = float(np.mean([a == b for a, b in zip(*labels)]))
    print(f"\na static-vector classifier ({spec.kind}, the {len(pairs)} built-in examples) "
          f"agrees with the shipped one on the model's vectors for {agree:.1%} of "
          f"{len(texts)} texts: a far miss that needs the classifier keeps no category")
    return {"texts": len(texts), "agreement": agree}


def print_ood(rows: dict[str, dict], bound: float, floor: int, loss: float) -> bool:
    """Print the out-of-domain table; return the pre-stated rule's verdict: default on only
    if every set with at least ``floor`` semantic hits loses at most ``loss`` of them."""
    print(f"\nout of domain (data the static map never saw), pre-filter off vs on at the "
          f"shipped bound {bound}, same vectors:")
    for name, r in rows.items():
        print(f"  {name:14s} keys {r['keys']:6d} ({r['paraphrase_keys']:5d} with paraphrases)"
              f" | exact hits {r['exact_hits']:5d}, semantic hits {r['semantic_hits']:4d} "
              f"({r['wrong_semantic_hits']} wrong) | lost {r['semantic_hits_lost']:3d} = "
              f"{r['semantic_hits_lost_share']:6.2%} of semantic hits ({r['right_hits_lost']} "
              f"right ones) | misses {r['misses']:5d}, skipped {r['misses_skipped']:5d} = "
              f"{r['misses_skipped_share']:5.1%} | hits off {r['hits_off']} on {r['hits_on']}"
              f" | misses with a near candidate {r['near_candidates']}, far with the filter on "
              f"{r['near_candidates_lost']}")
    counted = {n: r for n, r in rows.items() if r["semantic_hits"] >= floor}
    verdict = bool(counted) and all(r["semantic_hits_lost_share"] <= loss
                                    for r in counted.values())
    print(f"  rule (stated before the run): default on only if hits lost <= {loss:.1%} of "
          f"semantic hits on every set with >= {floor} of them ({', '.join(counted) or 'none'})"
          f": {'ON' if verdict else 'stays OFF'}")
    for name, r in rows.items():
        for text in r["lost_examples"]:
            print(f"    lost ({name}): {text[:110]!r}")
    return verdict


def config_low() -> float:
    """The shipped lower bound of the grey zone (``verify_low``): nothing below it is served."""
    return float(load_config({}).policy("general").verify_low)


def _stats(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p99": pct(values, 0.99)}


def run_miss_path(model, table: EmbeddingTable, root: Path, args: argparse.Namespace,
                  variants: dict[str, dict]) -> dict:
    """:func:`miss_path` with ``args.queries`` NQ-open test-half questions against
    ``args.entries`` train-split texts, printed per variant."""
    rng = np.random.default_rng(0)
    pool = sorted({t for t, _ in ds.banking77(root, "train")} | {t for t, _ in
                  ds.clinc(root, "train")[0]} | {q for q in ds.nq_open(root)
                  if ds.half_of(q) == "train"})
    far = [q for q in ds.nq_open(root) if ds.half_of(q) == "test"][:args.queries]
    e2e = miss_path(model, table, pool, far, args.entries, variants, rng)
    print(f"\nmiss path, {args.entries:,} entries in one partition, bundled model, "
          f"{len(far)} questions (NQ-open test half) against train-split texts; the yardstick "
          "interleaved with the lookups:")
    for label, row in e2e.items():
        m, yard = row["miss_ms"], row["yardstick_ms"]
        y = yard["p50"]
        print(f"  {label:26s}: yardstick p50 {y:.2f} ms p99 {yard['p99']:.2f}; "
              f"lookup p50 {m['p50']:7.3f} ms  p99 {m['p99']:7.3f}  "
              f"= p50 {m['p50'] / y:.2f}x yardstick; far {row['far']}/{row['n']};"
              f" fill {row['fill_s']:.0f} s")
    return e2e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--loss", type=float, default=0.005,
                        help="share of semantic hits a bound may lose on train")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "prefilter.json"))
    parser.add_argument("--ood", action="store_true",
                        help="only the out-of-domain replays (pre-filter off vs on)")
    parser.add_argument("--ood-requests", type=int, default=10_000)
    parser.add_argument("--rebuild", type=int, default=0, metavar="N",
                        help="only the time to open a cache over N stored entries, "
                             "pre-filter off and as shipped")
    parser.add_argument("--miss-path", action="store_true",
                        help="only the miss path at --entries, on the default config "
                             "with the pre-filter off and as shipped")
    args = parser.parse_args(argv)
    root, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = open_embedder("minilm")
    if args.miss_path:
        table = EmbeddingTable(model, out / "emb")
        e2e = run_miss_path(model, table, root, args, {
            "defaults, prefilter.enabled false": {"prefilter": {"enabled": False}},
            "defaults (prefilter auto)": {}})
        Path(args.json).with_name("prefilter_miss_path.json").write_text(
            json.dumps(e2e, indent=1) + "\n")
        return 0
    if args.rebuild:
        table = EmbeddingTable(model, out / "emb")
        pool = sorted({t for t, _ in ds.banking77(root, "train")} | {q for q in ds.nq_open(root)
                      if ds.half_of(q) == "train"})
        opened = rebuild(model, table, pool, args.rebuild, np.random.default_rng(0))
        print(f"\nopening a cache over {args.rebuild:,} SQLite entries (one partition; the "
              f"rebuild from the store), default config: prefilter.enabled false "
              f"{opened['off']:.1f} s, as shipped (auto) {opened['auto']:.1f} s (its static "
              f"index, built in the background, ready after {opened['auto_static_ready']:.1f} s)")
        return 0
    if args.ood:
        table = EmbeddingTable(model, out / "emb")
        rows = ood_run(root, table, args.ood_requests)
        bound = load_config({}).prefilter.bound
        verdict = print_ood(rows, bound, floor=200, loss=args.loss)
        texts = sorted({str(line.query) for name in OOD for line in
                        ood_trace(ood_groups(root, name), requests=args.ood_requests)})
        agreement = classifier_agreement(texts, table)
        Path(args.json).with_name("prefilter_ood.json").write_text(json.dumps(
            {"bound": bound, "requests": args.ood_requests, "default_on": verdict,
             "sets": rows, "static_classifier": agreement}, indent=1) + "\n")
        return 0
    raw_path = out / "static_raw_rows.npy"
    if raw_path.exists():
        raw = np.load(raw_path)
    else:
        started = time.perf_counter()
        raw = token_vectors(model)
        np.save(raw_path, raw)
        print(f"token vectors: {raw.shape} in {time.perf_counter() - started:.1f} s")
    tokenizer = bundled_tokenizer()
    statics = {f"model2vec d{dim} sif{sif}": StaticEmbedder(distil(raw, dim=dim, sif=sif),
                                                            tokenizer)
               for dim, sif in VARIANTS}
    statics[SHIPPED] = StaticEmbedder.bundled(tokenizer)
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
        kinds, low = run["kinds"], config_low()
        ceiling = int(((kinds == 0) & (run["full"] < low)).sum())
        print(f"{split}: {len(trace)} requests ({time.perf_counter() - started:.0f} s): "
              f"misses {int((kinds == 0).sum())}, exact hits {int((kinds == 1).sum())}, "
              f"semantic hits {int((kinds == 2).sum())}, no semantic lookup "
              f"{int((kinds == 3).sum())}; misses with nothing >= {low:.2f} by the model "
              f"(what a perfect pre-filter could skip): {ceiling} "
              f"= {ceiling / max(int((kinds == 0).sum()), 1):.1%}")
        results[f"{split}_ceiling"] = ceiling
        for name, static in statics.items():
            run[name] = static_best(static.embed(texts), run["stored_at"])
        runs[split] = run
    print(f"\nbound per table: the largest losing <= {args.loss:.1%} of the train trace's "
          "semantic hits; then the test trace at that bound")
    results["tables"] = {}
    for name in statics:
        bound = bound_for(runs["train"][name], runs["train"]["kinds"], args.loss)
        train = outcome(runs["train"][name], runs["train"]["kinds"], bound)
        test = outcome(runs["test"][name], runs["test"]["kinds"], bound)
        results["tables"][name] = {"train": train, "test": test}
        print(f"  {name:26s} bound {bound:6.3f} | train: misses skipped "
              f"{train['misses_skipped_share']:6.1%} | test: misses skipped "
              f"{test['misses_skipped_share']:6.1%}, hits lost {test['hits_lost']}/"
              f"{test['hits']} = {test['hits_lost_share']:.2%} of hits, "
              f"{test['semantic_hits_lost_share']:.2%} of semantic hits")
    bound = results["tables"][SHIPPED]["train"]["bound"]
    static = statics[SHIPPED]
    print(f"\nshipped table: {static.table.shape}, "
          f"{(static.table.size * 2) / 1e6:.1f} MB on disk (float16), "
          f"{static.table.nbytes / 1e6:.1f} MB in memory; bound {bound}")
    bare = {"classifier": {"examples": None}, "rules": []}
    results["miss_path"] = run_miss_path(model, table, root, args, {
        "pre-filter off": {**bare, "prefilter": {"enabled": False, "bound": bound}},
        "pre-filter on": {**bare, "prefilter": {"enabled": True, "bound": bound}}})
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
