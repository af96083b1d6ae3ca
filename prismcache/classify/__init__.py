"""Request -> category: explicit metadata first, then rules, then the embedding classifier.

:class:`CategoryRouter` is the one entry point the cache uses. It answers from text alone when
it can (explicit or rule), so the embedding is computed only when the classifier is needed —
and then it is the query's own embedding, reused for the similarity search.
"""

from importlib import resources

from prismcache.classify.embedding import EmbeddingClassifier, examples_digest, load_examples
from prismcache.classify.router import CategoryRouter, Classification
from prismcache.classify.rules import RuleClassifier
from prismcache.config import ClassifierConfig
from prismcache.embedders.base import Embedder

__all__ = [
    "CategoryRouter",
    "Classification",
    "EmbeddingClassifier",
    "RuleClassifier",
    "build_classifier",
    "examples_digest",
    "load_examples",
]


def build_classifier(spec: ClassifierConfig, embedder: Embedder) -> EmbeddingClassifier | None:
    """The embedding classifier ``spec`` asks for (``None`` when it is disabled): the shipped
    pre-trained one when it matches ``embedder`` and the built-in examples (start-up embeds
    nothing), else one fitted now on the examples' vectors."""
    if spec.examples is None:
        return None
    pairs = load_examples(spec.examples)
    if spec.examples == "builtin":
        shipped = resources.files("prismcache").joinpath(f"data/classifier-{spec.kind}.npz")
        with resources.as_file(shipped) as path:
            model = EmbeddingClassifier.load(path, embedder_id=embedder.id,
                                             digest=examples_digest(pairs))
        if model is not None:
            return model
    vectors = embedder.embed([text for text, _ in pairs])  # embedders batch large inputs
    return EmbeddingClassifier.fit(vectors, [c for _, c in pairs], kind=spec.kind)
