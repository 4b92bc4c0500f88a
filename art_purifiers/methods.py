"""The one registry of methods. A method is its own files (network, adapter, trainer, docs page, tests) plus one
:func:`register_method` line; from these lines follow the names ``art-purifiers evaluate --defence`` and
``art-purifiers train`` accept, the parameter listing (read from the adapter's signature and docstring), the
package exports of :mod:`art_purifiers` and :mod:`art_purifiers.defences`, and the methods table of the docs.

The registry holds references (``"module:attribute"``), not objects, and imports nothing heavy itself, so that
``import art_purifiers`` and the command line's name checks stay free of torch and ART; a reference is imported
when its object is first needed. The built-in methods register at the end of this module, one line each, so that
their names are known without importing any adapter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from art_purifiers.lazy import resolve

#: Spec names that are not methods: ``art:CLASS`` wraps ART's preprocessors, ``none`` is the bare victim's row.
RESERVED_NAMES = frozenset({"art", "none"})
_NAME = re.compile(r"[a-z][a-z0-9_-]*\Z")
_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*\Z")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*\Z")
_PAGE = re.compile(r"[\w-]+(/[\w-]+)*\Z")


@dataclass(frozen=True)
class Method:
    """A registered method (see :func:`register_method` for the fields)."""

    name: str
    adapter: object = None
    trainer: object = None
    docs: str | None = None
    exports: tuple[str, ...] = ()

    def export_table(self) -> dict[str, object]:
        """``{public name: reference}`` of what :mod:`art_purifiers` exports for this method: the adapter under its
        own name and the ``exports`` of the adapter's module."""
        if self.adapter is None:
            return {}
        if not isinstance(self.adapter, str):
            return {getattr(self.adapter, "__name__", self.name): self.adapter}
        module, attribute = self.adapter.split(":")
        return {attribute: self.adapter, **{name: f"{module}:{name}" for name in self.exports}}

    def load_adapter(self):
        """The defence class (or factory returning a :class:`~art_purifiers.deploy.Defence`); imports its module."""
        return resolve(self.adapter)

    def load_trainer(self):
        """The :class:`~art_purifiers.training.registry.Trainer`; imports its module (and torch).

        :raises ValueError: The object is not a trainer, or it names another method.
        """
        from art_purifiers.training.registry import Trainer

        trainer = resolve(self.trainer)
        if not isinstance(trainer, Trainer) or trainer.method != self.name:
            raise ValueError(f"The trainer registered for method {self.name!r} must be a Trainer with "
                             f"method={self.name!r}, got {trainer!r}.")
        return trainer


_METHODS: dict[str, Method] = {}


def _check_reference(name: str, role: str, reference) -> None:
    if isinstance(reference, str) and not _REFERENCE.match(reference):
        raise ValueError(f"Method {name!r}: {role} must be 'module:attribute' or the object itself, "
                         f"got {reference!r}.")


def _check_method(method: Method) -> None:
    """Refuse a bad name, reference, docs page or export before the method is listed anywhere."""
    name = method.name
    if not isinstance(name, str) or not _NAME.match(name) or name in RESERVED_NAMES:
        raise ValueError(f"A method name is lower case letters, digits, '-' or '_' (not {sorted(RESERVED_NAMES)}), "
                         f"got {name!r}.")
    if method.adapter is None and method.trainer is None:
        raise ValueError(f"Method {name!r} needs an adapter, a trainer or both.")
    _check_reference(name, "adapter", method.adapter)
    _check_reference(name, "trainer", method.trainer)
    if method.docs is not None and (not isinstance(method.docs, str) or not _PAGE.match(method.docs)):
        raise ValueError(f"Method {name!r}: docs is a page of docs/ without suffix (e.g. 'defences/irad'), "
                         f"got {method.docs!r}.")
    if not all(isinstance(e, str) and _IDENTIFIER.match(e) for e in method.exports):
        raise ValueError(f"Method {name!r}: exports are Python names, got {method.exports!r}.")
    if method.exports and not isinstance(method.adapter, str):
        raise ValueError(f"Method {name!r}: exports come from the adapter's module, so the adapter must be a "
                         "'module:attribute' reference.")


