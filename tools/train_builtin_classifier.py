"""Fit the built-in category classifier for the bundled embedder and ship its weights.

    python tools/train_builtin_classifier.py

Writes prismcache/data/classifier-{logistic,centroid}.npz, tagged with the embedder id and a
digest of prismcache/data/category_examples.jsonl: a cache opened with the built-in examples
and the bundled embedder loads them instead of embedding 420 examples at start-up; any other
embedder or edited examples are trained afresh at start-up. Re-run after editing the examples.
"""

from __future__ import annotations

from prismcache.classify import EmbeddingClassifier, examples_digest, load_examples
from prismcache.embedders import open_embedder


def main() -> None:
    embedder = open_embedder("minilm")
    pairs = load_examples("builtin")
    texts = [t for t, _ in pairs]
    vectors = embedder.embed(texts)  # the embedder batches large inputs itself
    for kind in ("logistic", "centroid"):
        model = EmbeddingClassifier.fit(vectors, [c for _, c in pairs], kind=kind)
        path = f"prismcache/data/classifier-{kind}.npz"
        model.save(path, embedder_id=embedder.id, digest=examples_digest(pairs))
        print(f"wrote {path} for {embedder.id}")


if __name__ == "__main__":
    main()
