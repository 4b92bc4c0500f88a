"""Attack recipes: a name plus settings, built on ART's attacks for a given classifier."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from art.attacks.evasion import DeepFool, FastGradientMethod, ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier

from art_purifiers.checks import check_integer, check_number
from art_purifiers.evaluation.autoattack import StandardAutoAttack
from art_purifiers.evaluation.decision import BudgetedHopSkipJump
from art_purifiers.evaluation.experiments import parse_budget
from art_purifiers.evaluation.losses import CWMarginLoss, with_loss
from art_purifiers.evaluation.names import ATTACKS, AUTOATTACKS
from art_purifiers.evaluation.norms import within_budget


def parse_eps(text: str | float, norm: str = "inf") -> float:
    """A budget or step size: text (``"8/255"`` -> 0.0313..., ``"0.5"`` -> 0.5; checked as
    :func:`~art_purifiers.evaluation.experiments.parse_budget` checks it) or a positive finite number."""
    if isinstance(text, str):
        return parse_budget("eps", text, norm)
    return check_number("eps", text, minimum=0, open_minimum=True)


def project_to_ball(x: np.ndarray, x_adv: np.ndarray, norm: float, eps: float) -> np.ndarray:
    """Project ``x_adv`` onto the ``eps``-ball around ``x`` (and ``[0, 1]``)."""
    delta = (x_adv - x).reshape(len(x), -1)
    if norm == np.inf:
        delta = np.clip(delta, -eps, eps)
    else:
        size = np.linalg.norm(delta, axis=1, keepdims=True)
        delta = delta * np.minimum(1.0, eps / np.maximum(size, 1e-12))
    return np.clip(x + delta.reshape(x.shape), 0.0, 1.0).astype(np.float32)


class _WithinBudget:
    """A minimal-perturbation attack (HopSkipJump) whose examples beyond the budget are replaced by the clean image:
    only successes within the budget count."""

    def __init__(self, attack, norm: str, eps: float) -> None:
        self.attack, self.norm, self.eps = attack, norm, eps

    def generate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        x_adv = self.attack.generate(x, y)
        kept = within_budget(x, x_adv, self.norm, self.eps)
        return np.where(kept[:, None, None, None], x_adv, x).astype(np.float32)


class _BudgetProjected:
    """A minimal-perturbation attack (DeepFool) whose result is projected onto the threat model's ball."""

    def __init__(self, attack, norm: float, eps: float) -> None:
        self.attack, self.norm, self.eps = attack, norm, eps

    def generate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        return project_to_ball(x, self.attack.generate(x, y=y), self.norm, self.eps)


