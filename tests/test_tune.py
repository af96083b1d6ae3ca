"""``prismcache tune`` end to end on a tiny pair set, and serving its output (``tuned:DIR``,
``builtin:DIR/verifier.npz``) with the real bundled model and a real SQLite file."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prismcache import EmbedderMismatch, SemanticCache
from prismcache.cli import main
from prismcache.config import load_config
from prismcache.embedders import open_embedder
from prismcache.embedders.tuned import Adapter, TunedEmbedder
from prismcache.errors import ConfigError
from prismcache.evaluation.records import Pair, read_pairs
from prismcache.tune.boost import boost, stack
from prismcache.tune.run import TextPair, split_pairs
from prismcache.verifiers import open_verifier
from prismcache.verifiers.builtin import Trees
from conftest import chat, reply

#: paraphrase groups: texts of one group deserve one answer, of two groups different ones
GROUPS = [
    ["how do i freeze my card", "can you lock my card", "i want to block my card right now"],
    ["what is my account balance", "how much money do i have", "show me my balance"],
    ["i lost my card", "my card is missing", "i cannot find my bank card"],
    ["how do i change my pin", "i want a new pin number", "can i reset my card pin"],
    ["what is the exchange rate fee", "how much do you charge to exchange money",
     "what fee do you take for currency exchange"],
    ["my transfer has not arrived", "the money i sent is not there yet",
     "why is my transfer still pending"],
    ["how do i close my account", "i want to delete my account", "cancel my bank account"],
    ["where can i use my card", "which shops accept this card", "is my card accepted abroad"],
    ["how long does a refund take", "when will i get my refund", "refund still not received"],
    ["can i get a physical card", "how do i order a plastic card", "send me a real card"],
]


def _pairs() -> list[Pair]:
    pairs = []
    for g, texts in enumerate(GROUPS):
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                pairs.append(Pair(query=texts[i], candidate=texts[j], same=True,
                                  category="support"))
        other = GROUPS[(g + 1) % len(GROUPS)]
        for i in range(len(texts)):
            pairs.append(Pair(query=texts[i], candidate=other[i], same=False,
                              category="support"))
    return pairs


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `prismcache tune` run over the tiny set (plus a messages pair, which is skipped)."""
    root = tmp_path_factory.mktemp("tune")
    source = root / "pairs.jsonl"
    lines = [json.dumps(p.to_json()) for p in _pairs()]
    lines.append(json.dumps({"query": [{"role": "user", "content": "hi"}],
                             "candidate": "hello", "same": True}))
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = root / "out"
    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        code = main(["tune", str(source), "--out", str(out), "--epochs", "3",
                     "--held-apart", "0.3"])
    return {"code": code, "out": out, "source": source, "stderr": err.getvalue(),
            "stdout": std.getvalue()}


def test_tune_writes_every_file_and_reports_progress(tuned: dict[str, Any]) -> None:
    assert tuned["code"] == 0, tuned["stderr"]
    out: Path = tuned["out"]
    for name in ("adapter.npz", "verifier.npz", "verifier.json", "manifest.json",
                 "config.yaml"):
        assert (out / name).is_file(), name
    err = tuned["stderr"]
    assert "embedding" in err and "training the adapter" in err and "left" in err
    assert "skipped 1 pairs given as messages lists" in err
    assert "tuned_cosine" in tuned["stdout"] and "wrote" in tuned["stdout"]


def test_manifest_records_model_data_split_and_metrics(tuned: dict[str, Any]) -> None:
    manifest = json.loads((tuned["out"] / "manifest.json").read_text())
    base = open_embedder("minilm")
    assert manifest["base_model"] == base.id
    assert manifest["embedder"].startswith("all-MiniLM-L6-v2-int8+adapter-")
    assert manifest["embedder"].endswith(":384")
    data = manifest["data"]
    assert data["pairs"] == len(_pairs()) and data["skipped_messages"] == 1
    assert (data["train_pairs"] + data["held_apart_pairs"] + data["dropped_across_split"]
            == data["pairs"])
    assert len(data["sha256"]) == 64 and manifest["seed"] == 0 and manifest["date"]
    metrics = manifest["held_apart_metrics"]
    for name in ("base_cosine", "tuned_cosine", "base_verifier", "tuned_verifier"):
        assert set(metrics[name]) == {"roc_auc", "recall_at_99"}
    assert manifest["verifier_fit"]["trees_kept"] > 0


