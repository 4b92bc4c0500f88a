"""Lazy package attributes (PEP 562), so that ``import art_purifiers`` and the command line's argument checks do not
import torch and ART before they are needed."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) on first access of ``name``."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
