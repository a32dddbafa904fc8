"""Lazy package exports (PEP 562): a package names what it exports and where each name lives, and
a submodule is imported only when one of its names is first used.

This keeps ``import bindu_pipelines.canary.policy`` (or ``.optimization.gate``) from loading the
package's heavier modules, Dagster among them, just because the package ``__init__`` runs first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package exporting ``exports`` lazily.

    ``namespace`` is the package's ``globals()``; ``exports`` maps each exported name to the
    submodule, relative to the package, that defines it. A name is imported on first use and then
    kept in the package's namespace, so later lookups no longer reach ``__getattr__``.

    Use at the end of a package ``__init__``::

        __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
