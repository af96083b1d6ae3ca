"""How prismcache runs the bundled model's graphs: leaving out :data:`SLOW_FUSIONS` keeps the
default session's vectors to float rounding for the float32 shipped graph (the int8 derivative
has its own id), the session leaves the caller's float mode alone, and the derivative has no
initializer among its graph inputs (which kept onnxruntime from folding constants) and its
products fused."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prismcache.embedders.minilm import SLOW_FUSIONS, MiniLMEmbedder

TEXTS = ["hi", "How do I reset my password?", "card not working abroad, what now " * 3,
         "Is there a fee for topping up with a card from another country?", "ok thanks",
         "what's the exchange rate today", "My transfer has been pending for three days, " * 6,
         "cancel", "why was I charged twice for the same purchase at the shop yesterday",
         "a longer text " * 60]


def default_session(path: Path) -> Any:
    """onnxruntime's defaults for every graph optimisation and float mode (1 thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def assert_same_vectors_as_the_default_session(embedder: MiniLMEmbedder) -> None:
    other = copy.copy(embedder)
    other._session = default_session(embedder.run_path)
    ours, theirs = embedder.embed(TEXTS), other.embed(TEXTS)
    assert float((ours * theirs).sum(axis=1).min()) >= 0.99999


def test_the_shipped_graph_gives_the_default_sessions_vectors() -> None:
    embedder = MiniLMEmbedder(batch_size=4)
    assert_same_vectors_as_the_default_session(embedder)  # as the embedder runs it


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory: pytest.TempPathFactory) -> MiniLMEmbedder:
    pytest.importorskip("onnx", reason="minilm:dynamic needs pip install 'prismcache[fast]'")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRISMCACHE_MODEL_CACHE", str(tmp_path_factory.mktemp("models")))
        return MiniLMEmbedder(dynamic=True)


def test_an_embedding_leaves_the_callers_denormals_alone(dynamic: MiniLMEmbedder) -> None:
    tiny = np.array([1e-39], dtype=np.float32)  # a denormal float32
    for embedder in (MiniLMEmbedder(), dynamic):
        embedder.embed(["hello there"])
        assert float((tiny * np.float32(1.0))[0]) > 0.0  # not flushed to zero in this thread
    assert SLOW_FUSIONS  # what it runs without: other vectors, hence its own id
    assert dynamic.id == "all-MiniLM-L6-v2-int8-rowwise2:384"


def test_the_dynamic_graph_has_no_initializer_as_input_and_fused_products(
        dynamic: MiniLMEmbedder) -> None:
    import onnx

    graph = onnx.load(str(dynamic.run_path)).graph
    constants = {initializer.name for initializer in graph.initializer}
    assert [value.name for value in graph.input] == ["input_ids", "attention_mask",
                                                     "token_type_ids"]
    assert not constants & {value.name for value in graph.input}
    ops = [node.op_type for node in graph.node]
    assert "MatMulInteger" not in ops
    assert ops.count("MatMulIntegerToFloat") == 36  # Q, K, V, output and the two FFN, 6 layers
