"""An embedder backed by an OpenAI-compatible ``/v1/embeddings`` endpoint.

Any server that speaks OpenAI's embeddings API will do: OpenAI itself, vLLM, text-embeddings-
inference, Ollama, LiteLLM. Several prismcache nodes can share one such server so that they all
produce the same vectors.

Every failure (timeout, connection error, non-2xx status, malformed body, wrong dimension)
becomes an :class:`~prismcache.errors.EmbeddingError`, translated in :meth:`OpenAIEmbedder._post`
alone. The API key goes in the ``Authorization`` header and nowhere else: not in reprs, not in
error messages, not in logs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import numpy as np

from prismcache.embedders import _check_texts, _unit_rows
from prismcache.embedders.base import embedder_id
from prismcache.errors import ConfigError, EmbeddingError

__all__ = ["DEFAULT_KEY_ENV", "OpenAIEmbedder"]

#: The environment variable the API key is read from when a spec names none.
DEFAULT_KEY_ENV = "PRISMCACHE_EMBEDDINGS_API_KEY"

_SPEC_KEYS = ("model", "dim", "key_env", "timeout")
_PROBE_TEXT = "dimension probe"
_BODY_EXCERPT = 200


class OpenAIEmbedder:
    """Embed through ``POST {base_url}/embeddings`` of an OpenAI-compatible server.

    Args:
        base_url: the API root, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: the ``model`` sent with every request; also this embedder's :attr:`name`.
        dim: the vectors' dimension. When ``None`` it is discovered with one probe request the
            first time :attr:`dim` is read (or from the first :meth:`embed` call's answer).
            Note that ``isinstance(embedder, Embedder)`` reads :attr:`dim` on Python 3.11.
        api_key: sent as ``Authorization: Bearer ...`` when given.
        timeout: seconds allowed for each request (connect, read, write and pool each).
        batch_size: texts per request; larger batches are split, and fail as a whole.

    Constructing one makes no request. It is thread-safe (one pooled ``httpx.Client``); call
    :meth:`close` (or use it as a context manager) to release its connections.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        dim: int | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        batch_size: int = 256,
    ) -> None:
        if not model:
            raise ValueError("model must be a non-empty string")
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        self.name = model
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.batch_size = batch_size
        self._dim = dim
        self._dim_lock = threading.Lock()
        self._api_key = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, follow_redirects=False
        )

    @classmethod
    def from_spec(cls, spec: str) -> Self:
        """``"openai+http[s]://host[:port]/path?model=NAME[&dim=N][&key_env=VAR][&timeout=S]"``.

        The key is read from the environment variable ``key_env`` names (default
        ``PRISMCACHE_EMBEDDINGS_API_KEY``); when it is unset, requests carry no key.
        """
        parts = urlsplit(spec)
        scheme = parts.scheme.removeprefix("openai+")
        if scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"embedder spec {_redact_url(spec)!r}: expected "
                "'openai+http://host:port/v1?model=NAME' or 'openai+https://...'"
            )
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(_SPEC_KEYS))
        if unknown:
            raise ConfigError(
                f"embedder spec {_redact_url(spec)!r}: unknown parameter(s) "
                f"{', '.join(unknown)}; allowed: {', '.join(_SPEC_KEYS)}"
            )
        params = {key: values[-1] for key, values in query.items()}
        if not params.get("model"):
            raise ConfigError(f"embedder spec {_redact_url(spec)!r}: model=NAME is required")
        try:
            dim = int(params["dim"]) if "dim" in params else None
            timeout = float(params.get("timeout", 10.0))
            base_url = urlunsplit((scheme, parts.netloc, parts.path, "", ""))
            return cls(
                base_url,
                model=params["model"],
                dim=dim,
                api_key=os.environ.get(params.get("key_env") or DEFAULT_KEY_ENV) or None,
                timeout=timeout,
            )
        except ValueError as exc:
            raise ConfigError(f"embedder spec {_redact_url(spec)!r}: {exc}") from None

    @property
    def dim(self) -> int:
        """The vectors' dimension; the first read may make one probe request."""
        if self._dim is not None:
            return self._dim
        return self._learn_dim(len(self._post([_PROBE_TEXT])[0]))

    @property
    def id(self) -> str:
        """``"MODEL:DIM"``."""
        return embedder_id(self.name, self.dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32 unit rows of shape ``(len(texts), dim)``, in input order."""
        batch = _check_texts(texts)
        if not batch:
            return np.empty((0, self.dim), dtype=np.float32)
        rows: list[list[float]] = []
        for start in range(0, len(batch), self.batch_size):
            rows.extend(self._post(batch[start : start + self.batch_size]))
        dim = self._dim if self._dim is not None else self._learn_dim(len(rows[0]))
        return _unit_rows(rows, len(batch), dim, repr(self))

    def _learn_dim(self, dim: int) -> int:
        with self._dim_lock:
            if self._dim is None:
                self._dim = dim
            return self._dim

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        key = "'***'" if self._api_key else "None"
        return (
            f"OpenAIEmbedder({_redact_url(self.base_url)!r}, model={self.name!r}, "
            f"dim={self._dim!r}, api_key={key}, timeout={self.timeout!r})"
        )

    def _post(self, texts: list[str]) -> list[list[float]]:
        """The server's vectors for ``texts``, ordered by their ``index``."""
        where = f"{_redact_url(self.base_url)}/embeddings"
        try:
            response = self._client.post("/embeddings", json={"model": self.name, "input": texts})
        except httpx.TimeoutException as exc:
            raise EmbeddingError(f"{where} timed out after {self.timeout} s") from exc
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise EmbeddingError(
                f"{where} answered HTTP {response.status_code}: {self._excerpt(response.text)}"
            )
        try:
            return _vectors(response.json(), len(texts))
        except (ValueError, TypeError, KeyError) as exc:
            raise EmbeddingError(f"{where} answered a malformed body: {exc}") from exc

    def _excerpt(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text[:_BODY_EXCERPT]


def _vectors(body: Any, count: int) -> list[list[float]]:
    """``body["data"]``'s embeddings ordered by ``index``; exactly ``count`` of them."""
    data = body["data"]
    if not isinstance(data, list) or len(data) != count:
        raise ValueError(f"expected a list of {count} embeddings in 'data'")
    by_index = {item["index"]: item["embedding"] for item in data}
    if sorted(by_index) != list(range(count)):
        raise ValueError(f"the indices are not 0..{count - 1}")
    vectors = [by_index[index] for index in range(count)]
    if not all(isinstance(vector, list) and vector for vector in vectors):
        raise ValueError("an embedding is not a non-empty list of numbers")
    if len({len(vector) for vector in vectors}) != 1:
        raise ValueError("the embeddings have different lengths")
    return vectors


def _redact_url(url: str) -> str:
    """``url`` without its ``user:password@`` part, and with only known query values shown.

    A spec never needs a secret in it, but one pasted there by mistake must not reach a log.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        f"{key}={value if key in _SPEC_KEYS else '***'}"
        for key, values in parse_qs(parts.query, keep_blank_values=True).items()
        for value in values
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
