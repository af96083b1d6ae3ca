"""A static embedding distilled from the bundled model: a pre-filter for the miss path.

Each vocabulary token of the bundled int8 MiniLM is run through the model alone
(``[CLS] token [SEP]``) and mean-pooled the way the model pools a sentence (Model2Vec's idea,
with the model prismcache already ships, so nothing is downloaded): :func:`token_vectors`.
The rows are centred (:func:`distil`; optionally PCA and SIF weights, which measured worse).
Then a ridge-regression map (:func:`fit_map`) takes mean-of-rows vectors of training texts to
the model's own vectors of the same texts, and the mapped rows are projected on the top
principal directions of those model vectors (128). A text's static vector is the mean of its
word pieces' rows, L2 normalised: a tokenizer call and a gather, about 0.05 ms instead of a
model run.

A static vector is not a substitute for the model's: its cosine tracks the model's loosely.
It only proves that nothing is near (the cache's ``prefilter``), with a bound chosen on
training traces so that almost no request the full decision would serve falls below it.

``tools/make_static_table.py`` makes the shipped table, ``data/static_minilm.npy`` (float16,
30,522 x 128, 7.8 MB; its sha256 is pinned here and in ``data/NOTICE``), from the bundled model
and the shared data's train splits; :meth:`StaticEmbedder.bundled` loads it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prismcache.embedders import _check_texts
from prismcache.embedders.base import embedder_id
from prismcache.errors import EmbeddingError

if TYPE_CHECKING:
    from prismcache.embedders.minilm import MiniLMEmbedder

__all__ = ["TABLE_SHA256", "StaticEmbedder", "distil", "fit_map", "token_vectors",
           "zipf_weights"]

#: sha256 of ``data/static_minilm.npy`` as ``tools/make_static_table.py`` writes it
TABLE_SHA256 = "b2edaedfd6588102f546fad12e1f8a05da609f7d8188a5aa7a8641b963905d97"
TABLE = Path(__file__).parent / "data" / "static_minilm.npy"

_BATCH = 512
#: WordPiece ids below this are [PAD], [unused*], [CLS]..., and single characters
_FIRST_WORD_ID = 1996
_MAX_TOKENS = 256


def token_vectors(model: MiniLMEmbedder) -> np.ndarray:
    """Every vocabulary token through ``model`` alone, mean-pooled over ``[CLS] t [SEP]``:
    float32 ``(vocab, 384)``, not normalised."""
    tokenizer, session = model._tokenizer, model._session
    vocab = tokenizer.get_vocab_size()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    out = np.zeros((vocab, model.dim), dtype=np.float32)
    for start in range(0, vocab, _BATCH):
        ids = np.arange(start, min(vocab, start + _BATCH))
        inputs = np.stack([np.full(len(ids), cls), ids, np.full(len(ids), sep)], axis=1)
        inputs = inputs.astype(np.int64)
        (hidden,) = session.run(["last_hidden_state"], {
            "input_ids": inputs, "attention_mask": np.ones_like(inputs),
            "token_type_ids": np.zeros_like(inputs)})
        out[ids] = hidden.mean(axis=1)
    return out


def zipf_weights(vocab: int, sif: float = 1e-3) -> np.ndarray:
    """SIF weights ``sif / (sif + p)`` with ``p`` a Zipf law over the word-piece ids from
    :data:`_FIRST_WORD_ID` on (rank = id - first + 1); ids before it weigh 1."""
    weights = np.ones(vocab, dtype=np.float32)
    ranks = np.arange(1, vocab - _FIRST_WORD_ID + 1, dtype=np.float64)
    prob = (1.0 / ranks) / np.sum(1.0 / ranks)
    weights[_FIRST_WORD_ID:] = sif / (sif + prob)
    return weights


def distil(rows: np.ndarray, *, dim: int, sif: float | None = 1e-3) -> np.ndarray:
    """The static table from :func:`token_vectors` output: centred, PCA to ``dim`` components
    (``dim`` >= the input's keeps all, centred only), each row scaled by its SIF weight
    (``sif=None``: unweighted). float32 ``(vocab, dim)``."""
    centred = rows - rows.mean(axis=0, keepdims=True)
    if dim < rows.shape[1]:
        _, _, components = np.linalg.svd(centred[_FIRST_WORD_ID:], full_matrices=False)
        centred = centred @ components[:dim].T
    table = centred.astype(np.float32)
    if sif is not None:
        table *= zipf_weights(len(table), sif)[:, None]
    return np.ascontiguousarray(table, dtype=np.float32)


def fit_map(table: np.ndarray, tokenizer: Any, texts: Sequence[str], targets: np.ndarray, *,
            dim: int = 128, ridge: float = 1.0) -> np.ndarray:
    """The shipped recipe's last step: ``table``'s rows mapped so that the mean of a text's
    rows lands near ``targets`` (the model's unit vectors of ``texts``), by ridge regression
    from the unit mean-of-rows vectors, then projected on the top ``dim`` principal directions
    of ``targets`` (uncentred: cosine is what is kept). float32 ``(vocab, dim)``."""
    inputs = StaticEmbedder(table, tokenizer).embed(texts).astype(np.float64)
    gram = inputs.T @ inputs + ridge * np.eye(inputs.shape[1])
    mapping = np.linalg.solve(gram, inputs.T @ targets.astype(np.float64))
    _, _, directions = np.linalg.svd(targets.astype(np.float64), full_matrices=False)
    out = table.astype(np.float64) @ mapping @ directions[:dim].T
    return np.ascontiguousarray(out, dtype=np.float32)


class StaticEmbedder:
    """Embed a text as the mean of its word pieces' rows in a static ``table``.

    Args:
        table: float32 ``(vocab, dim)``, rows already weighted (see :func:`distil`).
        tokenizer: a ``tokenizers.Tokenizer`` for the table's vocabulary.
        name: recorded in :attr:`id`.

    A text with no word pieces gets the first unit vector. Thread-safe: it only reads.
    """

    def __init__(self, table: np.ndarray, tokenizer: Any, *, name: str = "minilm-static") -> None:
        if table.ndim != 2 or table.shape[0] != tokenizer.get_vocab_size():
            raise ValueError(f"table of shape {table.shape} does not match the vocabulary "
                             f"of {tokenizer.get_vocab_size()} tokens")
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.dim = int(table.shape[1])
        self.name = name
        self._tokenizer = tokenizer

    @classmethod
    def bundled(cls, tokenizer: Any, path: Path = TABLE) -> StaticEmbedder:
        """The shipped table (``path``), checked against :data:`TABLE_SHA256`; raises
        :class:`EmbeddingError` when it is missing or not that file. The checked table is
        read once per process and shared (read-only) by every cache that opens it."""
        return cls(_checked_table(path), tokenizer, name="minilm-static-v1")

    @property
    def id(self) -> str:
        """``"name:dim"``."""
        return embedder_id(self.name, self.dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 unit rows ``(len(texts), dim)``: each text's word pieces (at most 256, the
        model's window) averaged."""
        batch = _check_texts(texts)
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        encodings = (self._tokenizer.encode_batch(batch, add_special_tokens=False)
                     if len(batch) > 1 else
                     [self._tokenizer.encode(batch[0], add_special_tokens=False)]
                     if batch else [])
        for row, encoding in enumerate(encodings):
            ids = encoding.ids[:_MAX_TOKENS]
            if ids:
                out[row] = self.table[ids].sum(axis=0)
        norms = np.linalg.norm(out, axis=1)
        empty = norms == 0
        out[empty, 0], norms[empty] = 1.0, 1.0
        out /= norms[:, None]
        return out

    def __repr__(self) -> str:
        return f"StaticEmbedder(name={self.name!r}, dim={self.dim})"


_TABLES: dict[Path, np.ndarray] = {}  # checked tables by path, read-only, shared
_TABLES_LOCK = threading.Lock()


def _checked_table(path: Path) -> np.ndarray:
    """The float32 rows of the table at ``path`` once its sha256 is :data:`TABLE_SHA256`
    (read once per process); raises :class:`EmbeddingError` otherwise."""
    with _TABLES_LOCK:
        table = _TABLES.get(path)
        if table is not None:
            return table
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EmbeddingError(f"cannot read the static table {path}: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != TABLE_SHA256:
            raise EmbeddingError(f"static table {path} has sha256 {digest}, expected "
                                 f"{TABLE_SHA256}: reinstall prismcache")
        table = np.load(path, allow_pickle=False).astype(np.float32)
        table.setflags(write=False)
        _TABLES[path] = table
        return table
