"""Defence specs (``NAME[:key=value,...]``) parsed and checked without importing torch or ART, so that the command
line refuses a bad ``--defence`` at once: names come from the method registry (:mod:`art_purifiers.methods`),
parameters from the adapters' own source (their ``__init__``), read without importing them. The full check, against
the imported classes, runs when defences are built (:func:`art_purifiers.defences.make_defence`)."""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ARTLayout:
    """How one of ART's preprocessors takes images."""

    #: ``"argument"``: the class takes ``channels_first``; ``"last"``: it expects NHWC; ``"any"``: elementwise.
    layout: str
    #: Whether the class draws random numbers (from numpy's global generator).
    randomized: bool = False


#: The ART preprocessors that purify images in place (same shape in and out), by class name, accepted as
#: ``art:CLASS`` (their options are checked when they are built, by :mod:`art_purifiers.defences.art`).
ART_DEFENCES = {
    "JpegCompression": ARTLayout("argument"),
    "FeatureSqueezing": ARTLayout("any"),
    "SpatialSmoothing": ARTLayout("argument"),
    "TotalVarMin": ARTLayout("last", randomized=True),
}


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_defence_spec(spec: str) -> tuple[str, dict]:
    """``"resampling:interpolation=nearest,magnitude=1.5"`` -> ``("resampling", {...})``;
    ``"art:JpegCompression:quality=75"`` -> ``("art", {"preprocessor": "JpegCompression", "quality": 75})``."""
    name, _, arguments = spec.partition(":")
    kwargs = {}
    if name.strip() == "art":
        preprocessor, _, arguments = arguments.partition(":")
        kwargs["preprocessor"] = preprocessor.strip()
    for item in filter(None, (part.strip() for part in arguments.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Defence argument {item!r} in {spec!r} is not of the form key=value.")
        kwargs[key.strip()] = _value(value.strip())
    return name.strip(), kwargs


def _module_source(module: str) -> ast.Module | None:
    """The parsed source of a submodule of an imported package, found without importing the submodule (``None``
    when there is no such ``.py`` file)."""
    package, _, rest = module.partition(".")
    spec = importlib.util.find_spec(package)
    if not rest or spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location, *rest.split("."))
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                return ast.parse(candidate.read_text(encoding="utf-8"))
    return None


def _init_arguments(tree: ast.Module | None, class_name: str) -> tuple[set[str], bool] | None:
    """``(named arguments, takes **kwargs)`` of the ``__init__`` that class ``class_name`` defines itself."""
    for node in tree.body if tree is not None else ():
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    arguments = item.args
                    names = {a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)}
                    return names - {"self"}, arguments.kwarg is not None
    return None


def source_parameters(reference) -> set[str] | None:
    """The parameters a ``"module:Class"`` adapter takes, read from its source without importing it (torch, ART):
    its own ``__init__``'s named arguments, and the shared options of
    :class:`~art_purifiers.base.PurifierPreprocessor` when it takes ``**kwargs`` (as
    :func:`art_purifiers.defences.check_defence_spec` counts them). ``None`` when the source does not say (an
    object, a function, a class without an ``__init__`` of its own): the imported adapter decides then."""
    if not isinstance(reference, str):
        return None
    module, _, name = reference.partition(":")
    found = _init_arguments(_module_source(module), name)
    if found is None:
        return None
    names, variadic = found
    if variadic:
        base = _init_arguments(_module_source("art_purifiers.base"), "PurifierPreprocessor")
        names |= base[0] if base else set()
    return names


def check_spec(spec: str) -> None:
    """Refuse a spec whose name is neither a registered method with an adapter nor ``art:`` with one of
    :data:`ART_DEFENCES`, or whose parameters the adapter does not take. Names and parameters are read from the
    registry and the adapter's source, without torch or ART; an adapter whose source does not say (a program's own
    method, registered as an object) is imported and checked by :func:`art_purifiers.defences.check_defence_spec`.
    ``art:`` options are checked when the preprocessor is built.

    :raises ValueError: An unknown name or parameter, named in the message.
    """
    from art_purifiers.methods import registered_methods

    name, kwargs = parse_defence_spec(spec)
    adapters = {key: method.adapter for key, method in registered_methods().items() if method.adapter is not None}
    if name == "art":
        if kwargs["preprocessor"] not in ART_DEFENCES:
            raise ValueError(f"ART preprocessor must be one of {sorted(ART_DEFENCES)}, "
                             f"got {kwargs['preprocessor']!r}.")
        return
    if name not in adapters:
        raise ValueError(f"Unknown defence {name!r}; available: {sorted(adapters)} and art:{sorted(ART_DEFENCES)}.")
    accepted = source_parameters(adapters[name])
    if accepted is None:
        from art_purifiers.defences import check_defence_spec

        check_defence_spec(spec)
        return
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"Unknown parameter(s) {unknown} for defence {name!r}; its parameters: {sorted(accepted)}.")
