"""Request -> category: explicit metadata first, then rules, then the embedding classifier.

:class:`CategoryRouter` is the one entry point the cache uses. It answers from text alone when
it can (explicit or rule), so the embedding is computed only when the classifier is needed —
and then it is the query's own embedding, reused for the similarity search.
"""

from prismcache.classify.embedding import EmbeddingClassifier, examples_digest, load_examples
from prismcache.classify.router import CategoryRouter, Classification
from prismcache.classify.rules import RuleClassifier

__all__ = [
    "CategoryRouter",
    "Classification",
    "EmbeddingClassifier",
    "RuleClassifier",
    "examples_digest",
    "load_examples",
]
