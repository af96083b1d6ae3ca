"""The effective policy of one lookup, resolved once, by one object passed to the cache.

A category's policy in force is the configured one (``defaults.yaml`` merged with the user's
file), adjusted by the live controllers the deployment runs:

1. **calibration** (:class:`~prismcache.calibration.Calibrator`, when a category sets
   ``target_precision``): the verifier cut-off learned from labelled traffic;
2. **load-adaptive** control (:class:`~prismcache.adaptive.AdaptivePolicy`, when the config
   has an ``adaptive:`` section): lower bounds and longer TTLs while the model is overloaded;
3. **economics** (:class:`~prismcache.economics.EconomicsTracker`): a category that does not
   pay for itself may be switched off (``economics.auto_disable``); a *shadow* lookup sees it
   switched on, to keep measuring it.

:meth:`PolicyResolver.resolve` applies them in that order. The cache calls it once per lookup
and once per store and passes the result down, so a policy cannot shift inside one decision.

>>> from prismcache.config import load_config
>>> resolver = PolicyResolver(load_config())
>>> resolver.resolve("code").threshold
0.95
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from prismcache.config import CacheConfig, CategoryPolicy

if TYPE_CHECKING:
    from prismcache.adaptive import AdaptivePolicy
    from prismcache.calibration import Calibrator
    from prismcache.economics import EconomicsTracker
    from prismcache.stores.base import DocumentStore

__all__ = ["PolicyResolver"]


class PolicyResolver:
    """Configured policies, then calibration, then load-adaptive control, then economics.

    Args:
        config: the cache's configuration (the configured policies).
        adaptive: the load-adaptive controller, or ``None`` for none.
        economics: the economics tracker, or ``None`` for none.
        calibration: the cut-offs learned from labels, or ``None`` for none.
    """

    def __init__(self, config: CacheConfig, *, adaptive: AdaptivePolicy | None = None,
                 economics: EconomicsTracker | None = None,
                 calibration: Calibrator | None = None) -> None:
        self.config = config
        self.adaptive = adaptive
        self.economics = economics
        self.calibration = calibration

    @classmethod
    def from_config(cls, config: CacheConfig, *, adaptive: AdaptivePolicy | None = None,
                    economics: EconomicsTracker | None = None,
                    labels: DocumentStore | None = None) -> PolicyResolver:
        """The resolver a config asks for: ``adaptive``, else load-adaptive control when the
        config has an ``adaptive:`` section; ``economics``, else a tracker built from the
        ``economics:`` section (which disables nothing unless ``auto_disable`` says so); and
        calibration from the labels in ``labels`` (a store) when a category sets
        ``target_precision``. Raises :class:`ConfigError` on bad sections."""
        from prismcache.adaptive import AdaptivePolicy, AdaptiveSettings
        from prismcache.economics import EconomicsSettings, EconomicsTracker

        if adaptive is None:
            settings = AdaptiveSettings.from_config(config)
            adaptive = None if settings is None else AdaptivePolicy.from_settings(settings)
        if economics is None:
            economics = EconomicsTracker(EconomicsSettings.from_config(config),
                                         config.categories)
        calibration = None
        if any(p.target_precision is not None for p in config.categories.values()):
            from prismcache.calibration import Calibrator
            calibration = Calibrator(config, labels)
            calibration.load()
        return cls(config, adaptive=adaptive, economics=economics, calibration=calibration)

    def resolve(self, category: str, model: str = "", *, shadow: bool = False) -> CategoryPolicy:
        """The policy in force for ``category`` on a request to ``model``. ``shadow``: ignore
        an economics switch-off (a shadow lookup measures what the category would do)."""
        policy = self.config.policy(category)
        if self.calibration is not None:
            policy = self.calibration(category, policy)
        if self.adaptive is not None:
            policy = self.adaptive(category, policy, model)
        if (self.economics is not None and not shadow and policy.enabled
                and self.economics.disabled(category)):
            policy = replace(policy, enabled=False)
        return policy

    def entry_cutoffs(self, tenant: str) -> Mapping[int, float] | None:
        """``tenant``'s per-entry cut-offs learned from labels
        (:meth:`~prismcache.calibration.Calibrator.entry_cutoffs`), for
        :func:`~prismcache.decision.decide`; ``None`` when there are none."""
        return None if self.calibration is None else self.calibration.entry_cutoffs(tenant)

    def forget(self, entry_ids: Iterable[int]) -> None:
        """Drop what was learned per entry about entries evicted or replaced."""
        if self.calibration is not None:
            self.calibration.forget(entry_ids)

    def __repr__(self) -> str:
        parts = [p for p, on in (("calibration", self.calibration), ("adaptive", self.adaptive),
                                 ("economics", self.economics)) if on]
        return f"PolicyResolver(configured{''.join(' + ' + p for p in parts)})"
