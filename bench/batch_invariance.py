"""Does a text's vector depend on the texts embedded with it? Per-call vs per-row int8 MiniLM.

    .venv/bin/python bench/batch_invariance.py > bench/results/batch_invariance.txt

Every variant embeds each of 288 texts alone (256 Banking77 / CLINC150 test queries, 8-30
tokens, and 32 concatenations of four of them, so batches mix lengths and pad), then all of
them again shuffled into batches of 4, 16 and 32 texts per model call; for each batch size it
prints the min / median cosine and the largest element difference between a text's batched and
alone vectors, and the cosine of each alone vector to the default model's (how close the
variant stays to the shipped vectors). Variants, each called with whole batches:

- ``minilm`` (the default, float32 products): the control;
- the per-call int8 derivative (``quantize_dynamic`` as is: ``all-MiniLM-L6-v2-int8-dynamic``,
  which therefore ran every text alone), made here into ``bench/out/``;
- ``minilm:dynamic`` as derived now, activations quantized per row
  (``prismcache/embedders/rowwise.py``).
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
from embedder_paths import per_call_model, real_queries

from prismcache.embedders.minilm import MiniLMEmbedder


def main() -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"bench/batch_invariance.py  {time.strftime('%Y-%m-%d %H:%M')}  load average {load}")
    rng = random.Random(3)
    texts = real_queries(256)
    texts += [" ".join(rng.sample(texts, 4)) for _ in range(32)]
    default = MiniLMEmbedder()
    variants = {"minilm (default)": default, "per-call int8 (old minilm:dynamic)": per_call_model(),
                "per-row int8 (minilm:dynamic now)": MiniLMEmbedder(dynamic=True)}
    reference = np.stack([default.embed([text])[0] for text in texts])
    print(f"{len(texts)} texts, {min(len(t.split()) for t in texts)}-"
          f"{max(len(t.split()) for t in texts)} words; cosine of batched to alone vectors")
    for name, embedder in variants.items():
        alone = np.stack([embedder.embed([text])[0] for text in texts])
        for size in (4, 16, 32):
            order = list(range(len(texts)))
            rng.shuffle(order)
            batched = np.empty_like(alone)
            for start in range(0, len(order), size):
                rows = order[start:start + size]
                batched[rows] = embedder.embed([texts[row] for row in rows])
            cosine = (batched * alone).sum(axis=1)
            print(f"{name:34s} batch {size:2d}: min {cosine.min():.7f}  median "
                  f"{np.median(cosine):.7f}  max |difference| {np.abs(batched - alone).max():.2e}")
        to_default = (alone * reference).sum(axis=1)
        print(f"{name:34s} alone vs the default alone: min {to_default.min():.4f}  median "
              f"{np.median(to_default):.4f}", flush=True)


if __name__ == "__main__":
    main()
