"""The dynamically quantized derivative of the bundled model (``minilm:dynamic``): made once
into the model cache from the pinned file, re-made when the cached file is damaged, close to
the reference vectors, and never mistaken for the default model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prismcache.embedders import open_embedder
from prismcache.embedders.minilm import MiniLMEmbedder

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
    assert dynamic.id == "all-MiniLM-L6-v2-int8-dynamic:384"
    assert dynamic.id != MiniLMEmbedder.from_spec("minilm").id
    assert "dynamic=True" in repr(dynamic)


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
