"""eval, replay and calibrate on tiny hand-made inputs whose answers are computed by hand.

The embedder here is a table of hand-set vectors (it implements the embedder protocol), so every
cosine similarity below is chosen, not measured.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml

from prismcache import SemanticCache
from prismcache.cli import main
from prismcache.config import load_config
from prismcache.errors import EmbeddingError
from prismcache.evaluation import metrics
from prismcache.evaluation.calibrate import calibrate, write_policy
from prismcache.evaluation.evaluate import evaluate
from prismcache.evaluation.records import Pair, TraceLine, read_pairs, write_jsonl
from prismcache.evaluation.replay import replay
from prismcache.evaluation.vectors import EmbeddingTable, PrecomputedEmbedder

DIM = 16


class TableEmbedder:
    """Hand-set vectors by text; an unknown text is an error."""

    name = "table"
    dim = DIM

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    @property
    def id(self) -> str:
        return f"{self.name}:{self.dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        try:
            return np.stack([self.vectors[t] for t in texts]).astype(np.float32)
        except KeyError as exc:
            raise EmbeddingError(f"no vector for {exc}") from None


def unit(axis: int) -> np.ndarray:
    v = np.zeros(DIM)
    v[axis] = 1.0
    return v


def at_cosine(base: int, cos: float, other: int) -> np.ndarray:
    """A unit vector with cosine ``cos`` to ``unit(base)``, bending towards ``unit(other)``."""
    return cos * unit(base) + math.sqrt(1 - cos * cos) * unit(other)


# (query, candidate, same, cosine): each pair on its own pair of axes
PAIRS = [
    ("freeze my card", "lock my card", True, 0.95),
    ("card arrival time", "card delivery estimate", False, 0.90),
    ("reset my pin", "change my pin", True, 0.80),
    ("open an account", "top up my account", False, 0.60),
    ("cancel my transfer", "don't cancel my transfer", False, 0.99),  # the negation guard
]


@pytest.fixture
def pair_table() -> tuple[list[Pair], EmbeddingTable]:
    vectors, pairs = {}, []
    for i, (q, c, same, cos) in enumerate(PAIRS):
        vectors[q] = unit(2 * i)
        vectors[c] = at_cosine(2 * i, cos, 2 * i + 1)
        pairs.append(Pair(query=q, candidate=c, same=same, category="support", kind="k"))
    return pairs, EmbeddingTable(TableEmbedder(vectors))


CONFIG = {"classifier": {"examples": None},
          "categories": {"support": {"threshold": 0.85}}}


def test_eval_matches_hand_computed_precision_and_recall(pair_table) -> None:
    pairs, table = pair_table
    result = evaluate(pairs, load_config(CONFIG), table)
    group = result["categories"]["support"]
    # At 0.85: served "freeze" (same), "arrival" (different); negation pair stopped by guard.
    guarded = group["at_configured"]["guarded"]
    assert (guarded["tp"], guarded["fp"], guarded["fn"], guarded["tn"]) == (1, 1, 1, 2)
    assert guarded["precision"] == 0.5 and guarded["recall"] == 0.5
    unguarded = group["at_configured"]["unguarded"]
    assert unguarded["precision"] == pytest.approx(1 / 3) and unguarded["recall"] == 0.5
    assert group["guard_rejections_above_threshold"] == {"negation": {"different": 1}}
    row = next(r for r in group["sweep"] if r["threshold"] == 0.75)
    assert (row["tp"], row["fp"], row["precision"], row["recall"]) == (2, 1, 2 / 3, 1.0)
    # ROC AUC on cosine: positives 0.95, 0.80 vs negatives 0.99, 0.90, 0.60 -> 3 of 6 wins.
    assert group["roc_auc"] == pytest.approx(0.5)
    # With guards the negation pair scores lowest: 0.95 beats all 3, 0.80 beats 2 -> 5/6.
    assert group["roc_auc_guarded"] == pytest.approx(5 / 6)
    # The loosest threshold with precision >= 0.95 sits just above the 0.90 negative.
    at_target = group["at_target"]["guarded"]
    assert 0.9 <= at_target["threshold"] <= 0.95
    assert (at_target["precision"], at_target["recall"]) == (1.0, 0.5)
    assert result["overall"]["pairs"] == 5


def test_eval_json_shape_is_stable(pair_table) -> None:
    pairs, table = pair_table
    result = evaluate(pairs, load_config(CONFIG), table)
    assert set(result) == {"embedder", "target_precision", "overall", "categories"}
    group_keys = {"pairs", "positives", "negatives", "roc_auc", "roc_auc_guarded", "at_target",
                  "at_configured", "guard_rejections_above_threshold", "kinds", "sweep",
                  "sweep_unguarded"}
    assert set(result["overall"]) == group_keys
    assert set(result["categories"]["support"]) == group_keys | {"configured_threshold"}
    assert set(result["overall"]["sweep"][0]) == {"threshold", "precision", "recall", "f1",
                                                 "tp", "fp", "fn", "tn"}


def trace_table() -> tuple[list[TraceLine], EmbeddingTable]:
    vectors = {"q1": unit(0), "q1b": at_cosine(0, 0.95, 1), "q2": at_cosine(0, 0.93, 2),
               "q3": at_cosine(0, 0.5, 3)}
    lines = [TraceLine(query=q, answer_key=k, category="support", t=float(i))
             for i, (q, k) in enumerate([("q1", "A"), ("q1", "A"), ("q1b", "A"), ("q2", "B"),
                                         ("q3", "C")])]
    return lines, EmbeddingTable(TableEmbedder(vectors))


REPLAY_CONFIG = {"classifier": {"examples": None},
                 "defaults": {"verifier": "none"},
                 "categories": {"support": {"threshold": 0.9, "guards": []}}}


def test_replay_counts_hand_computed_hits_and_false_hits() -> None:
    lines, table = trace_table()
    result = replay(lines, load_config(REPLAY_CONFIG), table, use_trace_categories=True)
    # miss+store, exact hit (A), semantic hit q1b->q1 (A, correct), q2->q1 (A for B: false),
    # q3 below threshold (miss).
    got = result["categories"]["support"]
    assert (got["requests"], got["hits"], got["exact_hits"], got["false_hits"]) == (5, 3, 1, 1)
    assert got["hit_rate"] == pytest.approx(0.6)
    assert got["false_hit_rate"] == pytest.approx(0.2)
    assert got["precision"] == pytest.approx(2 / 3)
    assert got["oracle_hit_rate"] == pytest.approx(0.4)  # requests 2 and 3 (A cached)
    assert got["miss_reasons"] == {"below-threshold": 1, "empty": 1}
    assert result["overall"]["hits"] == 3


def test_replay_with_a_uniform_threshold_and_charged_embedding() -> None:
    lines, table = trace_table()
    result = replay(lines, load_config(REPLAY_CONFIG), table, use_trace_categories=True,
                    threshold=0.99, embed_latency=np.array([0.5]))
    got = result["overall"]
    assert (got["hits"], got["false_hits"]) == (1, 0)  # only the exact repeat
    # every miss embedded once (memoised for its store): >= 0.5 s each
    assert got["miss_overhead_ms"]["p50"] >= 500
    assert result["thresholds"]["support"] == 0.99


def test_replay_json_shape_is_stable() -> None:
    lines, table = trace_table()
    result = replay(lines, load_config(REPLAY_CONFIG), table, use_trace_categories=True)
    assert set(result) == {"requests", "seconds", "use_trace_categories", "thresholds",
                           "overall", "categories"}
    assert set(result["overall"]) == set(result["categories"]["support"]) == {
        "requests", "hits", "exact_hits", "semantic_hits", "false_hits", "hit_rate",
        "false_hit_rate", "precision", "oracle_hit_rate", "lookup_ms", "miss_overhead_ms",
        "hit_latency_ms",
        "upstream_latency_s", "price_per_request_usd", "latency_saved_s", "money_saved_usd",
        "break_even_hit_rate", "miss_reasons"}


def test_precomputed_embedder_refuses_unknown_text() -> None:
    _, table = trace_table()
    table.ensure(["q1"])
    with pytest.raises(EmbeddingError):
        PrecomputedEmbedder(table).embed(["never seen"])


@pytest.mark.parametrize("seed", range(40))
def test_best_threshold_never_below_target(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    labels = rng.random(n) < rng.uniform(0.2, 0.8)
    scores = np.clip(rng.normal(0.75 + 0.1 * labels, 0.08), 0, 1)
    eligible = rng.random(n) < 0.9
    target = float(rng.uniform(0.6, 0.97))
    for bound in ("wilson", "point"):
        choice = metrics.best_threshold(scores, eligible, labels, target, bound=bound)
        if choice is None:
            continue
        served = eligible & (scores >= choice.threshold)
        assert served.sum() == choice.served
        assert (served & labels).sum() / served.sum() >= target
        if bound == "wilson":
            assert metrics.wilson_lower(int((served & labels).sum()), int(served.sum())) >= target


def test_calibrate_fits_flags_and_writes_a_loadable_policy(tmp_path: Path, pair_table) -> None:
    rng = np.random.default_rng(1)
    vectors, pairs = {}, []
    for i in range(300):  # "travel": same pairs at cos ~0.9, different at ~0.7
        same = i % 2 == 0
        q, c = f"travel query {i}", f"travel candidate {i}"
        vectors[q] = unit(0)
        vectors[c] = at_cosine(0, float(rng.uniform(0.85, 0.97) if same
                                        else rng.uniform(0.6, 0.88)), 1 + i % 15)
        pairs.append(Pair(query=q, candidate=c, same=same, category="travel"))
    few, few_table = pair_table
    vectors.update(few_table.embedder.vectors)  # type: ignore[attr-defined]
    table = EmbeddingTable(TableEmbedder(vectors))
    config = load_config({"classifier": {"examples": None}})
    results = {r.category: r for r in calibrate(pairs + few, config, table,
                                                 target_precision=0.9)}
    travel = results["travel"]
    assert travel.flag is None and 0.85 <= travel.threshold <= 0.97
    assert travel.precision_lower is not None and travel.precision_lower >= 0.9
    assert results["support"].flag == "too-few-pairs"
    assert results["support"].threshold == config.policy("support").threshold
    path = tmp_path / "policy.yaml"
    text = write_policy(path, list(results.values()), target_precision=0.9)
    assert "FLAGGED too-few-pairs: support" in text
    loaded = load_config(path)
    assert loaded.categories["travel"].threshold == travel.threshold
    cache = SemanticCache.open({**yaml.safe_load(path.read_text()), "store": "memory://",
                                "classifier": {"examples": None}},
                               embedder=TableEmbedder(vectors))
    assert cache.config.policy("travel").threshold == travel.threshold
    cache.close()


def test_cli_eval_replay_calibrate_with_the_hash_embedder(tmp_path: Path) -> None:
    pairs = [Pair(query=f"how do i reset my pin {w}", candidate=f"reset pin {w} please",
                  same=True, category="support") for w in ("now", "today", "quickly")]
    pairs += [Pair(query="how do i reset my pin", candidate="how do i close my account",
                   same=False, category="support")]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    trace = [TraceLine(query=q, answer_key=k, category="support")
             for q, k in [("reset my pin", "pin"), ("reset my pin please", "pin"),
                          ("close my account", "close")]]
    write_jsonl(tmp_path / "trace.jsonl", trace)
    config = tmp_path / "config.yaml"
    config.write_text("embedder: hash:64\nclassifier: {examples: null}\n")
    common = ["--config", str(config), "--vector-cache", str(tmp_path / "emb")]
    assert main(["eval", str(tmp_path / "pairs.jsonl"), *common,
                 "--json", str(tmp_path / "eval.json")]) == 0
    assert main(["replay", str(tmp_path / "trace.jsonl"), *common, "--use-trace-categories",
                 "--latency-samples", "3", "--json", str(tmp_path / "replay.json")]) == 0
    assert main(["calibrate", str(tmp_path / "pairs.jsonl"), *common[:2],
                 "--out", str(tmp_path / "policy.yaml")]) == 0
    assert set(json.loads((tmp_path / "eval.json").read_text())) >= {"overall", "categories"}
    replayed = json.loads((tmp_path / "replay.json").read_text())
    assert replayed["overall"]["requests"] == 3 and replayed["embedder"]["samples"] == 3
    assert (tmp_path / "emb").is_dir()
    load_config(tmp_path / "policy.yaml")
    assert len(read_pairs(tmp_path / "pairs.jsonl")) == 4


def test_plots_are_written(tmp_path: Path, pair_table) -> None:
    pytest.importorskip("matplotlib")
    from prismcache.evaluation import plots
    pairs, table = pair_table
    result = evaluate(pairs, load_config(CONFIG), table)
    assert plots.plot_precision_recall(result, tmp_path / "pr.png").stat().st_size > 0
    lines, vtable = trace_table()
    replayed = replay(lines, load_config(REPLAY_CONFIG), vtable, use_trace_categories=True,
                      embed_latency=np.array([0.001]))
    assert plots.plot_replay(replayed, tmp_path / "r.png").exists()
    assert plots.plot_break_even(replayed, tmp_path / "b.png").exists()
    points = [{"policy": "uniform", "label": "0.9", "hit_rate": 0.4, "false_hit_rate": 0.02}]
    assert plots.plot_policies(points, tmp_path / "p.png").exists()


def test_embedding_table_round_trips_through_disk(tmp_path: Path) -> None:
    from prismcache.embedders import HashEmbedder
    texts = [f"text {i}" for i in range(2000)]  # some digests end in NUL bytes
    first = EmbeddingTable(HashEmbedder(dim=8), tmp_path)
    assert first.ensure(texts[:1500]) == 1500
    assert first.ensure(texts) == 500  # appends, checkpoints, saves
    again = EmbeddingTable(HashEmbedder(dim=8), tmp_path)
    assert len(again) == 2000 and again.ensure(texts) == 0
    np.testing.assert_allclose(again.matrix(texts), HashEmbedder(dim=8).embed(texts))
