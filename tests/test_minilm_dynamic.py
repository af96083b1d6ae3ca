"""The int8 derivative of the bundled model (``minilm:dynamic``): made once into the model cache
from the pinned file, re-made when the cached file is damaged, close to the reference vectors,
the same vector for a text alone or in any padded batch, and never mistaken for the default
model or the retired per-call derivative."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from prismcache.embedders import BatchingEmbedder, open_embedder
from prismcache.embedders.minilm import MiniLMEmbedder
from prismcache.embedders.rowwise import rowwise_activations

pytest.importorskip("onnx", reason="minilm:dynamic needs pip install 'prismcache[fast]'")


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def dynamic(model_cache: Path) -> MiniLMEmbedder:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRISMCACHE_MODEL_CACHE", str(model_cache))
        embedder = open_embedder("minilm:dynamic")
    assert isinstance(embedder, MiniLMEmbedder)
    return embedder


def test_it_has_its_own_identity(dynamic: MiniLMEmbedder) -> None:
    assert dynamic.id == "all-MiniLM-L6-v2-int8-rowwise2:384"
    assert dynamic.id != MiniLMEmbedder.from_spec("minilm").id
    # the per-call derivative's vectors differ: a cache that stored them must not reuse them
    assert dynamic.id != "all-MiniLM-L6-v2-int8-dynamic:384"
    assert dynamic.id != "all-MiniLM-L6-v2-int8-rowwise:384"  # the same graph, fused LayerNorm
    assert "rowwise" in dynamic.run_path.name
    assert "dynamic=True" in repr(dynamic)


MIXED = ["hi", "How do I reset my password?", "card not working abroad, what now " * 3,
         "Is there a fee for topping up with a card from another country?", "ok thanks",
         "what's the exchange rate today", "My transfer has been pending for three days, " * 6,
         "cancel", "why was I charged twice for the same purchase at the shop yesterday"]


def test_a_text_gets_the_same_vector_alone_and_in_any_padded_batch(
        dynamic: MiniLMEmbedder) -> None:
    alone = np.stack([dynamic.embed([text])[0] for text in MIXED])
    np.testing.assert_allclose(dynamic.embed(MIXED), alone, atol=2e-6)  # one call, padded
    reordered = MIXED[::-1] + [f"filler text number {i}" for i in range(20)]
    np.testing.assert_allclose(dynamic.embed(reordered)[: len(MIXED)][::-1], alone, atol=2e-6)
    small = MiniLMEmbedder(dynamic=True, batch_size=4)  # chunks of 4: other companions
    np.testing.assert_allclose(small.embed(MIXED), alone, atol=2e-6)


def test_concurrent_callers_batched_together_get_their_vectors_alone(
        dynamic: MiniLMEmbedder) -> None:
    batching = BatchingEmbedder(dynamic, max_wait=0.05, max_batch=32)
    alone = {text: dynamic.embed([text])[0] for text in MIXED}
    results: dict[str, np.ndarray] = {}
    start = threading.Barrier(len(MIXED))

    def call(text: str) -> None:
        start.wait(timeout=60)
        results[text] = batching.embed([text])[0]

    threads = [threading.Thread(target=call, args=(text,)) for text in MIXED]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert batching.largest > 1  # some callers did share a model call
    for text in MIXED:
        np.testing.assert_allclose(results[text], alone[text], atol=2e-6)


def test_a_model_quantized_per_call_still_runs_each_text_alone() -> None:
    class PerCall(MiniLMEmbedder):  # what a tuned int8 model (FineTunedEmbedder) declares
        batch_invariant = False

    embedder, sizes = PerCall(), []
    run = embedder._run

    def counted(encodings: list) -> np.ndarray:
        sizes.append(len(encodings))
        return run(encodings)

    embedder._run = counted  # type: ignore[method-assign]
    embedder.embed(MIXED)
    assert sizes == [1] * len(MIXED)


def test_no_quantization_step_is_left_per_call(dynamic: MiniLMEmbedder) -> None:
    import onnx

    ops = [node.op_type for node in onnx.load(str(dynamic.run_path)).graph.node]
    assert "DynamicQuantizeLinear" not in ops
    assert ops.count("QuantizeLinear") == 24  # one per quantized product input of the 6 layers


def test_a_graph_it_does_not_know_is_refused_untouched() -> None:
    from onnx import TensorProto, helper

    step = helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="step")
    use = helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT)
    graph = helper.make_graph([step, use], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph)
    before = model.SerializeToString()
    with pytest.raises(ValueError, match="other than as the A input of MatMulInteger"):
        rowwise_activations(model)
    assert model.SerializeToString() == before


def test_it_stays_close_to_the_reference_vectors(dynamic: MiniLMEmbedder) -> None:
    # all-MiniLM-L6-v2 in fp32 (sentence-transformers): 0.8939 and 0.0747
    a, b, c = dynamic.embed(["How do I reset my password?",
                             "I forgot my password, how can I change it?",
                             "What is the capital of France?"])
    assert float(a @ b) == pytest.approx(0.8939, abs=0.02)
    assert float(a @ c) == pytest.approx(0.0747, abs=0.03)
    vectors = dynamic.embed(["one", "two words", "a longer text " * 50])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(dynamic.embed(["two words"])[0], vectors[1], atol=1e-4)


def test_the_derivative_is_made_once_and_remade_when_damaged(
        dynamic: MiniLMEmbedder, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISMCACHE_MODEL_CACHE", str(model_cache))
    made = dynamic.run_path
    assert made.parent == model_cache
    stamp = made.stat().st_mtime_ns
    assert MiniLMEmbedder(dynamic=True).run_path.stat().st_mtime_ns == stamp  # reused
    with made.open("r+b") as file:
        file.seek(1000)
        file.write(b"\0" * 16)
    again = MiniLMEmbedder(dynamic=True)  # the recorded sha256 no longer matches: re-made
    assert again.run_path.stat().st_mtime_ns != stamp
    np.testing.assert_allclose(again.embed(["hello"]), dynamic.embed(["hello"]), atol=1e-6)


def test_without_onnx_the_error_names_the_extra(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from prismcache.embedders import open_embedder\n"
            "from prismcache.errors import ConfigError\n"
            "try:\n    open_embedder('minilm:dynamic')\n"
            "except ConfigError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120,
                            env={"PRISMCACHE_MODEL_CACHE": str(tmp_path), "PATH": ""})
    assert "prismcache[fast]" in result.stdout
