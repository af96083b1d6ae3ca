"""Typed, validated configuration: one YAML file -> :class:`CacheConfig`.

The shipped defaults live in ``prismcache/defaults.yaml`` (read it: every default says why it
is what it is). A user's file is merged over them key by key, so a file that only says
``categories: {code: {threshold: 0.97}}`` keeps every other default, including the rest of the
``code`` policy. Every key of the file is checked in one pass against one tree of known keys (derived from the
settings dataclasses, so a new field is a new key at once); every unknown key is reported
with its path, not only the first.

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
from prismcache.guards import GUARD_TESTS
from prismcache.request import RequestLimits

__all__ = [
    "CONTEXTS",
    "EVICTIONS",
    "GUARDS",
    "RELIEF",
    "CacheConfig",
    "CategoryPolicy",
    "ClassifierConfig",
    "PrefilterConfig",
    "format_duration",
    "Rule",
    "load_config",
    "parse_duration",
    "parse_size",
    "unknown_keys",
]

EVICTIONS = ("lru", "lfu", "gdsf")
CONTEXTS = ("exact", "semantic")  # how a conversation's earlier turns are compared
GUARDS = tuple(GUARD_TESTS)  # every guard prismcache.guards defines, in order
RELIEF = ("never", "stale", "near")  # what the proxy may serve at once to a saturated upstream
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_SIZES = {None: 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


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


def parse_size(value: Any, *, key: str) -> int | None:
    """Bytes from ``500MB``, ``1GiB``, ``64kib``, ``2 GB`` (units in any case: decimal ``KB``
    ``MB`` ``GB`` ``TB``, binary ``KiB`` ``MiB`` ``GiB`` ``TiB``), a plain number of bytes, or
    ``None``. The one size grammar of every config key. Raises :class:`ConfigError` naming
    ``key`` unless the size is positive.

    >>> parse_size("1mib", key="server.max_body_bytes"), parse_size("1GB", key="capacity.bytes")
    (1048576, 1000000000)
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match or isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} is not a size like 500MB or 1GiB")
        size = int(float(match[1]) * _SIZES[match[2] and match[2].lower()])
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
        verifier: the match verifier's spec (``"builtin"``, ``"none"``,
            ``"cross-encoder:PATH"``, ``"llm:URL?model=NAME"``; see
            :mod:`prismcache.verifiers`). With ``"none"`` a candidate is served on
            ``cosine >= threshold`` and the guards alone.
        verify_low: with a verifier, candidates below this cosine are never served.
        verify_high: with a verifier, candidates at or above this cosine are served without
            asking it (near-verbatim); between the two bounds the verifier decides.
        cutoff: the verifier's probability at or above which a grey-zone candidate is served.
        upstream_latency: seconds a hit saves when the caller does not measure it.
        price_per_1k_tokens: upstream price used to estimate the money a hit saves.
        fallback_threshold: when the upstream is overloaded (429/503/timeout), a candidate at
            or above this similarity (and below ``threshold``) may be served marked ``near``;
            ``None`` never (see :mod:`prismcache.server.overload`).
        target_precision: learn the verifier ``cutoff`` from labelled traffic, keeping the
            loosest one whose 95% lower confidence bound on precision reaches this
            (:mod:`prismcache.calibration`); ``None`` (the default): off, ``cutoff`` as set.
        explore_rate: with ``target_precision`` set, the share of grey-zone hits sent upstream
            instead and labelled (0 while the upstream is overloaded).
        context: how the conversation before the last user turn is compared (see
            ``docs/conversations.md``): ``"exact"`` (byte-identical turns only) or
            ``"semantic"`` (by meaning: the embedding of the earlier user turns, weighted
            toward the most recent, at or above ``context_threshold``, and the lexical
            guards on the whole earlier conversation).
        context_threshold: with ``context: semantic``, the cosine of the two contexts'
            embeddings at or above which they may be taken to mean the same.
        stale_if_error: seconds an entry is kept past its ``ttl`` (0: not at all) to be
            served marked ``stale``, only when the upstream answers 429 or 5xx or times out;
            a lookup never serves it as a hit (see :mod:`prismcache.server.overload`).
        relieve: what the proxy serves at once, *instead of* calling the upstream, to a missed
            request while the upstream is saturated (its gate would queue the call):
            ``"never"`` (the default: the call queues), ``"stale"`` (an entry within
            ``stale_if_error`` that the decision would have served) or ``"near"`` (that, else
            a candidate at or above ``fallback_threshold``). Each kind only where the
            category allows it on an upstream error too.

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
    verifier: str = "none"
    verify_low: float = 0.75
    verify_high: float = 0.99
    cutoff: float = 0.5
    upstream_latency: float = 2.0
    price_per_1k_tokens: float = 0.002
    max_share: float | None = None
    fallback_threshold: float | None = None
    target_precision: float | None = None
    explore_rate: float = 0.02
    context: str = "exact"
    context_threshold: float = 0.8
    stale_if_error: float = 0.0
    relieve: str = "never"

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
        if not 0.0 < self.verify_low <= self.verify_high <= 1.0:
            raise ConfigError("need 0 < verify_low <= verify_high <= 1, got "
                              f"{self.verify_low} and {self.verify_high}")
        if not 0.0 <= self.cutoff <= 1.0:
            raise ConfigError(f"cutoff must be in [0, 1], got {self.cutoff}")
        from prismcache.verifiers import valid_spec  # verifiers import config lazily too

        if not isinstance(self.verifier, str) or not valid_spec(self.verifier):
            raise ConfigError(f"verifier: unknown spec {self.verifier!r}; expected 'none', "
                              "'builtin', 'cross-encoder:PATH' or 'llm:URL?model=NAME'")
        if self.upstream_latency < 0 or self.price_per_1k_tokens < 0:
            raise ConfigError("upstream_latency and price_per_1k_tokens must be >= 0")
        if self.max_share is not None and not self.quota <= self.max_share <= 1.0:
            raise ConfigError(f"max_share must be in [quota, 1] = [{self.quota}, 1], "
                              f"got {self.max_share}")
        if self.fallback_threshold is not None and not (
                0.0 < self.fallback_threshold <= self.threshold):
            raise ConfigError(f"fallback_threshold must be in (0, threshold] = "
                              f"(0, {self.threshold}], got {self.fallback_threshold}")
        if self.target_precision is not None and not 0.5 <= self.target_precision < 1.0:
            raise ConfigError(f"target_precision must be in [0.5, 1), got {self.target_precision}")
        if not 0.0 <= self.explore_rate <= 0.5:
            raise ConfigError(f"explore_rate must be in [0, 0.5], got {self.explore_rate}")
        if self.context not in CONTEXTS:
            raise ConfigError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if not 0.0 < self.context_threshold <= 1.0:
            raise ConfigError(f"context_threshold must be in (0, 1], got {self.context_threshold}")
        if not self.stale_if_error >= 0.0:
            raise ConfigError(f"stale_if_error must be >= 0 seconds, got {self.stale_if_error}")
        if self.relieve not in RELIEF:
            raise ConfigError(f"relieve must be one of {RELIEF}, got {self.relieve!r}")

    def __repr__(self) -> str:
        shown = [f"threshold={self.threshold}", f"ttl={format_duration(self.ttl)}",
                 f"quota={self.quota}",
                 f"eviction={self.eviction!r}"]
        if not self.enabled:
            shown.insert(0, "enabled=False")
        if self.exact_only:
            shown.append("exact_only=True")
        if self.verifier != "none":
            shown.append(f"verifier={self.verifier!r}, verify=[{self.verify_low}, "
                         f"{self.verify_high}), cutoff={self.cutoff}")
        if self.max_share is not None:
            shown.append(f"max_share={self.max_share}")
        if self.context != "exact":
            shown.append(f"context={self.context!r}, context_threshold={self.context_threshold}")
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
class PrefilterConfig:
    """The miss-path pre-filter (:mod:`prismcache.prefilter`).

    Attributes:
        enabled: call a lookup a miss, before the embedder runs, when no stored query of its
            partition is within ``bound`` by the static embedding: ``"auto"`` (the default)
            with the bundled embedder and off with any other; ``True`` needs the bundled
            embedder (else the cache refuses to open); ``False`` never.
        bound: static cosine below which a lookup is far; chosen on training traces so that
            <= 0.5% of the decision's semantic hits fall below it (``bench/prefilter.py``).
    """

    enabled: bool | str = "auto"
    bound: float = 0.78

    def __post_init__(self) -> None:
        if not (isinstance(self.enabled, bool) or self.enabled == "auto"):
            raise ConfigError(f"prefilter.enabled must be true, false or auto, "
                              f"got {self.enabled!r}")
        if isinstance(self.bound, bool) or not isinstance(self.bound, (int, float)) \
                or not -1.0 <= self.bound <= 1.0:
            raise ConfigError(f"prefilter.bound must be a cosine in [-1, 1], got {self.bound!r}")


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
        index: ``{kind, m, ef_construction, ef_search, promote_at}`` for the vector index,
            and ``max_bytes``: the per-process memory budget of the indexes (``None``: hold
            every partition; else partitions load on first use, least recently used dropped).
        snapshot: directory for index snapshots (faster start-up), or ``None``.
        prefilter: the miss-path pre-filter (on with the bundled embedder unless disabled).
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
    prefilter: PrefilterConfig = PrefilterConfig()
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


