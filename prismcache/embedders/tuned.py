"""``tuned:DIR``: what ``prismcache tune`` wrote to ``DIR``, served with onnxruntime and numpy.

Either the bundled model plus a linear adapter (the default output), or, when ``DIR`` holds a
``model.onnx`` (``prismcache tune --full``), a whole fine-tuned all-MiniLM-L6-v2
(:class:`FineTunedEmbedder`). For the adapter, ``DIR`` holds ``adapter.npz`` (a 384x384
float32 ``matrix``, the base model's ``base`` id and a ``sha256`` of the matrix) and
``manifest.json``. A text is embedded by the frozen bundled
model, multiplied by the matrix and normalised again: one matmul per query (measured in
``bench/results/tune.txt``). The adapter is refused unless it was trained over the same base
model the spec opens.

The embedder's name is ``<base name>+adapter-<first 12 hex of the matrix's sha256>``, so
vectors stored by the base model (or by another adapter) are refused by the cache's ``name:dim``
check (:class:`~prismcache.errors.EmbedderMismatch`) rather than compared with these. A
fine-tuned model is named ``all-MiniLM-L6-v2-tuned-<int8|float32>-<first 12 hex of the file's
sha256>`` for the same reason.

>>> spec_dir("tuned:/srv/prism/tuned")
PosixPath('/srv/prism/tuned')
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np

from prismcache.embedders import _check_texts, _unit_rows
from prismcache.embedders.base import Embedder, embedder_id
from prismcache.embedders.minilm import MiniLMEmbedder, bundled_tokenizer, file_sha256, onnx_session
from prismcache.errors import ConfigError

__all__ = ["ADAPTER_FILE", "MANIFEST_FILE", "MODEL_FILE", "Adapter", "FineTunedEmbedder",
           "TunedEmbedder", "spec_dir"]

ADAPTER_FILE = "adapter.npz"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"


def spec_dir(spec: str) -> Path:
    """The directory of a ``"tuned:DIR"`` spec; :class:`ConfigError` when it names none."""
    scheme, _, path = spec.partition(":")
    if scheme != "tuned" or not path.strip():
        raise ConfigError(f"embedder spec {spec!r}: expected 'tuned:DIR' (a `prismcache tune` "
                          "output directory)")
    return Path(path.strip())


class Adapter:
    """A linear map applied to unit vectors of one base embedder, outputs re-normalised.

    Args:
        matrix: ``(dim, dim)`` float32; a row vector ``x`` maps to ``x @ matrix``.
        base: the id (``name:dim``) of the embedder whose vectors it maps.
    """

    def __init__(self, matrix: np.ndarray, base: str) -> None:
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"an adapter matrix is square, got shape {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise ValueError("the adapter matrix has NaN or infinite values")
        self.matrix, self.base = matrix, base
        self.sha256 = hashlib.sha256(matrix.tobytes()).hexdigest()

    @property
    def dim(self) -> int:
        """Dimension of the vectors it maps (and returns)."""
        return int(self.matrix.shape[0])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors @ matrix``, rows re-normalised (float32, C-contiguous)."""
        out = np.asarray(vectors, dtype=np.float32) @ self.matrix
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(out)

    def save(self, path: str | Path) -> None:
        """Write the adapter as an ``.npz`` (no pickles)."""
        np.savez(path, matrix=self.matrix, base=np.array(self.base),
                 sha256=np.array(self.sha256))

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read an adapter written by :meth:`save`; :class:`ConfigError` when the file is
        missing, unreadable or its matrix does not match its recorded sha256."""
        try:
            with np.load(path, allow_pickle=False) as data:
                matrix, base, recorded = data["matrix"], str(data["base"]), str(data["sha256"])
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read the adapter {path}: {exc}") from None
        try:
            adapter = cls(matrix, base)
        except ValueError as exc:
            raise ConfigError(f"adapter {path}: {exc}") from None
        if adapter.sha256 != recorded:
            raise ConfigError(f"adapter {path}: its matrix does not match its recorded sha256 "
                              "(a damaged or edited file); run `prismcache tune` again")
        return adapter


class TunedEmbedder:
    """An embedder (by default the bundled model) followed by an :class:`Adapter`.

    Raises :class:`ConfigError` when the adapter was trained over another model than
    ``base``. :meth:`embed` is as thread-safe as ``base.embed``.
    """

    def __init__(self, base: Embedder, adapter: Adapter) -> None:
        if adapter.base != base.id:
            raise ConfigError(f"this adapter maps vectors of {adapter.base}, not of {base.id}")
        self.base, self.adapter = base, adapter
        self.name = f"{base.name}+adapter-{adapter.sha256[:12]}"
        self.dim = adapter.dim

    @classmethod
    def from_spec(cls, spec: str) -> Embedder:
        """``"tuned:DIR"``: a :class:`FineTunedEmbedder` when ``DIR`` holds ``model.onnx``,
        else the bundled model and ``DIR/adapter.npz``."""
        directory = spec_dir(spec)
        if (directory / MODEL_FILE).exists():
            return FineTunedEmbedder.from_dir(directory)
        return cls(MiniLMEmbedder(), Adapter.load(directory / ADAPTER_FILE))

    @property
    def id(self) -> str:
        """``"<base name>+adapter-<hash>:<dim>"``."""
        return embedder_id(self.name, self.dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The base model's vectors of ``texts`` mapped by the adapter: unit float32 rows."""
        batch = _check_texts(texts)
        return _unit_rows(self.adapter.apply(self.base.embed(batch)), len(batch), self.dim,
                          repr(self))

    def __repr__(self) -> str:
        return f"TunedEmbedder({self.base!r}, adapter={self.adapter.sha256[:12]})"


