"""AutoAttack in Croce & Hein's compositions, built explicitly from ART's attacks.

ART's own ``AutoAttack`` default list (APGD-CE, APGD-DLR, DeepFool, Square with 5 restarts) is not the
standard AutoAttack. :class:`StandardAutoAttack` runs, in order and each only on the points that are still
robust, the components of one of the reference implementation's versions:

- ``"standard"``: APGD-CE (untargeted, 100 iterations), APGD-T (targeted at the 9 highest-scoring wrong
  classes, 100 iterations each), FAB-T (same targets, 100 iterations each; our implementation, since ART has
  none) and Square (5000 queries);
- ``"rand"``, the version for randomized defences: APGD-CE and APGD-DLR (untargeted, 100 iterations each).
  The reference averages 20 gradient draws per step; here the expectation comes from the estimator (e.g. an
  :class:`~art_purifiers.deploy.EOTClassifier`), so the number of draws is the estimator's.

A point counts as broken when the estimator's ``predict`` misclassifies it and its perturbation is within ``eps``.

One deviation from the reference implementation, forced by ART 1.20 and documented in
``docs/evaluating.md``: APGD-T minimises the targeted cross-entropy, because ART's DLR loss has no
targeted form.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

from art_purifiers.evaluation.fab import FABTargeted
from art_purifiers.evaluation.norms import within_budget
from art_purifiers.evaluation.progress import load_progress, save_progress

logger = logging.getLogger(__name__)


class StandardAutoAttack:
    """AutoAttack's components (APGD-CE, APGD-T, FAB-T and Square by default) on an ART classifier, each on the
    points still robust.

    :param estimator: ART classifier to attack and to judge success with (its ``predict``).
    :param norm: ``np.inf`` or ``2``.
    :param eps: Perturbation budget (Python float, in input units, e.g. ``8/255``).
    :param n_iter: APGD iterations per run.
    :param n_target_classes: Target classes tried by APGD-T and FAB-T (the top-scoring wrong ones).
    :param square_queries: Query budget of the Square attack.
    :param batch_size: Batch size of the sub-attacks.
    :param verbose: Show ART's progress bars.
    :param seed: Seeds numpy's and torch's global generators (which ART's attacks draw from) before every step,
        from the seed and the step's number, so a resumed run draws what an uninterrupted one would.
    :param checkpoint: ``.npz`` file where progress is saved after every step (APGD-CE, each APGD-T and FAB-T
        target, Square); an interrupted run resumes from it. ``None``: no checkpoint.
    :param version: ``"standard"`` or ``"rand"`` (a key of :attr:`VERSIONS`).
    """

    #: The components each version runs, in order.
    VERSIONS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}

    def __init__(
        self,
        estimator,
        norm: float = np.inf,
        eps: float = 8 / 255,
        n_iter: int = 100,
        n_target_classes: int = 9,
        square_queries: int = 5000,
        batch_size: int = 128,
        verbose: bool = False,
        seed: int = 0,
        checkpoint: str | Path | None = None,
        version: str = "standard",
    ) -> None:
        if version not in self.VERSIONS:
            raise ValueError(f"version must be one of {tuple(self.VERSIONS)}, got {version!r}.")
        if norm not in (np.inf, 2):
            raise ValueError(f"norm must be np.inf or 2, got {norm!r}.")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}.")
        self.estimator = estimator
        self.norm = norm
        self.eps = float(eps)
        self.n_iter = int(n_iter)
        self.n_target_classes = int(n_target_classes)
        self.square_queries = int(square_queries)
        self.batch_size = int(batch_size)
        self.verbose = verbose
        self.seed = int(seed)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.version = version
        #: Number of points each component broke in the last :meth:`generate` call.
        self.broken_by: dict[str, int] = {}
        #: Seconds spent before the last :meth:`generate` call resumed from its checkpoint (0 without one).
        self.resumed_seconds = 0.0

    @property
    def components(self) -> tuple[str, ...]:
        """The components this version runs, in order."""
        return self.VERSIONS[self.version]

    @property
    def params(self) -> dict:
        return {
            "attack": "autoattack",
            "version": self.version,
            "components": list(self.components),
            "norm": "inf" if self.norm == np.inf else "2",
            "eps": self.eps,
            "n_iter": self.n_iter,
            "n_target_classes": self.n_target_classes,
            "square_queries": self.square_queries,
        }

    def _apgd(self, targeted: bool, loss_type: str = "cross_entropy") -> AutoProjectedGradientDescent:
        return AutoProjectedGradientDescent(
            self.estimator,
            norm=self.norm,
            eps=self.eps,
            eps_step=2 * self.eps,  # APGD's initial step, as in the reference implementation
            max_iter=self.n_iter,
            targeted=targeted,
            nb_random_init=1,
            batch_size=self.batch_size,
            loss_type=loss_type,
            verbose=self.verbose,
        )

    def _is_broken(self, x: np.ndarray, x_adv: np.ndarray, y: np.ndarray) -> np.ndarray:
        predicted = self.estimator.predict(x_adv, batch_size=self.batch_size).argmax(1)
        return (predicted != y) & within_budget(x, x_adv, self.norm, self.eps)

    def _steps(self, wrong: np.ndarray) -> list[tuple[str, object, np.ndarray | None]]:
        """``(component, attack, targets)`` in the order run; ``wrong[:, k]``: the k-th best wrong class."""
        if self.version == "rand":
            return [("apgd-ce", self._apgd(targeted=False), None),
                    ("apgd-dlr", self._apgd(targeted=False, loss_type="difference_logits_ratio"), None)]
        n_targets = min(self.n_target_classes, wrong.shape[1])
        apgd_t = self._apgd(targeted=True)
        fab_t = FABTargeted(self.estimator, norm=self.norm, n_iter=self.n_iter, batch_size=self.batch_size)
        square = SquareAttack(
            self.estimator, norm=self.norm, eps=self.eps, max_iter=self.square_queries, p_init=0.8,
            nb_restarts=1, batch_size=self.batch_size, verbose=self.verbose,
        )
        steps = [("apgd-ce", self._apgd(targeted=False), None)]
        steps += [("apgd-t", apgd_t, wrong[:, k]) for k in range(n_targets)]
        steps += [("fab-t", fab_t, wrong[:, k]) for k in range(n_targets)]
        steps.append(("square", square, None))
        return steps

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Adversarial examples for ``x`` (float32 NCHW) with integer labels ``y``; robust points keep ``x``."""
        x = x.astype(np.float32)
        y = np.asarray(y).astype(np.int64)
        nb_classes = self.estimator.nb_classes
        eye = np.eye(nb_classes, dtype=np.float32)
        x_adv = x.copy()
        logits = self.estimator.predict(x, batch_size=self.batch_size)
        robust = logits.argmax(1) == y
        self.broken_by = {}
        self.resumed_seconds = 0.0
        done = 0
        start = time.perf_counter()
        saved = load_progress(self.checkpoint, x)
        if saved is not None:
            x_adv, robust, done = _checked(saved, x)
            self.broken_by = json.loads(str(saved["broken_by"]))
            # Checkpoints written before the elapsed time was stored count from the resume.
            self.resumed_seconds = float(saved["seconds"]) if "seconds" in saved else 0.0
            logger.info("AutoAttack resumes after step %d from %s", done, self.checkpoint)

        def attempt(name: str, attack, targets: np.ndarray | None) -> None:
            index = np.flatnonzero(robust)
            if index.size == 0:
                return
            if isinstance(attack, FABTargeted):
                candidate = attack.generate(x[index], y[index], targets[index])
            else:
                labels = eye[y[index]] if targets is None else eye[targets[index]]
                candidate = attack.generate(x[index], y=labels)
            broken = self._is_broken(x[index], candidate, y[index])
            x_adv[index[broken]] = candidate[broken]
            robust[index[broken]] = False
            self.broken_by[name] = self.broken_by.get(name, 0) + int(broken.sum())

        ranked = np.argsort(-logits, axis=1)
        # Column k: the k-th highest-scoring class other than the true one.
        wrong = np.stack([row[row != label] for row, label in zip(ranked, y, strict=True)])
        steps = self._steps(wrong)
        for number, (name, attack, targets) in enumerate(steps):
            if number < done:
                continue
            np.random.seed(self.seed * 1000 + number)  # noqa: NPY002 (ART uses numpy's global generator)
            torch.manual_seed(self.seed * 1000 + number)
            attempt(name, attack, targets)
            save_progress(self.checkpoint, x, x_adv=x_adv, robust=robust, done=np.int64(number + 1),
                          broken_by=np.array(json.dumps(self.broken_by)),
                          seconds=np.float64(self.resumed_seconds + time.perf_counter() - start))
        logger.info("AutoAttack broke %s of %d points", self.broken_by, len(x))
        return x_adv


def _checked(saved: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """A checkpoint's adversarial examples (checked on load), robust mask and completed steps, after checking them
    against ``x``."""
    x_adv, robust, done = saved["x_adv"], saved["robust"], int(saved["done"])
    if robust.shape != (len(x),) or robust.dtype != bool or done < 0:
        raise ValueError("AutoAttack checkpoint: robust must be a boolean mask per image and done >= 0.")
    return x_adv, robust, done