# Sections owned by optional parts of prismcache: kept as given in ``CacheConfig.sections``;
# their keys are checked here (:func:`unknown_keys`), their values by the parts.
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


class _Each:
    """Schema of a mapping whose keys are names (categories) and whose values follow ``of``."""

    def __init__(self, of: Any) -> None:
        self.of = of


class _Items:
    """Schema of a list whose items follow ``of``."""

    def __init__(self, of: Any) -> None:
        self.of = of


def _fields(cls: type, **nested: Any) -> dict[str, Any]:
    """The keys of a section that builds ``cls``: its dataclass fields, generically (a field
    added to the dataclass is a key at once), with ``nested`` schemas for sub-sections."""
    return {**{f.name: None for f in fields(cls)}, **nested}


def _schema(user: Mapping[str, Any]) -> dict[str, Any]:
    """The tree of known keys. ``None`` is a leaf (or an opaque value); sections owned by
    optional parts take their keys from those parts' settings classes."""
    from prismcache.adaptive import AdaptiveSettings, Bounds
    from prismcache.admission import AdmissionSettings
    from prismcache.economics import EconomicsSettings

    policy = _fields(CategoryPolicy)
    schema: dict[str, Any] = {
        "store": None, "embedder": None, "default_category": None, "neighbours": None,
        "snapshot": None,
        "capacity": {"entries": None, "bytes": None},
        "defaults": policy,
        "categories": _Each(policy),
        "rules": _Items(_fields(Rule)),
        "classifier": _fields(ClassifierConfig),
        "limits": _fields(RequestLimits),
        "index": {"kind": None, "m": None, "ef_construction": None, "ef_search": None,
                  "promote_at": None, "max_bytes": None},
        "prefilter": _fields(PrefilterConfig),
        "server": None,
        "economics": _fields(EconomicsSettings, categories=_Each({"auto_disable": None}),
                             admission=_fields(AdmissionSettings)),
        "adaptive": _fields(AdaptiveSettings, defaults=_fields(Bounds),
                            categories=_Each(_fields(Bounds))),
        "replay": None, "sync": None,  # reserved for parts that read them
    }
    if isinstance(user.get("server"), Mapping):  # its keys are the proxy's (needs its extra)
        try:
            from prismcache.server.settings import ServerSettings
        except ImportError:
            pass  # `prismcache serve` validates them, and cannot run without the extra anyway
        else:
            schema["server"] = {**ServerSettings.config_keys(),
                                "tenants": _Items({"tenant": None, "key": None,
                                                   "key_env": None})}
    return schema


