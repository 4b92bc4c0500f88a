"""Attack recipes: a name plus settings, built on ART's attacks for a given classifier."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np
from art.attacks.evasion import BasicIterativeMethod, FastGradientMethod, ProjectedGradientDescent

from art_purifiers.evaluation.autoattack import StandardAutoAttack

ATTACKS = ("autoattack", "pgd", "fgsm", "bim", "mifgsm")


def parse_eps(text: str | float) -> float:
    """``"8/255"`` -> 0.0313..., ``"0.5"`` -> 0.5."""
    return float(Fraction(text)) if isinstance(text, str) else float(text)


@dataclass(frozen=True)
class AttackSpec:
    """An attack and its settings.

    :param name: One of :data:`ATTACKS`.
    :param norm: ``"inf"`` or ``"2"``.
    :param eps: Budget in input units (``[0, 1]`` pixels).
    :param steps: Iterations of iterative attacks (PGD, BIM, MI-FGSM; APGD for AutoAttack).
    :param step_size: Step of PGD/BIM/MI-FGSM; ``None`` means ``eps / 4``.
    :param random_start: PGD starts from a random point in the ball.
    :param momentum: Decay of MI-FGSM.
    """

    name: str = "autoattack"
    norm: str = "inf"
    eps: float = 8 / 255
    steps: int = 100
    step_size: float | None = None
    random_start: bool = True
    momentum: float = 1.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.name!r}.")
        if self.norm not in ("inf", "2"):
            raise ValueError(f"norm must be 'inf' or '2', got {self.norm!r}.")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps!r}.")

    @property
    def norm_value(self) -> float:
        return np.inf if self.norm == "inf" else 2

    def settings(self) -> dict:
        """The settings that define the attack (what the cache key and the table record)."""
        settings = asdict(self)
        if self.name == "autoattack":
            for unused in ("step_size", "random_start", "momentum"):
                settings.pop(unused)
        return settings

    def label(self) -> str:
        eps = Fraction(self.eps).limit_denominator(1000)
        return f"{self.name} L{self.norm} eps={eps}"

    def build(self, classifier, batch_size: int = 128, verbose: bool = False):
        """The attack object for ``classifier``; it has ``generate(x, y) -> x_adv``."""
        step = self.step_size if self.step_size is not None else self.eps / 4
        common = {"norm": self.norm_value, "eps": self.eps, "batch_size": batch_size}
        if self.name == "autoattack":
            return StandardAutoAttack(classifier, n_iter=self.steps, verbose=verbose, **common, **self.extra)
        if self.name == "fgsm":
            return FastGradientMethod(classifier, **common)
        if self.name == "bim":
            return BasicIterativeMethod(classifier, eps=self.eps, eps_step=step, max_iter=self.steps,
                                        batch_size=batch_size, verbose=verbose)
        decay = self.momentum if self.name == "mifgsm" else None
        return ProjectedGradientDescent(
            classifier, eps_step=step, max_iter=self.steps, num_random_init=int(self.random_start and decay is None),
            decay=decay, verbose=verbose, **common,
        )
