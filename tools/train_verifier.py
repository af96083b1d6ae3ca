"""Train the built-in verifier: ``prismcache/data/verifier-builtin.npz``.

    .venv/bin/pip install -e '.[train]'      # scikit-learn, for training only
    .venv/bin/python tools/train_verifier.py --vector-cache bench/out/emb

Reproducible for a seed (``--seed``, default 0). Only the TRAIN side of ``../shared/data`` is
read (NQ-open and GSM8K, which ship in one piece, are halved by a hash and only the "train"
half is used); ``bench/quality.py`` measures on the other side. Never trained on: Quora
Question Pairs, ComQA / WikiAnswers / Paralex, published LLM-written cache benchmarks.

The labelled pairs, each a (query, candidate, same) row:

================ =======================================================================
source           pairs
================ =======================================================================
nearest neighbours  within each keyed pool (Banking77 and CLINC150 train by FAQ intent;
                 CLINC slot intents, out-of-scope, SNIPS, NQ-open, GSM8K: one key per text;
                 ParaQA questions by SPARQL query; ParaQA answer verbalisations by
                 question), every text with its 4 nearest other texts by the bundled
                 embedder, labelled by key equality: the decisions a cache actually faces
PAWS-Wiki dev    labelled paraphrase / word-swap non-paraphrase pairs
SNLI dev         contradiction and neutral pairs (different)
STS-B train      score >= 4 same, <= 2 different
perturbations    negation, number/date, entity swap, argument order, scope (different)
                 and reworded (same) copies of train queries (prismcache.evaluation.perturb)
================ =======================================================================

Each source is weighted equally. 20% of the rows (by query) are held apart: the model is fit
on the rest, then its log-odds are calibrated on them (Platt scaling) and its held-apart ROC
AUC and recall at 99% precision printed beside the cosine's.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from prismcache.embedders import open_embedder
from prismcache.evaluation import datasets as ds
from prismcache.evaluation.metrics import recall_at_precision
from prismcache.evaluation.perturb import load_entities, perturb
from prismcache.evaluation.vectors import EmbeddingTable
from prismcache.verifiers.features import NAMES, content_words, pair_features

ROOT = Path(__file__).resolve().parents[1]
Row = tuple[str, str, bool, str]


def keyed_pools(root: Path) -> dict[str, list[tuple[str, str]]]:
    """(text, answer key) pools of the train side."""
    pools: dict[str, list[tuple[str, str]]] = {}
    pools["banking77"] = [(t, f"b77:{i}") for t, i in ds.banking77(root, "train")[::3]]
    rows, _, oos = ds.clinc(root, "train")
    pools["clinc"] = [(t, f"clinc:{i}" if i not in ds.SLOT_INTENTS else f"clinc:{i}:{t.lower()}")
                      for t, i in rows[::3]] + [(t, f"oos:{t}") for t in oos[:500]]
    snips = []
    with open(root / "snips_2017" / "utterances.tsv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["split"].startswith("train"):
                snips.append((row["text"], f"snips:{row['text'].lower()}"))
    pools["snips"] = snips[:: max(1, len(snips) // 3000)]
    pools["nq"] = [(q, f"nq:{q}") for q in ds.nq_open(root) if ds.half_of(q) == "train"]
    paraqa = json.loads((root / "paraqa" / "train.json").read_text("utf-8"))
    pools["paraqa_q"] = [(d["question"], f"pq:{d['query']}") for d in paraqa[:2000]
                         if d.get("question")]
    answers = []
    for d in paraqa[:1200]:
        for field in ["verbalized_answer"] + [f"verbalized_answer_{i}" for i in range(2, 9)]:
            if d.get(field):
                answers.append((d[field], f"pqa:{d['uid']}"))
    pools["paraqa_a"] = answers
    pools["gsm8k"] = [(q, f"gsm:{q}") for q in ds.gsm8k(root, "train")]
    return pools


def labelled_pairs(root: Path, rng: np.random.Generator) -> list[Row]:
    """PAWS-Wiki dev, SNLI dev (contradiction, neutral), STS-B train."""
    rows: list[Row] = []
    with open(root / "paws_wiki" / "dev.tsv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            rows.append((row["sentence1"], row["sentence2"], row["label"].strip() == "1", "paws"))
            if len(rows) >= 3000:
                break
    snli = 0
    with open(root / "snli_dev_test" / "snli_dev.tsv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["label"] in ("contradiction", "neutral") and snli < 2000:
                rows.append((row["premise"], row["hypothesis"], False, f"snli_{row['label']}"))
                snli += 1
    rows += [(p.query, p.candidate, p.same, p.kind)  # type: ignore[misc]
             for p in ds.stsb_pairs(root, "train", rng=rng, limit=1000)]
    return rows


def neighbour_pairs(pools: dict[str, list[tuple[str, str]]], table: EmbeddingTable,
                    k: int = 4) -> list[Row]:
    """Each text with its ``k`` nearest other texts of its pool, labelled by key equality."""
    rows: list[Row] = []
    for source, items in pools.items():
        texts = [t for t, _ in items]
        vectors = table.matrix(texts)
        for start in range(0, len(texts), 1024):
            sims = vectors[start:start + 1024] @ vectors.T
            for r in range(sims.shape[0]):
                i = start + r
                sims[r, i] = -1.0
                for j in np.argpartition(-sims[r], k)[:k]:
                    if texts[j].strip().lower() != texts[i].strip().lower():
                        rows.append((texts[i], texts[j], items[i][1] == items[j][1],
                                     f"nn_{source}"))
    return rows


def idf_table(texts: list[str]) -> tuple[dict[str, float], float]:
    """Smoothed inverse document frequencies of content words seen at least twice."""
    df: Counter[str] = Counter()
    for text in texts:
        df.update(set(content_words(text)))
    n = len(texts)
    return ({w: float(np.log((n + 1) / (c + 1)) + 1) for w, c in df.items() if c >= 2},
            float(np.log(n + 1) + 1))


def export_trees(model) -> dict[str, np.ndarray]:  # noqa: ANN001 - sklearn's private API
    """A fitted HistGradientBoostingClassifier's trees as padded arrays (builtin.Trees)."""
    trees = [predictors[0].nodes for predictors in model._predictors]
    width = max(len(t) for t in trees)
    out = {name: np.zeros((len(trees), width), dtype=dtype) for name, dtype in (
        ("feature", np.int32), ("threshold", np.float64), ("left", np.int32),
        ("right", np.int32), ("leaf", np.bool_), ("value", np.float64),
        ("missing_left", np.bool_))}
    for t, nodes in enumerate(trees):
        n = len(nodes)
        out["feature"][t, :n] = nodes["feature_idx"]
        out["threshold"][t, :n] = nodes["num_threshold"]
        out["left"][t, :n] = nodes["left"]
        out["right"][t, :n] = nodes["right"]
        out["leaf"][t, :n] = nodes["is_leaf"].astype(bool)
        out["leaf"][t, n:] = True
        out["value"][t, :n] = nodes["value"]
        out["missing_left"][t, :n] = nodes["missing_go_to_left"].astype(bool)
    out["depth"] = np.array(max(int(t["depth"].max()) for t in trees) + 1)
    out["baseline"] = np.array(float(np.ravel(model._baseline_prediction)[0]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train the built-in verifier")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--vector-cache", default=str(ROOT / "bench" / "out" / "emb"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "prismcache" / "data" /
                                             "verifier-builtin.npz"))
    args = parser.parse_args(argv)
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
    except ImportError:
        raise SystemExit("training needs scikit-learn: pip install -e '.[train]'") from None
    started = time.perf_counter()
    root, rng = Path(args.data), np.random.default_rng(args.seed)
    table = EmbeddingTable(open_embedder("minilm"), args.vector_cache)
    pools = keyed_pools(root)
    entities, values = load_entities(root)
    bases = [t for s in ("banking77", "clinc", "nq", "paraqa_q", "snips") for t, _ in pools[s]]
    bases = [bases[i] for i in rng.permutation(len(bases))[:2500]]
    labelled = labelled_pairs(root, rng)
    perturbed = perturb(bases, rng, entities=entities, pools=values)
    texts = sorted({t for items in pools.values() for t, _ in items}
                   | {t for row in labelled + perturbed for t in row[:2]})
    print(f"embedding {len(texts)} texts ...", flush=True)
    table.ensure(texts, progress=True)
    rows = neighbour_pairs(pools, table) + labelled + perturbed
    idf, default_idf = idf_table(sorted({t for row in rows for t in row[:2]}))
    x = np.stack([pair_features(q, c, float(table.vector(q) @ table.vector(c)), idf,
                                default_idf) for q, c, _, _ in rows])
    y = np.array([same for _, _, same, _ in rows])
    kinds = np.array([kind for *_, kind in rows])
    weight = np.ones(len(rows))
    for kind in set(kinds.tolist()):
        weight[kinds == kind] = 1.0 / (kinds == kind).sum()
    weight *= len(rows) / weight.sum()
    held = np.array([hashlib.blake2b(q.encode(), digest_size=1).digest()[0] % 5 == 0
                     for q, *_ in rows])
    model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.08, max_leaf_nodes=15,
                                           l2_regularization=1.0, random_state=args.seed)
    model.fit(x[~held], y[~held], sample_weight=weight[~held])
    raw = model.decision_function(x[held])
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(raw[:, None], y[held],
                                                        sample_weight=weight[held])
    trees = export_trees(model)
    words = sorted(idf)
    payload = {**trees, "names": np.array(NAMES), "idf_words": np.array(words),
               "idf_values": np.array([idf[w] for w in words]),
               "default_idf": np.array(default_idf),
               "platt_a": np.array(float(platt.coef_[0, 0])),
               "platt_b": np.array(float(platt.intercept_[0])),
               "version": np.array("builtin-v1")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **payload)
    from prismcache.verifiers.builtin import BuiltinVerifier

    check = BuiltinVerifier(args.out)._trees.raw(x[held][:200])
    if not np.allclose(check, raw[:200], atol=1e-6):
        raise SystemExit("exported trees disagree with the fitted model")
    p = 1.0 / (1.0 + np.exp(-(platt.coef_[0, 0] * raw + platt.intercept_[0])))
    cos, yh = x[held, 0], y[held]
    report = {
        "date": datetime.date.today().isoformat(), "seed": args.seed,
        "rows": len(rows), "held_apart": int(held.sum()),
        "kinds": dict(Counter(kinds.tolist())),
        "held_apart_metrics": {
            "cosine": {"roc_auc": float(roc_auc_score(yh, cos)),
                       "recall_at_99": recall_at_precision(cos, yh, 0.99)},
            "verifier": {"roc_auc": float(roc_auc_score(yh, p)),
                         "recall_at_99": recall_at_precision(p, yh, 0.99)}},
        "by_kind": {}}
    for kind in sorted(set(kinds[held].tolist())):
        m = kinds[held] == kind
        report["by_kind"][kind] = {"pairs": int(m.sum()), "same": float(yh[m].mean()),
                                   "mean_p": float(p[m].mean())}
    Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["held_apart_metrics"], indent=1))
    print(f"wrote {args.out} ({Path(args.out).stat().st_size:,} bytes) in "
          f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
