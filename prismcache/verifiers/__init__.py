"""The verifiers seam: choose a match verifier by a spec string (``verifier:`` in a category's
policy, like ``embedder:``).

- ``"none"``: no verifier; a candidate is served on cosine >= ``threshold`` and the guards;
- ``"builtin"``: :class:`BuiltinVerifier`, shipped pre-trained with prismcache (pair features
  from both texts and their vectors, combined by a small trained model; no second network);
- ``"cross-encoder:PATH"``: :class:`CrossEncoderVerifier`, a cross-encoder the operator
  provides: a directory with ``model.onnx`` and ``tokenizer.json`` (run by onnxruntime), or a
  sentence-transformers model path (``pip install 'prismcache[st]'``). Nothing is downloaded;
- ``"llm:http://host:port/v1?model=NAME"`` (or ``llm:https://...``): :class:`LLMJudgeVerifier`,
  an OpenAI-compatible chat model asked whether the two requests want the same answer. Each
  grey-zone candidate costs one judge call (latency and money): see ``docs/decision.md``.

>>> open_verifier("none") is None
True
>>> open_verifier("builtin").name
'builtin-v1'

Backends are imported only when a spec names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prismcache._lazy import lazy_exports, load
from prismcache.errors import ConfigError
from prismcache.verifiers.base import Verifier

if TYPE_CHECKING:
    from prismcache.verifiers.builtin import BuiltinVerifier
    from prismcache.verifiers.cross_encoder import CrossEncoderVerifier
    from prismcache.verifiers.llm import LLMJudgeVerifier

__all__ = ["BuiltinVerifier", "CrossEncoderVerifier", "LLMJudgeVerifier", "Verifier",
           "open_verifier", "valid_spec"]

_BACKENDS: dict[str, str] = {
    "builtin": "prismcache.verifiers.builtin:BuiltinVerifier",
    "cross-encoder": "prismcache.verifiers.cross_encoder:CrossEncoderVerifier",
    "llm": "prismcache.verifiers.llm:LLMJudgeVerifier",
}
_CLASSES = {target.rsplit(":", 1)[1]: target for target in _BACKENDS.values()}


def valid_spec(spec: str) -> bool:
    """Whether ``spec`` names a known verifier scheme (checked when a config loads; the
    verifier itself is opened, and its files checked, when a cache opens)."""
    return spec == "none" or spec.split(":", 1)[0] in _BACKENDS


def open_verifier(spec: str) -> Verifier | None:
    """Open the verifier a spec names (``None`` for ``"none"``).

    Raises :class:`~prismcache.errors.ConfigError` for an unknown scheme, a malformed spec, or
    a model file that is missing or unreadable.
    """
    spec = spec.strip()
    if spec == "none":
        return None
    target = _BACKENDS.get(spec.split(":", 1)[0])
    if target is None:
        raise ConfigError(f"unknown verifier spec {spec!r}: expected 'none', "
                          f"{', '.join(repr(k) for k in sorted(_BACKENDS))} (see docs/decision.md)")
    verifier: Verifier = load(target).from_spec(spec)
    return verifier


__getattr__ = lazy_exports(__name__, _CLASSES)  # PEP 562: backends load on first use
