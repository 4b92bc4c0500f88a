"""ART adapters, one module per method, and :func:`make_defence` to build any defence from a text spec.

The adapters of the registered methods (:mod:`art_purifiers.methods`) are importable from here, each imported when
first used."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

from art_purifiers import methods
from art_purifiers.base import PurifierPreprocessor
from art_purifiers.defences.art import ART_DEFENCES, ARTPreprocessor
from art_purifiers.deploy import Defence
from art_purifiers.lazy import lazy_exports
from art_purifiers.specs import parse_defence_spec

_OWN = ["ART_DEFENCES", "DEFENCES", "ARTPreprocessor", "check_defence_spec", "make_defence", "parse_defence_spec"]
_lazy = lazy_exports(__name__, methods.exports)


def __getattr__(name: str):
    if name == "__all__":  # the adapters of methods registered after the import too
        return [*_OWN, *methods.exports()]
    return _lazy(name)


#: Defence names accepted by :func:`make_defence` and ``art-purifiers evaluate --defence``: a live, read-only view
#: ``{name: class or factory returning a Defence}`` of the methods registered with an adapter
#: (:func:`~art_purifiers.methods.register_method`). ``art:NAME`` specs build an :class:`ARTPreprocessor`.
DEFENCES: Mapping[str, Callable[..., Defence]] = methods.RegisteredObjects("adapter")
_BASE_OPTIONS = set(inspect.signature(PurifierPreprocessor.__init__).parameters) - {"self"}


def _art_defence(preprocessor: str = "", **kwargs) -> ARTPreprocessor:
    base = {key: value for key, value in kwargs.items() if key in _BASE_OPTIONS}
    options = {key: value for key, value in kwargs.items() if key not in _BASE_OPTIONS}
    return ARTPreprocessor(preprocessor, options=options, **base)


def _resolve(spec: str) -> tuple[str, Callable[..., Defence], dict, set[str]]:
    """``(name, factory, arguments, accepted parameter names)`` of a spec; unknown names and parameters raise."""
    name, kwargs = parse_defence_spec(spec)
    if name == "art":
        return name, _art_defence, kwargs, {"preprocessor", *_BASE_OPTIONS, *kwargs}
    if name not in DEFENCES:
        raise ValueError(f"Unknown defence {name!r}; available: {sorted(DEFENCES)} and art:{sorted(ART_DEFENCES)}.")
    factory = DEFENCES[name]
    parameters = inspect.signature(factory.__init__ if inspect.isclass(factory) else factory).parameters
    variadic = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    accepted = {key for key, p in parameters.items() if key != "self" and p.kind not in variadic}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        accepted |= _BASE_OPTIONS  # passed on through **kwargs (to a purifier's base options)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"Unknown parameter(s) {unknown} for defence {name!r}; its parameters: {sorted(accepted)}.")
    return name, factory, kwargs, accepted


def check_defence_spec(spec: str) -> None:
    """Raise ``ValueError`` for a spec naming an unknown defence or parameter, without building anything."""
    _resolve(spec)


def make_defence(spec: str, victim=None, **overrides) -> Defence:
    """Build a defence from a spec string (``NAME[:key=value,...]`` or ``art:CLASS[:key=value,...]``).

    ``overrides`` (e.g. ``device_type``, ``weights``, ``verbose``) are added to the arguments of defences that take
    them (``verbose`` only where the spec does not set it), and
    ``victim`` is passed as ``classifier`` to defences that take the victim's decisions (DIP).

    :raises ValueError: Unknown defence or parameter, or a parameter the defence refuses.
    """
    name, factory, kwargs, accepted = _resolve(spec)
    if "weights" in overrides and "weights" not in accepted:
        raise ValueError(f"Defence {name!r} has no weights.")
    if "classifier" in accepted:
        if victim is None:
            raise ValueError(f"Defence {name!r} needs the victim classifier.")
        overrides = {**overrides, "classifier": victim}
    # A progress setting in the spec (dip:verbose=False) wins over the caller's.
    return factory(**kwargs, **{k: v for k, v in overrides.items()
                                if k in accepted and not (k == "verbose" and k in kwargs)})