def register_method(name: str, adapter=None, *, trainer=None, docs: str | None = None,
                    exports: tuple[str, ...] = ()) -> Method:
    """Register a method under ``name``; registering the same method again changes nothing.

    :param name: The name after ``--defence`` and ``art-purifiers train``: lower case letters, digits, ``-``, ``_``.
    :param adapter: The defence class or a factory returning a :class:`~art_purifiers.deploy.Defence`, as a
        ``"module:attribute"`` reference (imported when first used) or the object itself; ``None`` for a method that
        only trains (a victim).
    :param trainer: Its :class:`~art_purifiers.training.registry.Trainer` (whose ``method`` is ``name``), as a
        reference or the object; ``None`` for a method without training.
    :param docs: Its documentation page, relative to ``docs/`` and without suffix (``"defences/irad"``).
    :param exports: Further public names of the adapter's module that :mod:`art_purifiers` exports.
    :raises ValueError: A bad field, a name taken by another method, or an export another method has.
    """
    method = Method(name, adapter, trainer, docs, tuple(exports))
    _check_method(method)
    if _METHODS.get(name, method) != method:
        raise ValueError(f"A method named {name!r} is registered already ({_METHODS[name]}).")
    taken = {export: other.name for other in _METHODS.values() if other.name != name
             for export in other.export_table()}
    clashes = sorted(set(method.export_table()) & set(taken))
    if clashes:
        raise ValueError(f"Method {name!r} exports {clashes}, which method {taken[clashes[0]]!r} exports already.")
    _METHODS[name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove the method ``name`` (e.g. one a test registered).

    :raises KeyError: No such method.
    """
    if name not in _METHODS:
        raise KeyError(f"No method named {name!r}; registered: {sorted(_METHODS)}.")
    del _METHODS[name]


def registered_methods() -> dict[str, Method]:
    """``{name: method}`` in registration order (a copy)."""
    return dict(_METHODS)


def defence_names() -> list[str]:
    """Names of the methods with an adapter, in registration order (``--defence NAME``)."""
    return [name for name, method in _METHODS.items() if method.adapter is not None]


def trainer_names() -> list[str]:
    """Names of the methods with a trainer, in registration order (``art-purifiers train NAME``)."""
    return [name for name, method in _METHODS.items() if method.trainer is not None]


def exports() -> dict[str, object]:
    """``{public name: reference}`` of every method's exports (see :meth:`Method.export_table`)."""
    return {name: reference for method in _METHODS.values() for name, reference in method.export_table().items()}


class RegisteredObjects(Mapping):
    """A live, read-only view ``{method name: adapter}`` (``role="adapter"``) or ``{method name: trainer}``
    (``role="trainer"``) of the registry; each object is imported when first looked up."""

    def __init__(self, role: str) -> None:
        if role not in ("adapter", "trainer"):
            raise ValueError(f"role must be 'adapter' or 'trainer', got {role!r}.")
        self.role = role

    def _names(self) -> list[str]:
        return defence_names() if self.role == "adapter" else trainer_names()

    def __getitem__(self, name: str):
        if name not in self._names():
            raise KeyError(name)
        method = _METHODS[name]
        return method.load_adapter() if self.role == "adapter" else method.load_trainer()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:  # by name, without importing the object
        return name in self._names()

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"RegisteredObjects({self.role!r}: {self._names()})"


# The built-in methods, one line each.
register_method("resampling", "art_purifiers.defences.resampling:ResamplingPreprocessor", docs="defences/resampling")
register_method("irad", "art_purifiers.defences.irad:IRADPreprocessor", trainer="art_purifiers.training.irad:TRAINER",
                docs="defences/irad")
register_method("dip", "art_purifiers.defences.dip:DIPPreprocessor", docs="defences/dip")
register_method("dipdefend", "art_purifiers.defences.dip:DIPDefendPreprocessor", docs="defences/dip")
register_method("idfr", "art_purifiers.defences.idfr:IDFRDefence", trainer="art_purifiers.training.idfr:TRAINER",
                docs="defences/idfr", exports=("IDFRPreprocessor",))
register_method("dir", "art_purifiers.defences.dir:DIRPreprocessor", trainer="art_purifiers.training.dir:TRAINER",
                docs="defences/dir")
register_method("victim-at", trainer="art_purifiers.training.victim_at:TRAINER")
