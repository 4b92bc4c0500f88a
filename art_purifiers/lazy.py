"""Lazy package attributes (PEP 562), so that ``import art_purifiers`` and the command line's argument checks do not
import torch and ART before they are needed."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def resolve(reference):
    """The object a reference names: ``"module:attribute"`` is imported; anything else is the object itself."""
    if not isinstance(reference, str):
        return reference
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def lazy_exports(package: str, exports: Mapping[str, str] | Callable[[], Mapping[str, object]]):
    """A module ``__getattr__`` that imports ``name`` on first access from its entry in ``exports``: a module path
    (the attribute is ``name``), a ``"module:attribute"`` reference or the object itself. ``exports`` may be a
    function returning the table, read on each access (for names registered after the import)."""

    def table() -> Mapping[str, object]:
        return exports() if callable(exports) else exports

    def __getattr__(name: str):
        entries = table()
        if name not in entries:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = entries[name]
        if isinstance(target, str) and ":" not in target:
            target = f"{target}:{name}"
        return resolve(target)

    return __getattr__
