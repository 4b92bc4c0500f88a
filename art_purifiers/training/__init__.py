"""Builders of every weight file the package ships: one module per method on one framework
(:mod:`~art_purifiers.training.framework`), each registered in :data:`TRAINERS` for ``art-purifiers train``."""

from art_purifiers.training import idfr, irad
from art_purifiers.training.registry import Trainer, TrainingJob, apply_overrides

#: ``{method: trainer}``, the methods of ``art-purifiers train``.
TRAINERS: dict[str, Trainer] = {trainer.method: trainer for trainer in (irad.TRAINER, idfr.TRAINER)}

__all__ = ["TRAINERS", "Trainer", "TrainingJob", "apply_overrides"]
