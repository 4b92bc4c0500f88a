"""Builders of every weight file the package ships: one module per method on one framework
(:mod:`~art_purifiers.training.framework`), each registered with its method
(:func:`~art_purifiers.methods.register_method`) and listed in :data:`TRAINERS` for ``art-purifiers train``."""

from collections.abc import Mapping

from art_purifiers.methods import RegisteredObjects
from art_purifiers.training.registry import Trainer, TrainingJob, apply_overrides

#: ``{method: trainer}``, the methods of ``art-purifiers train``: a live, read-only view of the registered methods
#: that have a trainer; each trainer's module is imported when it is first looked up.
TRAINERS: Mapping[str, Trainer] = RegisteredObjects("trainer")

__all__ = ["TRAINERS", "Trainer", "TrainingJob", "apply_overrides"]
