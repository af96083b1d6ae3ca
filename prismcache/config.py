"""Typed, validated configuration: one YAML file -> :class:`CacheConfig`.

The shipped defaults live in ``prismcache/defaults.yaml`` (read it: every default says why it
is what it is). A user's file is merged over them key by key, so a file that only says
``categories: {code: {threshold: 0.97}}`` keeps every other default, including the rest of the
``code`` policy. Unknown keys are errors, not silently ignored.

>>> cfg = load_config({"categories": {"code": {"threshold": 0.97}}})
>>> cfg.categories["code"].threshold, cfg.categories["code"].ttl
(0.97, datetime.timedelta(days=30))
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from prismcache.errors import ConfigError
from prismcache.request import RequestLimits

__all__ = [
    "EVICTIONS",
    "GUARDS",
    "CacheConfig",
    "CategoryPolicy",
    "ClassifierConfig",
    "format_duration",
    "Rule",
    "load_config",
    "parse_duration",
]

EVICTIONS = ("lru", "lfu", "gdsf")
GUARDS = ("numbers", "negation", "entities", "antonyms")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_SIZES = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
          "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def parse_duration(value: Any, *, key: str = "ttl") -> timedelta | None:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"30d"``, ``"2w"``, a number of seconds, or
    ``None``/``"never"`` for no expiry. Raises :class:`ConfigError` naming ``key``."""
    if value is None or value == "never":
        return None
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"{key}: {value!r} is not a duration like '90s', '5m', '1h', '30d'")
        seconds = float(match[1]) * _UNITS[match[2]]
    if seconds <= 0:
        raise ConfigError(f"{key}: must be positive, got {value!r}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta | None) -> str:
    """The inverse of :func:`parse_duration` for display: ``"30d"``, ``"5m"``, ``"never"``."""
    if value is None:
        return "never"
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def _parse_size(value: Any, *, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ConfigError(f"{key}: {value!r} is not a size like 500MB or 1GiB")
        size = int(float(match[1]) * _SIZES[match[2]])
    if size <= 0:
        raise ConfigError(f"{key}: must be positive, got {value!r}")
    return size


@dataclass(frozen=True, slots=True, kw_only=True)
class CategoryPolicy:
    """How one category of traffic is cached.

    Attributes:
        enabled: serve and store this category at all.
        threshold: cosine similarity at or above which a neighbour may be served.
        ttl: absolute lifetime of an entry; ``None`` never expires.
        quota: share of the cache's capacity (entries and bytes) this category is guaranteed
            when the cache is full; it may borrow more while space is free (see
            :mod:`prismcache.quotas`).
        max_share: hard ceiling on the share it may hold even while space is free; ``None``
            (the default) for none. At least ``quota``.
        eviction: ``"lru"``, ``"lfu"`` or ``"gdsf"`` (cost-aware: hits x upstream cost / size).
        guards: lexical checks a semantic match must also pass (see :mod:`prismcache.guards`).
        exact_only: serve verbatim repeats only; never match by similarity.
        upstream_latency: seconds a hit saves when the caller does not measure it.
        price_per_1k_tokens: upstream price used to estimate the money a hit saves.
        fallback_threshold: when the upstream is overloaded (429/503/timeout), a candidate at
            or above this similarity (and below ``threshold``) may be served marked ``near``;
            ``None`` never (see :mod:`prismcache.server.overload`).

    >>> CategoryPolicy(threshold=0.92, ttl=timedelta(hours=1), quota=0.2)
    CategoryPolicy(threshold=0.92, ttl=1h, quota=0.2, eviction='lru')
    """

    enabled: bool = True
    threshold: float = 0.92
    ttl: timedelta | None = timedelta(days=1)
    quota: float = 0.1
    eviction: str = "lru"
    guards: tuple[str, ...] = GUARDS
    exact_only: bool = False
    upstream_latency: float = 2.0
    price_per_1k_tokens: float = 0.002
    max_share: float | None = None
    fallback_threshold: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 <= self.quota <= 1.0:
            raise ConfigError(f"quota must be in [0, 1], got {self.quota}")
        if self.eviction not in EVICTIONS:
            raise ConfigError(f"eviction must be one of {EVICTIONS}, got {self.eviction!r}")
        unknown = set(self.guards) - set(GUARDS)
        if unknown:
            raise ConfigError(f"unknown guards {sorted(unknown)}; known: {GUARDS}")
        if self.ttl is not None and self.ttl.total_seconds() <= 0:
            raise ConfigError(f"ttl must be positive, got {self.ttl}")
        if self.upstream_latency < 0 or self.price_per_1k_tokens < 0:
            raise ConfigError("upstream_latency and price_per_1k_tokens must be >= 0")
        if self.max_share is not None and not self.quota <= self.max_share <= 1.0:
            raise ConfigError(f"max_share must be in [quota, 1] = [{self.quota}, 1], "
                              f"got {self.max_share}")
        if self.fallback_threshold is not None and not (
                0.0 < self.fallback_threshold <= self.threshold):
            raise ConfigError(f"fallback_threshold must be in (0, threshold] = "
                              f"(0, {self.threshold}], got {self.fallback_threshold}")

    def __repr__(self) -> str:
        shown = [f"threshold={self.threshold}", f"ttl={format_duration(self.ttl)}",
                 f"quota={self.quota}",
                 f"eviction={self.eviction!r}"]
        if not self.enabled:
            shown.insert(0, "enabled=False")
        if self.exact_only:
            shown.append("exact_only=True")
        if self.max_share is not None:
            shown.append(f"max_share={self.max_share}")
        return f"CategoryPolicy({', '.join(shown)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """Route a request to ``category`` when any keyword (whole word, case-insensitive) or the
    regular expression matches its last user turn. Rules are tried in order."""

    category: str
    keywords: tuple[str, ...] = ()
    regex: str | None = None

    def __post_init__(self) -> None:
        if not self.keywords and not self.regex:
            raise ConfigError(f"rule for {self.category!r} has neither keywords nor regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ConfigError(f"rule for {self.category!r}: bad regex: {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassifierConfig:
    """The embedding classifier, trained at start-up from labelled examples.

    Attributes:
        examples: JSONL file of ``{"text": ..., "category": ...}``; ``"builtin"`` for the
            examples shipped with prismcache; ``None`` disables the embedding classifier.
        kind: ``"logistic"`` (multinomial logistic regression) or ``"centroid"``.
        min_confidence: below this predicted probability the default category is used.
    """

    examples: str | None = "builtin"
    kind: str = "logistic"
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in ("logistic", "centroid"):
            raise ConfigError(f"classifier.kind must be 'logistic' or 'centroid', got {self.kind!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"classifier.min_confidence must be in [0, 1], got {self.min_confidence}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """Everything a :class:`~prismcache.SemanticCache` is opened with.

    Attributes:
        store: document store URL (``sqlite:///prismcache.db``, ``memory://``, ``redis://...``).
        embedder: embedder spec (``minilm``, ``hash:64``, ``openai+http://...``, ``st``).
        capacity_entries: entries the whole cache may hold; quotas are shares of it.
        capacity_bytes: bytes the whole cache may hold, or ``None`` for no byte bound.
        default_category: where traffic no rule or classifier claims goes.
        categories: policy per category name.
        rules: keyword/regex routing, tried before the classifier.
        classifier: the embedding classifier.
        limits: request bounds (size, semantic window, temperature).
        neighbours: candidates examined per semantic lookup (the best that passes the
            threshold and the guards is served).
        index: ``{kind, m, ef_construction, ef_search, promote_at}`` for the vector index.
        snapshot: directory for index snapshots (faster start-up), or ``None``.
        server: the ``server:`` section, validated by :mod:`prismcache.server` (the proxy).
        sections: other top-level sections owned by optional parts (e.g. ``economics``),
            passed through unvalidated here and validated by the part that reads them.
    """

    store: str = "sqlite:///prismcache.db"
    embedder: str = "minilm"
    capacity_entries: int = 100_000
    capacity_bytes: int | None = None
    default_category: str = "general"
    categories: Mapping[str, CategoryPolicy] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    classifier: ClassifierConfig = ClassifierConfig()
    limits: RequestLimits = RequestLimits()
    neighbours: int = 4
    index: Mapping[str, Any] = field(default_factory=dict)
    snapshot: str | None = None
    server: Mapping[str, Any] = field(default_factory=dict)
    sections: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.capacity_entries <= 0:
            raise ConfigError(f"capacity.entries must be positive, got {self.capacity_entries}")
        if self.neighbours < 1:
            raise ConfigError(f"neighbours must be >= 1, got {self.neighbours}")
        if self.default_category not in self.categories:
            raise ConfigError(
                f"default_category {self.default_category!r} has no policy under categories"
            )
        for rule in self.rules:
            if rule.category not in self.categories:
                raise ConfigError(f"rule names unknown category {rule.category!r}")

    def policy(self, category: str) -> CategoryPolicy:
        """The policy of ``category``, or the default category's for unknown names."""
        return self.categories.get(category) or self.categories[self.default_category]


_TOP_KEYS = {"store", "embedder", "capacity", "default_category", "defaults", "categories",
             "rules", "classifier", "limits", "neighbours", "index", "snapshot", "server"}
# Sections validated by optional parts of prismcache, kept as given.
_PART_KEYS = {"economics", "adaptive", "replay", "sync"}


def _builtin_defaults() -> dict[str, Any]:
    text = resources.files("prismcache").joinpath("defaults.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return over


def _known(section: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"{section}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def _policy(name: str, data: Mapping[str, Any]) -> CategoryPolicy:
    if not isinstance(data, Mapping):
        raise ConfigError(f"categories.{name}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in fields(CategoryPolicy)}
    _known(f"categories.{name}", data, names)
    values = dict(data)
    if "ttl" in values:
        values["ttl"] = parse_duration(values["ttl"], key=f"categories.{name}.ttl")
    if "guards" in values:
        values["guards"] = tuple(values["guards"] or ())
    try:
        return CategoryPolicy(**values)
    except ConfigError as exc:
        raise ConfigError(f"categories.{name}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"categories.{name}: {exc}") from None


def load_config(source: str | Path | Mapping[str, Any] | None = None) -> CacheConfig:
    """Load a config from a YAML file path, a mapping, or ``None`` (the built-in defaults).

    The file is merged over the defaults; the ``defaults:`` section applies to every category
    before its own keys. Raises :class:`ConfigError` with the offending key on any problem.
    """
    if source is None:
        user: Mapping[str, Any] = {}
    elif isinstance(source, Mapping):
        user = source
    else:
        path = Path(source)
        try:
            user = yaml.safe_load(path.read_text("utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(user, Mapping):
        raise ConfigError("the config must be a YAML mapping at the top level")
    _known("config", user, _TOP_KEYS | _PART_KEYS)
    raw = _merge(_builtin_defaults(), user)
    if "rules" in user:  # a user's rule list replaces the shipped one rather than merging
        raw["rules"] = user["rules"]

    base = raw.get("defaults") or {}
    categories = {
        name: _policy(name, _merge(base, spec or {}))
        for name, spec in (raw.get("categories") or {}).items()
    }
    capacity = raw.get("capacity") or {}
    _known("capacity", capacity, {"entries", "bytes"})
    rules = []
    for i, spec in enumerate(raw.get("rules") or ()):
        _known(f"rules[{i}]", spec, {"category", "keywords", "regex"})
        rules.append(Rule(category=spec.get("category", ""),
                          keywords=tuple(spec.get("keywords") or ()), regex=spec.get("regex")))
    classifier = raw.get("classifier") or {}
    _known("classifier", classifier, {"examples", "kind", "min_confidence"})
    limits = raw.get("limits") or {}
    _known("limits", limits, {"max_query_bytes", "max_semantic_chars", "max_temperature"})
    index = raw.get("index") or {}
    _known("index", index, {"kind", "m", "ef_construction", "ef_search", "promote_at"})
    try:
        return CacheConfig(
            store=str(raw.get("store", CacheConfig.store)),
            embedder=str(raw.get("embedder", CacheConfig.embedder)),
            capacity_entries=int(capacity.get("entries", CacheConfig.capacity_entries)),
            capacity_bytes=_parse_size(capacity.get("bytes"), key="capacity.bytes"),
            default_category=str(raw.get("default_category", "general")),
            categories=categories,
            rules=tuple(rules),
            classifier=ClassifierConfig(**classifier),
            limits=RequestLimits(**limits),
            neighbours=int(raw.get("neighbours", CacheConfig.neighbours)),
            index=dict(index),
            snapshot=raw.get("snapshot"),
            server=dict(raw.get("server") or {}),
            sections={key: raw[key] for key in _PART_KEYS if key in raw},
        )
    except ValueError as exc:  # ConfigError is a ValueError too
        raise ConfigError(str(exc)) from None
