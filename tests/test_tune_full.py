"""``prismcache tune --full`` without its extra, and serving a fine-tuned ``tuned:DIR``
(``model.onnx``) with onnxruntime: the model here is a tiny ONNX graph built in the test, with
the bundled model's inputs and output, so no torch is needed (the real fine-tune is a benchmark,
``bench/tune.py --full``)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import chat, reply
from test_tune import assert_base_vectors_refused

from prismcache import SemanticCache
from prismcache.cli import main
from prismcache.embedders import open_embedder
from prismcache.embedders.tuned import FineTunedEmbedder
from prismcache.errors import ConfigError
from prismcache.evaluation.records import Pair

DIM = 384


def _weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return (rng.normal(size=DIM).astype(np.float32) / 1000,
            rng.normal(size=DIM).astype(np.float32))


def _graph(path: Path) -> None:
    """``last_hidden_state[b, s] = sin(input_ids[b, s] * w) + bias``: a stand-in for the model
    with its three inputs and its output, batch and sequence dynamic."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w, bias = _weights()
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
              for name in ("input_ids", "attention_mask", "token_type_ids")]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                           ["batch", "sequence", DIM])
    nodes = [helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["ids", "axis"], ["column"]),
             helper.make_node("Mul", ["column", "w"], ["scaled"]),
             helper.make_node("Sin", ["scaled"], ["wave"]),
             helper.make_node("Add", ["wave", "bias"], ["last_hidden_state"])]
    graph = helper.make_graph(nodes, "tiny", inputs, [output], initializer=[
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis"),
        numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _expected(texts: list[str]) -> np.ndarray:
    """What the stand-in model, pooled and normalised as served, gives for ``texts``."""
    from prismcache.embedders.minilm import bundled_tokenizer

    w, bias = _weights()
    rows = []
    for text in texts:
        ids = np.array(bundled_tokenizer().encode(text).ids, dtype=np.float32)
        vector = (np.sin(ids[:, None] * w) + bias).mean(axis=0)
        rows.append(vector / np.linalg.norm(vector))
    return np.array(rows)


def _tuned_dir(root: Path, precision: str = "float32") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _graph(root / "model.onnx")
    digest = hashlib.sha256((root / "model.onnx").read_bytes()).hexdigest()
    (root / "manifest.json").write_text(json.dumps(
        {"model": {"file": "model.onnx", "sha256": digest, "precision": precision}}))
    return root


def test_full_without_the_extra_names_it_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without torch
    source = tmp_path / "p.jsonl"
    pair = Pair(query="a", candidate="b", same=True, category="c")
    source.write_text(json.dumps(pair.to_json()) + "\n")
    assert main(["tune", str(source), "--out", str(tmp_path / "o"), "--full"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'prismcache[tune]'" in err and "torch" in err
    assert not (tmp_path / "o").exists()


def test_a_model_dir_is_served_like_the_bundled_model(tmp_path: Path) -> None:
    directory = _tuned_dir(tmp_path / "full")
    embedder = open_embedder(f"tuned:{directory}")
    assert isinstance(embedder, FineTunedEmbedder)
    digest = hashlib.sha256((directory / "model.onnx").read_bytes()).hexdigest()
    assert embedder.id == f"all-MiniLM-L6-v2-tuned-float32-{digest[:12]}:384"
    texts = ["how do i freeze my card", "hi", "what is the exchange rate fee today"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, DIM) and vectors.dtype == np.float32
    assert np.allclose(vectors, _expected(texts), atol=1e-5)  # mean over the mask, normalised
    alone = np.concatenate([embedder.embed([t]) for t in texts])
    assert np.allclose(vectors, alone, atol=1e-5)  # padding never changes a vector
    assert not embedder.dynamic  # float batches; an int8 model runs one text per call
    int8 = _tuned_dir(tmp_path / "int8", precision="int8")
    assert FineTunedEmbedder.from_dir(int8).dynamic
    assert not FineTunedEmbedder.from_dir(int8).batch_invariant  # int8: one text per call


def test_a_damaged_or_unrecorded_model_is_refused(tmp_path: Path) -> None:
    directory = _tuned_dir(tmp_path / "full")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["model"]["sha256"] = "0" * 64
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="does not match the sha256 in its manifest"):
        open_embedder(f"tuned:{directory}")
    manifest["model"]["precision"] = "int4"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="int8 or float32"):
        open_embedder(f"tuned:{directory}")
    (directory / "manifest.json").unlink()
    with pytest.raises(ConfigError, match="without a usable manifest.json"):
        open_embedder(f"tuned:{directory}")


def test_vectors_of_the_base_model_are_refused(tmp_path: Path) -> None:
    directory = _tuned_dir(tmp_path / "full")
    config = assert_base_vectors_refused(f"tuned:{directory}", tmp_path)
    with SemanticCache.open({**config, "store": f"sqlite:///{tmp_path}/d.db",
                             "embedder": f"tuned:{directory}"}) as cache:
        cache.store(chat("how do i freeze my card"), reply("use the app"), tenant="t",
                    category="loose")
        assert cache.lookup(chat("how do i freeze my card"), tenant="t").hit


def test_an_adapter_run_drops_a_model_an_earlier_full_run_left(tmp_path: Path) -> None:
    directory = _tuned_dir(tmp_path / "out")
    groups = [["how do i freeze my card", "can you lock my card"],
              ["what is my account balance", "how much money do i have"],
              ["i lost my card", "my card is missing"]]
    pairs = [Pair(query=a, candidate=b, same=True, category="c") for a, b in groups]
    pairs += [Pair(query=groups[i][0], candidate=groups[(i + 1) % 3][1], same=False,
                   category="c")
              for i in range(3)]
    source = tmp_path / "p.jsonl"
    source.write_text("".join(json.dumps(p.to_json()) + "\n" for p in pairs))
    assert main(["tune", str(source), "--out", str(directory), "--epochs", "1",
                 "--held-apart", "0.01"]) == 0
    assert not (directory / "model.onnx").exists()
    assert open_embedder(f"tuned:{directory}").name.startswith("all-MiniLM-L6-v2-int8+adapter-")
