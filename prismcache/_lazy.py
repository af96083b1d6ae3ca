"""Backends named as ``"module:Attribute"`` and imported only when first used, so importing a
seam's package loads none of its backends' dependencies (used by ``embedders`` and
``verifiers``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports", "load"]


def load(target: str) -> Any:
    """The attribute ``target`` (``"package.module:Name"``) names, importing its module."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def lazy_exports(module: str, classes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports ``classes[name]`` on first access."""

    def __getattr__(name: str) -> Any:
        target = classes.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return load(target)

    return __getattr__
