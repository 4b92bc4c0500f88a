"""Trainers register here: their presets, their own options and one ``run`` function, so that
``art-purifiers train METHOD --preset P [--set key=value ...]`` works for every method the same way."""

from __future__ import annotations

import ast
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from art_purifiers.checks import check_integer, check_number
from art_purifiers.training.framework import check_precision

_LOG = logging.getLogger(__name__)
#: Settings renamed to one word per idea (docs/glossary.md), ``{old: new}``: ``--set OLD=V`` still sets NEW, with a
#: warning, so commands written before the renaming keep their meaning.
RENAMED_SETTINGS = {"pgd_steps": "pgd_iterations", "pgd_step": "pgd_step_size", "attack_step": "attack_step_size"}


@dataclass(frozen=True)
class RunSettings:
    """Settings every trainer with a held-out validation set shares (its configuration subclasses this)."""

    #: The last ``validation_images`` training images are held out and scored by the validation hook.
    validation_images: int = 500
    #: Run the validation hook every this many steps (0: never).
    validate_every: int = 0
    seed: int = 0
    checkpoint_every: int = 500
    #: Use only the first ``images`` training images (``None``: all of them).
    images: int | None = None
    #: ``fp32``, ``tf32`` or ``bf16`` (:data:`~art_purifiers.training.framework.PRECISIONS`).
    precision: str = "fp32"
    extra: dict = field(default_factory=dict)

    def _check_run_settings(self) -> None:
        for name in ("validation_images", "validate_every", "seed"):
            check_integer(name, getattr(self, name), minimum=0)
        check_integer("checkpoint_every", self.checkpoint_every, minimum=1)
        if self.images is not None:
            check_integer("images", self.images, minimum=1)
        check_precision(self.precision)


@dataclass
class TrainingJob:
    """What the command line hands a trainer besides its configuration.

    :param x: Training images, float32 ``(N, 3, H, W)`` in ``[0, 1]`` (never test images).
    :param y: Their labels ``(N,)``.
    :param out_dir: Folder for caches, checkpoints, the log and the report.
    :param device: ``"cpu"``, ``"cuda"``, ``"cuda:K"`` (one process only) or ``None`` (CUDA when available).
    :param export: Where to write the weights when done (``.safetensors``), or ``None``.
    :param command: The command that started the run (recorded with the weights).
    :param options: The trainer's own options (e.g. IRAD's ``source``), as strings.
    """

    x: np.ndarray
    y: np.ndarray
    out_dir: Path
    device: str | None = None
    export: Path | None = None
    command: str = ""
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Trainer:
    """A method's trainer.

    :param method: The name after ``art-purifiers train``.
    :param summary: One line for ``--help``.
    :param presets: ``{name: configuration}``; configurations are frozen dataclasses that check themselves.
    :param run: ``run(config, job) -> report`` trains, writes ``job.export`` when set and returns a JSON-able report.
    :param options: The trainer's own string options, ``{name: (default, help)}``.
    :param renamed_presets: Former preset names, ``{old: new}``: ``--preset OLD`` still means NEW, with a warning,
        so commands written before the renaming keep their meaning.
    """

    method: str
    summary: str
    presets: Mapping[str, object]
    run: Callable[[object, TrainingJob], dict]
    options: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    renamed_presets: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.renamed_presets) & set(self.presets) or not set(self.renamed_presets.values()) <= set(self.presets):
            raise ValueError(f"{self.method}: renamed_presets must map former names to presets, got "
                             f"{dict(self.renamed_presets)}.")

    @property
    def default_preset(self) -> str:
        return next(iter(self.presets))

    def preset_name(self, name: str) -> str:
        """The preset ``name`` means: itself, or the new name of a renamed preset (with a warning).

        :raises ValueError: ``name`` is no preset of this trainer.
        """
        if name in self.renamed_presets:
            _LOG.warning("--preset %s is deprecated; it is %s now (the CPU preset of every trainer, see the glossary).",
                         name, self.renamed_presets[name])
            return self.renamed_presets[name]
        if name not in self.presets:
            raise ValueError(f"{self.method} has no preset {name!r}; presets: {list(self.presets)}.")
        return name


def provenance(report: dict, *extra: str) -> dict:
    """What a weight file records of the run that built it: command, machine, device, world size, precision, images,
    seconds and the trainer's ``extra`` report keys."""
    keys = ("command", "machine", "device", "world", "precision", "images", "seconds", *extra)
    return {key: report[key] for key in keys}


def configurable_fields(config) -> dict[str, object]:
    """The fields of a configuration that ``--set`` may change, with their values in ``config``."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "extra"}


def _coerce(name: str, text: str, current):
    value = text
    if not isinstance(current, str):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as error:
            raise ValueError(f"--set {name}={text}: not a Python literal.") from error
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"--set {name}: expected True or False, got {text!r}.")
        return value
    if isinstance(current, int):
        return check_integer(name, value)
    if isinstance(current, float):
        return check_number(name, value)
    if isinstance(current, tuple):
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"--set {name}: expected a tuple such as (1, 2), got {text!r}.")
        return tuple(value)
    return value


def apply_overrides(config, assignments: Sequence[str]):
    """``config`` with ``key=value`` assignments applied (values parsed as Python literals and checked against the
    field's current type); the configuration's own checks run on the result.

    :raises ValueError: An unknown key, a malformed assignment or a value of the wrong type or range.
    """
    fields = configurable_fields(config)
    changes = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set takes key=value, got {assignment!r}.")
        if key not in fields and RENAMED_SETTINGS.get(key) in fields:
            _LOG.warning("--set %s is deprecated; it sets %s (one word per idea, see the glossary).", key,
                         RENAMED_SETTINGS[key])
            key = RENAMED_SETTINGS[key]
        if key not in fields:
            raise ValueError(f"Unknown setting {key!r}; settings: {sorted(fields)}.")
        changes[key] = _coerce(key, text.strip(), fields[key])
    try:
        return dataclasses.replace(config, **changes)
    except TypeError as error:
        raise ValueError(f"Bad settings {changes}: {error}") from error
