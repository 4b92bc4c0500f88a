"""ART adapters, one module per method, and :func:`make_defence` to build one from a text spec."""

from __future__ import annotations

import ast
import inspect

from art_purifiers.base import PurifierPreprocessor
from art_purifiers.defences.dip import DIPDefendPreprocessor, DIPPreprocessor
from art_purifiers.defences.irad import IRADPreprocessor
from art_purifiers.defences.resampling import ResamplingPreprocessor

__all__ = [
    "DEFENCES",
    "DIPDefendPreprocessor",
    "DIPPreprocessor",
    "IRADPreprocessor",
    "ResamplingPreprocessor",
    "make_defence",
    "parse_defence_spec",
]

#: Defence names accepted by :func:`make_defence` and ``art-purifiers evaluate --defence``.
DEFENCES: dict[str, type[PurifierPreprocessor]] = {
    "resampling": ResamplingPreprocessor,
    "irad": IRADPreprocessor,
    "dip": DIPPreprocessor,
    "dipdefend": DIPDefendPreprocessor,
}


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_defence_spec(spec: str) -> tuple[str, dict]:
    """``"resampling:interpolation=nearest,magnitude=1.5"`` -> ``("resampling", {...})``."""
    name, _, arguments = spec.partition(":")
    kwargs = {}
    for item in filter(None, (part.strip() for part in arguments.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Defence argument {item!r} in {spec!r} is not of the form key=value.")
        kwargs[key.strip()] = _value(value.strip())
    return name.strip(), kwargs


def make_defence(spec: str, victim=None, **overrides) -> PurifierPreprocessor:
    """Build a defence from a spec string; ``overrides`` (e.g. ``device_type``) are added to its arguments, and
    ``victim`` is passed as ``classifier`` to defences that take the victim's decisions (DIP)."""
    name, kwargs = parse_defence_spec(spec)
    if name not in DEFENCES:
        raise ValueError(f"Unknown defence {name!r}; available: {sorted(DEFENCES)}.")
    cls = DEFENCES[name]
    parameters = inspect.signature(cls.__init__).parameters
    if "weights" in overrides and "weights" not in parameters:
        raise ValueError(f"Defence {name!r} has no weights.")
    if "classifier" in parameters:
        if victim is None:
            raise ValueError(f"Defence {name!r} needs the victim classifier.")
        overrides = {**overrides, "classifier": victim}
    return cls(**{**kwargs, **overrides})