class FineTunedEmbedder(MiniLMEmbedder):
    """A whole all-MiniLM-L6-v2 fine-tuned by ``prismcache tune --full``, run exactly like the
    bundled model (same tokenizer and 256-token window, its ``last_hidden_state`` mean-pooled
    over the mask and L2-normalised, batches padded to their longest text; an int8 model runs
    one text per call, its activations being quantized once per call), with onnxruntime only.

    Args:
        model: the ONNX file.
        sha256: what the file must hash to; :class:`ConfigError` when it does not.
        precision: ``"int8"`` or ``"float32"`` (part of the name).

    :meth:`from_dir` opens ``DIR/model.onnx`` with the record of ``DIR/manifest.json``.
    """

    def __init__(self, model: str | Path, *, sha256: str, precision: str, threads: int = 1,
                 batch_size: int = 64) -> None:
        if threads < 1 or batch_size < 1:
            raise ValueError("threads and batch_size must be at least 1")
        if precision not in ("int8", "float32"):
            raise ValueError(f"precision is int8 or float32, got {precision!r}")
        self.model_path = self.run_path = Path(model)
        try:
            digest = file_sha256(self.model_path)
        except OSError as exc:
            raise ConfigError(f"cannot read the tuned model {self.model_path}: {exc}") from None
        if digest != sha256:
            raise ConfigError(f"tuned model {self.model_path} does not match the sha256 in its "
                              "manifest (a damaged or edited file); run `prismcache tune "
                              "--full` again")
        self.precision = precision
        # int8 activations are quantized with one scale per call (quantize_dynamic as is):
        # such a model runs each text alone, so a vector never depends on its companions
        self.threads, self.batch_size, self.dynamic = threads, batch_size, precision == "int8"
        self.batch_invariant = not self.dynamic
        self.name = f"all-MiniLM-L6-v2-tuned-{precision}-{digest[:12]}"
        self._session = onnx_session(self.model_path, threads)
        self._tokenizer = bundled_tokenizer()

    @classmethod
    def from_dir(cls, directory: str | Path) -> Self:
        """``DIR/model.onnx`` checked against the ``"model"`` entry (``sha256``,
        ``precision``) of ``DIR/manifest.json``; :class:`ConfigError` when either is missing
        or they do not match."""
        directory = Path(directory)
        try:
            manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
            record = manifest["model"]
            sha256, precision = str(record["sha256"]), str(record["precision"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{directory / MODEL_FILE} comes without a usable "
                              f"{MANIFEST_FILE} (its 'model' entry: {exc!r}); run `prismcache "
                              "tune --full` again") from None
        try:
            return cls(directory / MODEL_FILE, sha256=sha256, precision=precision)
        except ValueError as exc:
            raise ConfigError(f"{directory / MANIFEST_FILE}: {exc}") from None

    def __repr__(self) -> str:
        return f"FineTunedEmbedder({str(self.model_path)!r}, {self.precision})"
