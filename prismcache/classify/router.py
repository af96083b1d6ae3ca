"""The order of precedence: explicit > rules > embedding classifier > default."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from prismcache.classify.embedding import EmbeddingClassifier
from prismcache.classify.rules import RuleClassifier
from prismcache.config import CacheConfig

__all__ = ["CategoryRouter", "Classification"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Classification:
    """A category and how it was decided: ``explicit``, ``rule``, ``classifier`` or
    ``default``; ``confidence`` is the classifier's probability (1.0 otherwise)."""

    category: str
    source: str
    confidence: float = 1.0


class CategoryRouter:
    """Assigns each request a category known to the config."""

    def __init__(self, config: CacheConfig, classifier: EmbeddingClassifier | None) -> None:
        self._known = frozenset(config.categories)
        self._default = config.default_category
        self._rules = RuleClassifier(config.rules)
        self._classifier = classifier
        self._min_confidence = config.classifier.min_confidence
        if classifier is not None:
            unknown = set(classifier.categories) - self._known
            if unknown:
                log.warning("classifier examples name categories with no policy %s; "
                            "they fall back to %r", sorted(unknown), self._default)

    @property
    def needs_vector(self) -> bool:
        """Whether :meth:`by_vector` can use a vector (an embedding classifier exists)."""
        return self._classifier is not None

    def by_text(self, text: str, explicit: str | None = None) -> Classification | None:
        """Classify without an embedding, or return ``None`` when only the classifier can."""
        if explicit is not None:
            if explicit in self._known:
                return Classification(explicit, "explicit")
            return Classification(self._default, "default")
        category = self._rules.classify(text)
        if category is not None:
            return Classification(category, "rule")
        if self._classifier is None:
            return Classification(self._default, "default")
        return None

    def by_vector(self, vector: np.ndarray) -> Classification:
        """Classify from the query's embedding (call only when :meth:`by_text` gave None)."""
        if self._classifier is None:
            return Classification(self._default, "default")
        category, confidence = self._classifier.predict(vector)
        if confidence < self._min_confidence or category not in self._known:
            return Classification(self._default, "default", confidence)
        return Classification(category, "classifier", confidence)
