"""``cross-encoder:PATH``: a cross-encoder the operator provides reads both texts at once.

A cross-encoder is the strongest match model there is for this job (it attends across the two
texts), and the slowest: one model call per grey-zone candidate. prismcache ships none; point
the spec at one you have:

- a directory holding ``model.onnx`` and ``tokenizer.json`` (an exported Hugging Face
  sequence-classification model): run by onnxruntime, already a dependency;
- anything else is handed to ``sentence_transformers.CrossEncoder`` with
  ``local_files_only=True`` (``pip install 'prismcache[st]'``): a local model directory.

The model's output is turned into a probability by a sigmoid (one logit) or a softmax
(two logits: index 1 is "same"). Nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from prismcache.errors import ConfigError, VerifierError

if TYPE_CHECKING:
    from prismcache.decision import Candidate, Query

__all__ = ["CrossEncoderVerifier"]

_MAX_TOKENS = 512


class CrossEncoderVerifier:
    """A verifier backed by a local cross-encoder (ONNX directory or sentence-transformers).

    Raises :class:`~prismcache.errors.ConfigError` when the path holds no usable model.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"cross-encoder:{self.path.name}"
        if (self.path / "model.onnx").is_file() and (self.path / "tokenizer.json").is_file():
            self._run = _onnx_scorer(self.path)
        elif self.path.exists():
            self._run = _st_scorer(self.path)
        else:
            raise ConfigError(f"verifier cross-encoder:{path}: no such file or directory")

    @classmethod
    def from_spec(cls, spec: str) -> Self:
        """``"cross-encoder:PATH"``; raises :class:`ConfigError` without a path."""
        _, _, path = spec.partition(":")
        if not path:
            raise ConfigError("verifier spec 'cross-encoder:PATH' needs a model path")
        return cls(path)

    def probabilities(self, query: Query, candidates: Sequence[Candidate]) -> np.ndarray:
        """Sigmoid/softmax of the cross-encoder's logits for (query, candidate) pairs."""
        if not candidates:
            return np.zeros(0)
        try:
            logits = np.asarray(self._run([(query.text, c.text) for c in candidates]),
                                dtype=np.float64)
        except Exception as exc:  # onnxruntime and torch raise plain Exceptions
            raise VerifierError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        return _probability(logits)

    def __repr__(self) -> str:
        return f"CrossEncoderVerifier({str(self.path)!r})"


def _probability(logits: np.ndarray) -> np.ndarray:
    if logits.ndim == 2 and logits.shape[1] == 2:
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp[:, 1] / exp.sum(axis=1)
    flat = logits.reshape(len(logits), -1)[:, 0]
    return 1.0 / (1.0 + np.exp(-flat))


def _onnx_scorer(path: Path) -> Any:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=_MAX_TOKENS)
    try:
        session = ort.InferenceSession(str(path / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors derive from Exception only
        raise ConfigError(f"verifier cross-encoder:{path}: cannot load model.onnx: {exc}") from exc
    names = {i.name for i in session.get_inputs()}

    def run(pairs: list[tuple[str, str]]) -> np.ndarray:
        encodings = tokenizer.encode_batch(pairs)
        width = max(len(e.ids) for e in encodings)
        feeds = {"input_ids": np.zeros((len(pairs), width), dtype=np.int64)}
        feeds["attention_mask"] = np.zeros_like(feeds["input_ids"])
        feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        for row, e in enumerate(encodings):
            feeds["input_ids"][row, : len(e.ids)] = e.ids
            feeds["attention_mask"][row, : len(e.ids)] = 1
            feeds["token_type_ids"][row, : len(e.ids)] = e.type_ids
        (logits,) = session.run(None, {k: v for k, v in feeds.items() if k in names})[:1]
        return logits

    return run


def _st_scorer(path: Path) -> Any:
    try:
        from sentence_transformers import CrossEncoder
    except ImportError:
        raise ConfigError(
            f"verifier cross-encoder:{path} is not an ONNX directory (model.onnx + "
            "tokenizer.json), and sentence-transformers is not installed: "
            "pip install 'prismcache[st]'") from None
    try:
        model = CrossEncoder(str(path), local_files_only=True)
    except Exception as exc:  # sentence-transformers raises many types for a bad path
        raise ConfigError(f"verifier cross-encoder:{path}: cannot load: {exc}") from exc

    import torch

    def run(pairs: list[tuple[str, str]]) -> np.ndarray:  # raw logits: we apply the link
        return np.asarray(model.predict(pairs, activation_fn=torch.nn.Identity(),
                                        show_progress_bar=False))

    return run
