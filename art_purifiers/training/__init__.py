"""Builders of every weight file the package ships: one module per method on one framework
(:mod:`~art_purifiers.training.framework`), each registered in :data:`TRAINERS` for ``art-purifiers train``."""

from art_purifiers.training.dir import TRAINER as DIR_TRAINER
from art_purifiers.training.idfr import TRAINER as IDFR_TRAINER
from art_purifiers.training.irad import TRAINER as IRAD_TRAINER
from art_purifiers.training.registry import Trainer, TrainingJob, apply_overrides
from art_purifiers.training.victim_at import TRAINER as VICTIM_AT_TRAINER

#: ``{method: trainer}``, the methods of ``art-purifiers train``.
TRAINERS: dict[str, Trainer] = {trainer.method: trainer
                                for trainer in (IRAD_TRAINER, IDFR_TRAINER, DIR_TRAINER, VICTIM_AT_TRAINER)}

__all__ = ["TRAINERS", "Trainer", "TrainingJob", "apply_overrides"]
