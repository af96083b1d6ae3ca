"""``prismcache tune PAIRS.jsonl [PAIRS...] --out DIR``: learn from the operator's own pairs.

1. Read labelled pairs (the exchange format of ``../shared/data/README.md``). Pairs whose query
   or candidate is a ``messages`` list are skipped and counted (an adapter maps one text's
   vector; conversations are matched by their context first).
2. Hold a share apart (``--held-apart``, default 25%) by a hash of each paraphrase group (texts
   joined by ``same: true`` pairs), so no text is on both sides; a ``same: false`` pair whose
   texts fall on different sides is dropped (counted in the manifest).
3. Embed every text once with the frozen bundled model (batches, a progress bar on stderr);
   with ``--full``, only the held-apart texts (for the base model's metrics).
4. Train the adapter (:mod:`prismcache.tune.adapter`), or with ``--full`` fine-tune the whole
   embedder and export it to ONNX (:mod:`prismcache.tune.full`, extra ``[tune]``), and refit
   the built-in verifier on the tuned cosines (:mod:`prismcache.tune.verifier`), all on the
   training side only.
5. Measure both on the held-apart side against the base model and the shipped verifier (ROC
   AUC, recall at 99% precision), and write ``DIR``: ``adapter.npz`` (or ``model.onnx``),
   ``verifier.npz`` and
   ``verifier.json``, ``manifest.json``, ``config.yaml``.

Pair scores are not cache behaviour (``../shared/DESIGN.md``): replay a trace of your traffic
with the snippet before serving it (``prismcache replay TRACE --config DIR/config.yaml``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import numpy as np

from prismcache.embedders import Embedder, open_embedder
from prismcache.embedders.tuned import ADAPTER_FILE, MODEL_FILE, Adapter, TunedEmbedder
from prismcache.errors import ConfigError
from prismcache.evaluation.metrics import recall_at_precision, roc_auc
from prismcache.evaluation.records import read_pairs
from prismcache.evaluation.vectors import EmbeddingTable
from prismcache.request import normalise
from prismcache.tune.adapter import AdapterSettings, groups_of, train_adapter
from prismcache.tune.full import FullSettings, fine_tune, require_torch
from prismcache.tune.progress import Progress, duration
from prismcache.tune.verifier import features, probabilities, refit
from prismcache.verifiers.builtin import load_model

__all__ = ["VERIFIER_FILE", "TextPair", "config_snippet", "read_text_pairs", "register",
           "split_pairs", "tune"]

VERIFIER_FILE = "verifier.npz"
_EMBED_CHUNK = 512


class TextPair(NamedTuple):
    """A labelled pair of two strings."""

    query: str
    candidate: str
    same: bool


def read_text_pairs(paths: Sequence[str | Path]) -> tuple[list[TextPair], int, str]:
    """The string pairs of the JSONL ``paths``, how many ``messages`` pairs were skipped, and
    a sha256 of the pairs read (canonical JSON, in order). Raises ``ValueError`` naming the
    line of a malformed pair."""
    pairs, skipped, digest = [], 0, hashlib.sha256()
    for path in paths:
        for pair in read_pairs(path):
            digest.update((json.dumps(pair.to_json(), sort_keys=True, ensure_ascii=False)
                           + "\n").encode())
            if isinstance(pair.query, str) and isinstance(pair.candidate, str):
                pairs.append(TextPair(pair.query, pair.candidate, pair.same))
            else:
                skipped += 1
    return pairs, skipped, digest.hexdigest()


def _side(text: str, held_apart: float) -> bool:
    digest = hashlib.blake2b(normalise(text).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32 < held_apart


def split_pairs(pairs: Sequence[TextPair],
                held_apart: float) -> tuple[list[TextPair], list[TextPair], int]:
    """(training pairs, held-apart pairs, pairs dropped because their texts fell on different
    sides). A paraphrase group goes to one side by a hash of its first text (in sorted order),
    so the split depends only on the pairs, and no text is on both sides."""
    texts = sorted({t for p in pairs for t in (p.query, p.candidate)})
    row = {t: i for i, t in enumerate(texts)}
    group = groups_of(len(texts), [(row[p.query], row[p.candidate]) for p in pairs if p.same])
    held = np.array([_side(texts[g], held_apart) for g in group])
    train, test, dropped = [], [], 0
    for p in pairs:
        a, b = held[row[p.query]], held[row[p.candidate]]
        if a != b:
            dropped += 1
        else:
            (test if a else train).append(p)
    return train, test, dropped


def _embed(embedder: Embedder, texts: list[str], cache_dir: str | None,
           stream: TextIO) -> EmbeddingTable:
    table = EmbeddingTable(embedder, cache_dir)
    bar = Progress(f"embedding {len(texts)} texts", len(texts), stream=stream, every=0.5)
    for start in range(0, len(texts), _EMBED_CHUNK):
        table.ensure(texts[start:start + _EMBED_CHUNK])
        bar.update(min(start + _EMBED_CHUNK, len(texts)))
    bar.close()
    return table


def _scores(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    return {"roc_auc": roc_auc(scores, labels),
            "recall_at_99": recall_at_precision(scores, labels, 0.99)}


def tune(paths: Sequence[str | Path], out: str | Path, *, seed: int = 0,
         held_apart: float = 0.25, settings: AdapterSettings = AdapterSettings(),
         embedder: Embedder | None = None, vector_cache: str | None = None,
         stream: TextIO | None = None, full: FullSettings | None = None) -> dict[str, Any]:
    """Train an adapter (or, with ``full``, fine-tune the whole embedder) and a verifier from
    the pair files ``paths`` into directory ``out`` (created; existing files of the same names
    are replaced) and return the manifest.

    ``embedder`` is the frozen base model (default: the bundled one, the only one
    ``tuned:DIR`` serves an adapter with). Progress goes to ``stream`` (default stderr).
    Raises :class:`ConfigError` when the files hold no usable pairs, or too few of either label
    on the training side, or ``full`` is given without the ``[tune]`` extra; ``ValueError``
    for a malformed file or ``held_apart``.
    """
    if not 0.0 < held_apart < 1.0:
        raise ValueError(f"held_apart must be between 0 and 1, got {held_apart!r}")
    if full is not None:
        require_torch()  # before reading anything: the extra is missing, say so at once
    stream = sys.stderr if stream is None else stream
    started = time.perf_counter()
    pairs, skipped, data_sha256 = read_text_pairs(paths)
    if skipped:
        stream.write(f"skipped {skipped} pairs given as messages lists: tune reads pairs of "
                     "strings only\n")
    train, test, dropped = split_pairs(pairs, held_apart)
    if sum(p.same for p in train) < 2 or sum(not p.same for p in train) < 2:
        raise ConfigError(f"tune needs at least two pairs of each label on the training side; "
                          f"got {len(pairs)} usable pairs, {len(train)} for training")
    base = open_embedder("minilm") if embedder is None else embedder
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    # `tuned:DIR` serves model.onnx when there is one: drop what an earlier run of the other
    # kind left, so DIR never serves a model this run did not make
    (target / (ADAPTER_FILE if full is not None else MODEL_FILE)).unlink(missing_ok=True)
    # the base model embeds every text for the adapter, only the held-apart ones for --full
    texts = sorted({t for p in (pairs if full is None else test)
                    for t in (p.query, p.candidate)})
    table = _embed(base, texts, vector_cache, stream)
    seconds = {"embed": time.perf_counter() - started}

    train_texts = sorted({t for p in train for t in (p.query, p.candidate)})
    row = {t: i for i, t in enumerate(train_texts)}
    index = [(row[p.query], row[p.candidate]) for p in train]
    positives = [i for i, p in zip(index, train, strict=True) if p.same]
    negatives = [i for i, p in zip(index, train, strict=True) if not p.same]
    if full is None:
        adapter = _train_adapter(base, table.matrix(train_texts), positives, negatives,
                                 settings, seed, stream)
        adapter.save(target / ADAPTER_FILE)
        tuned = TunedEmbedder(base, adapter)

        def tuned_vectors(texts: list[str]) -> np.ndarray:
            return adapter.apply(table.matrix(texts))

        entry = {"adapter_sha256": adapter.sha256, "adapter": dataclasses.asdict(settings)}
        seconds["adapter"] = time.perf_counter() - started - seconds["embed"]
    else:
        tuned, record = fine_tune(target, train_texts, positives, negatives,
                                  [(p.query, p.candidate, p.same) for p in test],
                                  settings=full, seed=seed, stream=stream)
        tuned_table = _embed(tuned, sorted({t for p in pairs for t in (p.query, p.candidate)}),
                             None, stream)
        tuned_vectors = tuned_table.matrix  # type: ignore[assignment]
        entry = {"model": record, "fine_tune": dataclasses.asdict(full)}
        seconds["fine_tune"] = time.perf_counter() - started - seconds["embed"]
    version = f"tuned-{tuned.name.rsplit('-', 1)[-1]}"

    def cosines(subset: list[TextPair], adapted: bool) -> np.ndarray:
        vectors = tuned_vectors if adapted else table.matrix
        q, c = vectors([p.query for p in subset]), vectors([p.candidate for p in subset])
        return (q * c).sum(axis=1)

    stream.write("refitting the verifier on the tuned cosines ...\n")
    shipped = load_model(None)
    verifier_started = time.perf_counter()
    model, fit = refit([(p.query, p.candidate) for p in train], cosines(train, True),
                       np.array([p.same for p in train]), version=version, base=shipped)
    seconds["verifier"] = time.perf_counter() - verifier_started

    metrics: dict[str, Any] = {}
    if test:
        y = np.array([p.same for p in test])
        text_pairs = [(p.query, p.candidate) for p in test]
        base_cos, tuned_cos = cosines(test, False), cosines(test, True)
        metrics = {
            "pairs": len(test), "same": int(y.sum()),
            "base_cosine": _scores(base_cos, y), "tuned_cosine": _scores(tuned_cos, y),
            "base_verifier": _scores(probabilities(shipped, features(text_pairs, base_cos,
                                                                      shipped)), y),
            "tuned_verifier": _scores(probabilities(model, features(text_pairs, tuned_cos,
                                                                     model)), y)}
    np.savez_compressed(target / VERIFIER_FILE, **model)
    seconds["total"] = time.perf_counter() - started
    manifest = {
        "format": "prismcache-tune-1",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seed": seed, "base_model": base.id, "embedder": tuned.id, **entry,
        "verifier": model["version"].item(),
        "data": {"files": [str(p) for p in paths], "sha256": data_sha256,
                 "pairs": len(pairs), "skipped_messages": skipped,
                 "texts": len({t for p in pairs for t in (p.query, p.candidate)}),
                 "train_pairs": len(train), "held_apart_pairs": len(test),
                 "dropped_across_split": dropped, "held_apart_share": held_apart},
        "verifier_fit": fit, "held_apart_metrics": metrics, "seconds": seconds}
    (target / "verifier.json").write_text(json.dumps(fit, indent=1) + "\n", encoding="utf-8")
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n",
                                          encoding="utf-8")
    (target / "config.yaml").write_text(config_snippet(target), encoding="utf-8")
    return manifest


def _train_adapter(base: Embedder, vectors: np.ndarray, positives: list[tuple[int, int]],
                   negatives: list[tuple[int, int]], settings: AdapterSettings, seed: int,
                   stream: TextIO) -> Adapter:
    bar = Progress("training the adapter", 1, stream=stream, every=0.5)

    def shown(step: int, steps: int, loss: float) -> None:
        bar.total = steps
        bar.update(step, f", loss {loss:.3f}")

    matrix = train_adapter(vectors, positives, negatives, settings=settings, seed=seed,
                           progress=shown)
    bar.close()
    return Adapter(matrix, base.id)


def config_snippet(out: Path) -> str:
    """The YAML lines that serve with a tune output directory ``out``."""
    where = out.resolve()
    return (f"# written by `prismcache tune`: merge into your prismcache config\n"
            f"embedder: tuned:{where}\n"
            f"defaults:\n"
            f"  verifier: builtin:{where / VERIFIER_FILE}\n")


def register(subparsers: Any) -> None:
    """``prismcache tune PAIRS... --out DIR``."""
    parser = subparsers.add_parser("tune", help="train an adapter and a verifier on your pairs")
    parser.add_argument("pairs", nargs="+", metavar="PAIRS.jsonl", help="labelled pairs")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held-apart", type=float, default=0.25, metavar="SHARE",
                        help="share of paraphrase groups held apart for the metrics")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs (default {AdapterSettings().epochs} for the "
                        f"adapter, {FullSettings().epochs} with --full)")
    parser.add_argument("--vector-cache", metavar="DIR",
                        help="keep embeddings in DIR between runs")
    parser.add_argument("--full", action="store_true",
                        help="fine-tune the whole embedder with torch and export it to ONNX "
                        "(pip install 'prismcache[tune]')")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    epochs = {} if args.epochs is None else {"epochs": args.epochs}
    try:
        manifest = tune(args.pairs, args.out, seed=args.seed, held_apart=args.held_apart,
                        settings=AdapterSettings(**epochs), vector_cache=args.vector_cache,
                        full=FullSettings(**epochs) if args.full else None)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    data, metrics = manifest["data"], manifest["held_apart_metrics"]
    print(f"{data['pairs']} pairs: {data['train_pairs']} trained on, "
          f"{data['held_apart_pairs']} held apart, {data['dropped_across_split']} dropped "
          f"across the split ({duration(manifest['seconds']['total'])})")
    if metrics:
        print(f"{'held apart':16s} {'ROC AUC':>8s} {'recall@99%':>11s}")
        for name in ("base_cosine", "tuned_cosine", "base_verifier", "tuned_verifier"):
            m = metrics[name]
            auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
            print(f"{name:16s} {auc:>8s} {m['recall_at_99']:11.3f}")
    if "model" in manifest:
        model = manifest["model"]
        aucs = ", ".join(f"{p} {model[f'roc_auc_{p}']:.4f}" for p in ("float32", "int8")
                         if model[f"roc_auc_{p}"] is not None)
        print(f"fine-tuned model: {model['precision']}, {model['bytes'] / 1e6:.1f} MB"
              + (f" (held-apart cosine ROC AUC {aucs})" if aucs else ""))
    print(f"wrote {args.out}; serve with {Path(args.out) / 'config.yaml'}")
    return 0