@dataclass(frozen=True)
class AttackSpec:
    """An attack and its settings.

    :param name: One of :data:`ATTACKS`: AutoAttack (``autoattack``: the standard composition;
        ``autoattack-rand``: the version for randomized defences, APGD-CE and APGD-DLR), PGD, FGSM, BIM, MI-FGSM
        (PGD with momentum), C&W (PGD on the C&W margin loss within the budget), DeepFool (projected onto the
        budget) or HopSkipJump (predicted labels only; examples beyond the budget count as failures).
    :param norm: ``"inf"`` or ``"2"``.
    :param eps: Budget in input units (``[0, 1]`` pixels).
    :param steps: Iterations (PGD, BIM, MI-FGSM, C&W; APGD and FAB in AutoAttack; DeepFool).
    :param step_size: Step of PGD/BIM/MI-FGSM/C&W; ``None`` means ``eps / 4``.
    :param random_start: PGD and C&W start from a random point in the ball.
    :param momentum: Decay factor of MI-FGSM.
    :param queries: HopSkipJump's model queries per image, ``>= 1``.
    :param extra: Further keyword arguments of the underlying attack (e.g. ``square_queries`` for AutoAttack,
        ``kappa`` for C&W).
    """

    name: str = "autoattack"
    norm: str = "inf"
    eps: float = 8 / 255
    steps: int = 100
    step_size: float | None = None
    random_start: bool = True
    momentum: float = 1.0
    extra: dict = field(default_factory=dict)
    queries: int = 1000

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.name!r}.")
        if self.norm not in ("inf", "2"):
            raise ValueError(f"norm must be 'inf' or '2', got {self.norm!r}.")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps!r}.")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps!r}.")
        check_integer("queries", self.queries, minimum=1)

    @property
    def norm_value(self) -> float:
        """The norm as ART takes it (``np.inf`` or ``2``)."""
        return np.inf if self.norm == "inf" else 2

    def budget(self) -> tuple[str, float]:
        """``(norm, eps)``: the ball every adversarial example of this attack lies in."""
        return self.norm, self.eps

    def settings(self) -> dict:
        """The settings that define the attack (what the cache key and the table record)."""
        settings = asdict(self)
        if self.name == "hopskipjump":
            # Its own settings only: the seeded start and the query budget (steps and the PGD fields do not apply).
            return {"name": self.name, "norm": self.norm, "eps": self.eps, "queries": self.queries,
                    "extra": self.extra}
        settings.pop("queries")  # HopSkipJump's alone: the other attacks' settings (and cache keys) stay as they were
        if self.name in AUTOATTACKS:
            # Recorded (and part of cache keys): the steps run, each seeded from the seed and its number.
            settings["components"] = list(StandardAutoAttack.VERSIONS[AUTOATTACKS[self.name]])
            settings["seeding"] = "per step"
        if self.name in ("fgsm", "deepfool", *AUTOATTACKS):
            for unused in ("step_size", "random_start", "momentum"):
                settings.pop(unused)
        else:
            if self.name != "mifgsm":
                settings.pop("momentum")
            if self.name not in ("pgd", "cw"):
                settings.pop("random_start")
        if self.name == "fgsm":
            settings.pop("steps")
        return settings

    def label(self) -> str:
        """Row label, e.g. ``pgd-20 Linf eps=8/255``; settings that differ from the defaults are appended."""
        eps = Fraction(self.eps).limit_denominator(1000)
        if self.name == "hopskipjump":
            return f"hopskipjump-{self.queries}q L{self.norm} eps={eps}"
        steps = "" if self.name in ("fgsm", *AUTOATTACKS) else f"-{self.steps}"
        defaults = AttackSpec(self.name).settings()
        changed = {k: v for k, v in self.settings().items() if k not in ("name", "norm", "eps", "steps", "extra")
                   and v != defaults.get(k)}
        changed.update(self.extra)
        if self.name in AUTOATTACKS and self.steps != defaults["steps"]:
            changed["steps"] = self.steps
        if changed.get("step_size") is not None:
            changed["step_size"] = Fraction(changed["step_size"]).limit_denominator(1000)
        extra = " (" + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) + ")" if changed else ""
        return f"{self.name}{steps} L{self.norm} eps={eps}{extra}"

    def build(self, classifier: PyTorchClassifier, batch_size: int = 128, verbose: bool = False, seed: int = 0,
              checkpoint: str | Path | None = None):
        """The attack object for ``classifier``; it has ``generate(x, y) -> x_adv`` (``y``: labels).

        ``seed`` and ``checkpoint`` reach AutoAttack, which seeds and checkpoints each of its steps.
        """
        step = self.step_size if self.step_size is not None else self.eps / 4
        norm = self.norm_value
        if self.name == "hopskipjump":
            return _WithinBudget(self.hopskipjump(classifier, batch_size, verbose, seed, checkpoint), self.norm,
                                 self.eps)
        if self.name in AUTOATTACKS:
            return StandardAutoAttack(classifier, norm=norm, eps=self.eps, n_iter=self.steps, batch_size=batch_size,
                                      verbose=verbose, seed=seed, checkpoint=checkpoint,
                                      version=AUTOATTACKS[self.name], **self.extra)
        if self.name == "fgsm":
            return FastGradientMethod(classifier, norm=norm, eps=self.eps, batch_size=batch_size)
        if self.name == "deepfool":
            deepfool = DeepFool(classifier, max_iter=self.steps, batch_size=batch_size, verbose=verbose, **self.extra)
            return _BudgetProjected(deepfool, norm, self.eps)
        if self.name == "cw":
            classifier = with_loss(classifier, CWMarginLoss(**self.extra))
        # BIM and MI-FGSM are PGD without random start (MI-FGSM with momentum); ART's own BIM is Linf-only.
        decay = self.momentum if self.name == "mifgsm" else None
        random_start = self.random_start and self.name in ("pgd", "cw")
        return ProjectedGradientDescent(
            classifier, norm=norm, eps=self.eps, eps_step=step, max_iter=self.steps, decay=decay,
            num_random_init=int(random_start), batch_size=batch_size, verbose=verbose,
        )

    def hopskipjump(self, classifier: PyTorchClassifier, batch_size: int = 128, verbose: bool = False, seed: int = 0,
                    checkpoint: str | Path | None = None) -> BudgetedHopSkipJump:
        """HopSkipJump at this spec's norm and query budget, its examples unbounded (the smallest perturbation
        found; :meth:`build` keeps only those within ``eps``). ``extra`` goes to
        :class:`~art_purifiers.evaluation.decision.BudgetedHopSkipJump` (``init_eval``, ``init_size``)."""
        return BudgetedHopSkipJump(classifier, norm=self.norm_value, eps=self.eps, max_queries=self.queries,
                                   batch_size=batch_size, seed=seed, verbose=verbose, checkpoint=checkpoint,
                                   **self.extra)
