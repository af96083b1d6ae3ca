"""``llm:http://host:port/v1?model=NAME``: an OpenAI-compatible chat model as the judge.

For each grey-zone candidate the judge is asked, with temperature 0 and ``max_tokens: 1``,
whether an answer written for the stored request also answers the new one, and to reply
``yes`` or ``no``. When the server returns ``logprobs`` the probability of ``yes`` is used;
otherwise ``yes`` counts as :data:`YES_P` and ``no`` as ``1 - YES_P``.

Cost: one judge call per grey-zone candidate, on the lookup path (tens to hundreds of
milliseconds, and the judge's price per call). Use it where a wrong answer is expensive and
the judge is cheap and near (a small local model), and keep the grey zone narrow. Spec query
keys: ``model`` (required), ``key_env`` (the environment variable holding the API key,
default ``PRISMCACHE_VERIFIER_API_KEY``), ``timeout`` (seconds, default 5). Failures raise
:class:`~prismcache.errors.VerifierError` (the cache fails open: a miss). The key is sent in
the ``Authorization`` header only, never logged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import numpy as np

from prismcache.errors import ConfigError, VerifierError

if TYPE_CHECKING:
    from prismcache.decision import Candidate, Query

__all__ = ["DEFAULT_KEY_ENV", "PROMPT", "YES_P", "LLMJudgeVerifier"]

DEFAULT_KEY_ENV = "PRISMCACHE_VERIFIER_API_KEY"
#: probability given to a plain "yes" when the server returns no logprobs
YES_P = 0.95
PROMPT = (
    "A cache holds an answer written for request A. Decide whether that same answer is a "
    "correct and complete answer to request B. Different entities, numbers, dates, negation, "
    "direction or scope mean a different answer.\n\nRequest A: {candidate}\nRequest B: "
    "{query}\n\nReply with one word: yes or no."
)


class LLMJudgeVerifier:
    """Ask an OpenAI-compatible chat model whether a candidate's answer serves the query."""

    def __init__(self, base_url: str, *, model: str, api_key: str | None = None,
                 timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"llm:{model}"
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout,
                                    headers={"authorization": f"Bearer {api_key}"}
                                    if api_key else {})

    @classmethod
    def from_spec(cls, spec: str) -> Self:
        """``"llm:http(s)://host/v1?model=NAME[&key_env=VAR][&timeout=S]"``."""
        url = spec.partition(":")[2]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"verifier spec {spec!r}: expected llm:http(s)://host/v1?model=NAME")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"model", "key_env", "timeout"}
        if unknown or "model" not in query:
            raise ConfigError(f"verifier spec {spec!r}: needs model=, allows key_env= and "
                              f"timeout= (unknown: {sorted(unknown)})")
        try:
            timeout = float(query.get("timeout", 5))
        except ValueError:
            raise ConfigError(f"verifier spec {spec!r}: timeout must be a number") from None
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return cls(base, model=query["model"], timeout=timeout,
                   api_key=os.environ.get(query.get("key_env", DEFAULT_KEY_ENV)))

    def probabilities(self, query: Query, candidates: Sequence[Candidate]) -> np.ndarray:
        """One judge call per candidate; see the module docstring."""
        return np.array([self._judge(query.text, c.text) for c in candidates], dtype=np.float64)

    def _judge(self, query: str, candidate: str) -> float:
        body = {"model": self.model, "temperature": 0, "max_tokens": 1, "logprobs": True,
                "top_logprobs": 5, "messages": [
                    {"role": "user", "content": PROMPT.format(query=query, candidate=candidate)}]}
        try:
            response = self._client.post("/chat/completions", json=body)
            response.raise_for_status()
            choice = response.json()["choices"][0]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise VerifierError(f"{self.name}: the judge failed ({type(exc).__name__})") from None
        return _yes_probability(choice)

    def close(self) -> None:
        """Release the judge's connections."""
        self._client.close()

    def __repr__(self) -> str:
        return f"LLMJudgeVerifier({self.base_url!r}, model={self.model!r})"


def _yes_probability(choice: Any) -> float:
    top = (((choice.get("logprobs") or {}).get("content") or [{}])[0] or {}).get("top_logprobs")
    if top:
        mass = {"yes": 0.0, "no": 0.0}
        for item in top:
            word = str(item.get("token", "")).strip().lower()
            if word in mass:
                mass[word] += math.exp(float(item.get("logprob", -math.inf)))
        if mass["yes"] + mass["no"] > 0:
            return mass["yes"] / (mass["yes"] + mass["no"])
    text = str((choice.get("message") or {}).get("content") or choice.get("text") or "")
    word = text.strip().lower()
    if word.startswith("yes"):
        return YES_P
    if word.startswith("no"):
        return 1.0 - YES_P
    raise VerifierError(f"the judge answered {text[:40]!r}, not yes or no")
