"""Keyword and regex routing, tried in configuration order."""

from __future__ import annotations

import re
from collections.abc import Sequence

from prismcache.config import Rule

__all__ = ["RuleClassifier"]


def _compile(rule: Rule) -> re.Pattern[str]:
    parts = []
    if rule.keywords:
        words = sorted(rule.keywords, key=len, reverse=True)
        alternation = "|".join(r"\s+".join(map(re.escape, w.split())) for w in words)
        parts.append(rf"\b(?:{alternation})\b")
    if rule.regex:
        parts.append(f"(?:{rule.regex})")
    return re.compile("|".join(parts), re.IGNORECASE)


class RuleClassifier:
    """The first rule whose keywords or regex match the text names the category.

    >>> from prismcache.config import Rule
    >>> rc = RuleClassifier([Rule(category="volatile", keywords=("stock price",))])
    >>> rc.classify("What's the STOCK  price of ACME?"), rc.classify("hello")
    ('volatile', None)
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = [(rule.category, _compile(rule)) for rule in rules]

    def classify(self, text: str) -> str | None:
        """The category of the first matching rule, or ``None`` when no rule matches."""
        for category, pattern in self._rules:
            if pattern.search(text):
                return category
        return None