def unknown_keys(user: Mapping[str, Any]) -> list[str]:
    """Every key of a user's config that prismcache does not know, as a path
    (``categories.code.treshold``, ``server.tenants[0].kee``), in file order.

    >>> unknown_keys({"categories": {"code": {"treshold": 0.9}}, "economics": {"windw": 5}})
    ['categories.code.treshold', 'economics.windw']
    """
    found: list[str] = []
    _walk(user, _schema(user), "", found)
    return found


def _walk(value: Any, schema: Any, path: str, found: list[str]) -> None:
    if schema is None:
        return
    if isinstance(schema, _Items):
        for i, item in enumerate(value if isinstance(value, list) else ()):
            _walk(item, schema.of, f"{path}[{i}]", found)
    elif isinstance(value, Mapping):
        for key, sub in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(schema, _Each):
                _walk(sub, schema.of, where, found)
            elif key not in schema:
                found.append(where)
            else:
                _walk(sub, schema[key], where, found)


def _policy(name: str, data: Mapping[str, Any]) -> CategoryPolicy:
    if not isinstance(data, Mapping):
        raise ConfigError(f"categories.{name}: expected a mapping, got {type(data).__name__}")
    values = dict(data)
    if "ttl" in values:
        values["ttl"] = parse_duration(values["ttl"], key=f"categories.{name}.ttl")
    if "stale_if_error" in values:  # a duration; 0 is off
        window = values["stale_if_error"]
        window = None if window in (None, 0, "0") else parse_duration(
            window, key=f"categories.{name}.stale_if_error")
        values["stale_if_error"] = 0.0 if window is None else window.total_seconds()
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
    if unknown := unknown_keys(user):
        raise ConfigError("unknown keys (docs/configuration.md lists every key):\n  "
                          + "\n  ".join(unknown))
    raw = _merge(_builtin_defaults(), user)
    if "rules" in user:  # a user's rule list replaces the shipped one rather than merging
        raw["rules"] = user["rules"]

    base = raw.get("defaults") or {}
    categories = {
        name: _policy(name, _merge(base, spec or {}))
        for name, spec in (raw.get("categories") or {}).items()
    }
    capacity = _section(raw, "capacity")
    rules = []
    for i, spec in enumerate(raw.get("rules") or ()):
        spec = _section({f"rules[{i}]": spec}, f"rules[{i}]")
        rules.append(Rule(category=spec.get("category", ""),
                          keywords=tuple(spec.get("keywords") or ()), regex=spec.get("regex")))
    classifier = _section(raw, "classifier")
    limits = _section(raw, "limits")
    index = dict(_section(raw, "index"))
    index["max_bytes"] = parse_size(index.get("max_bytes"), key="index.max_bytes")
    if index["max_bytes"] is not None and raw.get("snapshot"):
        raise ConfigError("index.max_bytes loads partitions on demand; it cannot be combined "
                          "with snapshot (which holds every partition)")
    try:
        config = CacheConfig(
            store=str(raw.get("store", CacheConfig.store)),
            embedder=str(raw.get("embedder", CacheConfig.embedder)),
            capacity_entries=int(capacity.get("entries", CacheConfig.capacity_entries)),
            capacity_bytes=parse_size(capacity.get("bytes"), key="capacity.bytes"),
            default_category=str(raw.get("default_category", "general")),
            categories=categories,
            rules=tuple(rules),
            classifier=ClassifierConfig(**classifier),
            limits=RequestLimits(**limits),
            neighbours=int(raw.get("neighbours", CacheConfig.neighbours)),
            index=dict(index),
            snapshot=raw.get("snapshot"),
            prefilter=PrefilterConfig(**_section(raw, "prefilter")),
            server=dict(raw.get("server") or {}),
            sections={key: raw[key] for key in _PART_KEYS if key in raw},
        )
    except ValueError as exc:  # ConfigError is a ValueError too
        raise ConfigError(str(exc)) from None
    except TypeError as exc:  # a value of the wrong type reached a dataclass
        raise ConfigError(f"config: {exc}") from None
    _check_parts(config)
    return config


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__}")
    return value


def _check_parts(config: CacheConfig) -> None:
    """Validate the values of the sections optional parts own, so a bad ``economics:`` or
    ``adaptive:`` fails when the config loads, not when the part first reads it."""
    sections = config.sections
    if "economics" in sections:
        from prismcache.economics import EconomicsSettings

        EconomicsSettings.from_config(config)
        if isinstance(sections["economics"], Mapping) and sections["economics"].get("admission"):
            from prismcache.admission import Admission

            Admission.from_config(config)
    if "adaptive" in sections:
        from prismcache.adaptive import AdaptiveSettings

        AdaptiveSettings.from_config(config)