def test_spec_loads_the_adapter_over_the_bundled_model(tuned: dict[str, Any]) -> None:
    out: Path = tuned["out"]
    embedder = open_embedder(f"tuned:{out}")
    manifest = json.loads((out / "manifest.json").read_text())
    assert embedder.id == manifest["embedder"]
    texts = ["how do i freeze my card", "what is my account balance"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    adapter = Adapter.load(out / "adapter.npz")
    expected = adapter.apply(open_embedder("minilm").embed(texts))
    assert np.allclose(vectors, expected, atol=1e-5)
    assert not np.allclose(adapter.matrix, np.eye(384), atol=1e-4)  # it did learn something
    verifier = open_verifier(f"builtin:{out / 'verifier.npz'}")
    assert verifier is not None and verifier.name == manifest["verifier"]


def test_config_snippet_opens_a_cache_whose_classifier_uses_the_tuned_embedder(
        tuned: dict[str, Any], tmp_path: Path) -> None:
    config = load_config(tuned["out"] / "config.yaml")
    assert config.embedder.startswith("tuned:")
    assert config.policy("support").verifier.startswith("builtin:")
    examples = tmp_path / "examples.jsonl"  # a few: the shipped 420 take minutes to embed
    examples.write_text("".join(json.dumps({"text": t, "category": c}) + "\n" for t, c in (
        ("how do i freeze my card", "support"), ("what is my balance", "support"),
        ("write a python function to sort a list", "code"),
        ("fix this javascript error", "code"))))
    mapping = {"embedder": config.embedder, "store": f"sqlite:///{tmp_path}/c.db",
               "snapshot": None, "classifier": {"examples": str(examples)},
               "defaults": {"verifier": config.policy("support").verifier}}
    with SemanticCache.open(mapping) as cache:  # classifier centroids from the tuned vectors
        cache.store(chat("how do i freeze my card"), reply("use the app"), tenant="t")
        assert cache.lookup(chat("how do i freeze my card"), tenant="t").hit
        assert cache.explain(chat("sort a list in python"), tenant="t").category == "code"


def assert_base_vectors_refused(spec: str, tmp_path: Path) -> dict[str, Any]:
    """A cache of base-model vectors refuses to open with embedder ``spec``; returns the
    config used (without ``embedder``), one category ``loose``."""
    config = {"store": f"sqlite:///{tmp_path}/c.db", "snapshot": None,
              "classifier": {"examples": None}, "rules": [],
              "defaults": {"verifier": "none"}, "categories": {"loose": {"threshold": 0.5}}}
    with SemanticCache.open({**config, "embedder": "minilm"}) as cache:
        cache.store(chat("q"), reply("x"), tenant="t", category="loose")
    with pytest.raises(EmbedderMismatch, match="all-MiniLM-L6-v2-int8:384"):
        SemanticCache.open({**config, "embedder": spec})
    return config


def test_vectors_of_the_base_model_are_refused(tuned: dict[str, Any], tmp_path: Path) -> None:
    assert_base_vectors_refused(f"tuned:{tuned['out']}", tmp_path)


def test_a_damaged_or_foreign_adapter_is_refused(tuned: dict[str, Any], tmp_path: Path) -> None:
    adapter = Adapter.load(tuned["out"] / "adapter.npz")
    np.savez(tmp_path / "adapter.npz", matrix=adapter.matrix * 2, base=np.array(adapter.base),
             sha256=np.array(adapter.sha256))
    with pytest.raises(ConfigError, match="does not match its recorded sha256"):
        open_embedder(f"tuned:{tmp_path}")
    with pytest.raises(ConfigError, match="not of hash-v1:384"):
        TunedEmbedder(open_embedder("hash:384"), adapter)
    with pytest.raises(ConfigError, match="cannot read the adapter"):
        open_embedder(f"tuned:{tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="expected 'tuned:DIR'"):
        open_embedder("tuned:")


def test_too_few_pairs_is_a_clear_error(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "p.jsonl"
    source.write_text(json.dumps(_pairs()[0].to_json()) + "\n")
    assert main(["tune", str(source), "--out", str(tmp_path / "o")]) == 2
    assert "at least two pairs of each label" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a"}\n')
    assert main(["tune", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:1: bad pair" in capsys.readouterr().err


def test_split_keeps_every_text_on_one_side() -> None:
    pairs = [TextPair(str(p.query), str(p.candidate), p.same) for p in _pairs()]
    train, test, dropped = split_pairs(pairs, 0.3)
    assert train and test and len(train) + len(test) + dropped == len(pairs)
    train_texts = {t for p in train for t in (p.query, p.candidate)}
    test_texts = {t for p in test for t in (p.query, p.candidate)}
    assert not train_texts & test_texts
    assert split_pairs(pairs, 0.3) == (train, test, dropped)  # deterministic


def test_boosted_trees_load_in_the_builtin_layout_and_stack() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 3))
    x[rng.random(600) < 0.1, 2] = np.nan
    y = (x[:, 0] - x[:, 1] > 0) | np.isnan(x[:, 2])
    first = boost(x, y, rounds=10)
    second = boost(x, y, offset=Trees(**first).raw(x), rounds=10)
    both = stack(first, second)
    assert np.allclose(Trees(**both).raw(x), Trees(**first).raw(x) + Trees(**second).raw(x))
    assert ((Trees(**both).raw(x) > 0) == y).mean() > 0.9


def test_reading_the_pairs_back_matches_the_written_set(tuned: dict[str, Any]) -> None:
    assert len(read_pairs(tuned["source"])) == len(_pairs()) + 1
