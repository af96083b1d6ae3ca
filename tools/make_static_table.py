"""Make ``prismcache/embedders/data/static_minilm.npy``, the pre-filter's static table.

    .venv/bin/python tools/make_static_table.py [--data ../shared/data]

1. every vocabulary token through the bundled int8 MiniLM alone, mean-pooled, centred
   (:func:`~prismcache.embedders.static.token_vectors`, :func:`~.distil`; ~50 s on 2 cores);
2. a ridge map from mean-of-rows vectors to the model's vectors, fit on the *train* pools of
   ``prismcache data trace`` (utterances that also appear in the test pools are left out),
   then projected on the top 128 principal directions (:func:`~.fit_map`);
3. saved as float16; prints its sha256 (pin it in ``static.py`` and ``data/NOTICE``).

The model's vectors of the training texts are cached under ``--vector-cache`` (the
evaluation's cache). onnxruntime's int8 kernels differ between CPUs, so another machine may
make a table whose sha256 differs in the last bits; the shipped one is pinned.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

from prismcache.embedders.minilm import MiniLMEmbedder
from prismcache.embedders.static import TABLE, distil, fit_map, token_vectors
from prismcache.evaluation.traces import build_pools
from prismcache.evaluation.vectors import EmbeddingTable

ROOT = Path(__file__).resolve().parents[1]


def training_texts(root: Path) -> list[str]:
    """The train pools' utterances, minus any that is also in the test pools."""
    test = {u for pool in build_pools(root, split="test").values()
            for group in pool.utterances for u in group}
    return sorted({u for pool in build_pools(root, split="train").values()
                   for group in pool.utterances for u in group} - test)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--vector-cache", default=str(ROOT / "bench" / "out" / "emb"))
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--out", default=str(TABLE))
    args = parser.parse_args()
    model = MiniLMEmbedder()
    started = time.perf_counter()
    rows = distil(token_vectors(model), dim=model.dim, sif=None)
    print(f"token vectors in {time.perf_counter() - started:.0f} s")
    texts = training_texts(Path(args.data))
    vectors = EmbeddingTable(model, args.vector_cache)
    vectors.ensure(texts, progress=True)
    table = fit_map(rows, model._tokenizer, texts, vectors.matrix(texts), dim=args.dim)
    np.save(args.out, table.astype(np.float16))
    digest = hashlib.sha256(Path(args.out).read_bytes()).hexdigest()
    print(f"{args.out}: {table.shape}, fit on {len(texts)} texts, "
          f"{Path(args.out).stat().st_size:,} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
