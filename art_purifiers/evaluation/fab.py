"""Targeted Fast Adaptive Boundary attack (FAB-T; Croce & Hein, ICML 2020), on any ART classifier.

ART 1.20 has no FAB, which standard AutoAttack needs. Each iteration linearises the margin
``g(z) = f_t(z) - f_y(z)`` at the current point, projects both the current point and the original input onto
that hyperplane (intersected with the input box) under the attack's norm, steps to a convex combination
biased towards the original input, and, once adversarial, steps back towards the original input. The
projections are solved by bisection on their one-dimensional dual, which is exact up to float precision.
Margin gradients come from the estimator itself (one backward pass of :class:`LogitContrast` through it), so
preprocessing defences (exact or BPDA) are part of the attacked function.

| Paper link: https://arxiv.org/abs/1907.02044
"""

from __future__ import annotations

import numpy as np
from art.estimators.classification import PyTorchClassifier

from art_purifiers.evaluation.losses import LogitContrast, with_loss
from art_purifiers.evaluation.norms import perturbation_size

_BISECTION_STEPS = 40


def _project_linf(p: np.ndarray, w: np.ndarray, c: np.ndarray, low: float, high: float) -> np.ndarray:
    """Smallest-Linf ``delta`` (rows) with ``w . delta >= c`` and ``low <= p + delta <= high``, or the largest
    achievable move when the box makes ``c`` unreachable. ``p, w``: ``(n, d)``; ``c``: ``(n,)``, ``>= 0``."""
    room = np.where(w > 0, high - p, p - low)  # how far each coordinate can move in the useful direction
    sign = np.sign(w)
    weight = np.abs(w)

    def gain(r: np.ndarray) -> np.ndarray:
        return (weight * np.minimum(r[:, None], room)).sum(1)

    lo = np.zeros(len(p), dtype=p.dtype)
    hi = room.max(1) if room.size else lo.copy()
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        reached = gain(mid) >= c
        hi = np.where(reached, mid, hi)
        lo = np.where(reached, lo, mid)
    return sign * np.minimum(hi[:, None], room)


def _project_l2(p: np.ndarray, w: np.ndarray, c: np.ndarray, low: float, high: float) -> np.ndarray:
    """Smallest-L2 ``delta`` with ``w . delta >= c`` in the box: ``delta = clip(lam * w)`` for the smallest
    ``lam >= 0`` reaching ``c`` (the box's full move when unreachable)."""
    lower, upper = low - p, high - p

    def move(lam: np.ndarray) -> np.ndarray:
        return np.clip(lam[:, None] * w, lower, upper)

    lo = np.zeros(len(p), dtype=p.dtype)
    hi = np.ones(len(p), dtype=p.dtype)
    for _ in range(60):  # grow the bracket until it reaches c (or stops changing, i.e. the box is saturated)
        short = ((w * move(hi)).sum(1) < c) & (hi < 1e12)
        if not short.any():
            break
        hi = np.where(short, hi * 4, hi)
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        reached = (w * move(mid)).sum(1) >= c
        hi = np.where(reached, mid, hi)
        lo = np.where(reached, lo, mid)
    return move(hi)


def project_to_hyperplane(
    p: np.ndarray, w: np.ndarray, b: np.ndarray, norm: float, low: float = 0.0, high: float = 1.0
) -> np.ndarray:
    """Minimal-norm move from each row of ``p`` onto ``{z : w . z + b = 0}`` inside ``[low, high]^d``.

    :param p: Points ``(n, d)``.
    :param w: Normals ``(n, d)``.
    :param b: Offsets ``(n,)``.
    :param norm: ``np.inf`` or ``2``.
    :return: ``delta`` ``(n, d)`` such that ``p + delta`` lies on the hyperplane (or as close as the box allows).
    """
    value = (w * p).sum(1) + b
    flip = np.where(value > 0, -1.0, 1.0).astype(p.dtype)  # move so that w . delta = -value
    w_signed = w * flip[:, None]
    c = np.abs(value)
    project = _project_linf if norm == np.inf else _project_l2
    return project(p, w_signed, c, low, high)


class FABTargeted:
    """FAB-T for one target class per point.

    :param estimator: ART PyTorch classifier returning logits.
    :param norm: ``np.inf`` or ``2``.
    :param n_iter: Iterations per target.
    :param eta: Overshoot of the projection step (paper: 1.05).
    :param beta: Backward step towards the original once adversarial (paper: 0.9).
    :param alpha_max: Largest weight of the original input's projection (paper: 0.1).
    """

    def __init__(self, estimator: PyTorchClassifier, norm: float = np.inf, n_iter: int = 100, eta: float = 1.05,
                 beta: float = 0.9, alpha_max: float = 0.1, batch_size: int = 128) -> None:
        if norm not in (np.inf, 2):
            raise ValueError(f"norm must be np.inf or 2, got {norm!r}.")
        self.estimator = estimator
        self._contrast = with_loss(estimator, LogitContrast())
        self.norm = norm
        self.n_iter = int(n_iter)
        self.eta = eta
        self.beta = beta
        self.alpha_max = alpha_max
        self.batch_size = batch_size

    def _margin_and_gradient(self, x: np.ndarray, y: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = self.estimator.predict(x, batch_size=self.batch_size)
        rows = np.arange(len(x))
        margin = logits[rows, t] - logits[rows, y]
        eye = np.eye(logits.shape[1], dtype=np.float32)
        gradient = np.concatenate([
            self._contrast.loss_gradient(x[i : i + self.batch_size], eye[t[i : i + self.batch_size]]
                                         - eye[y[i : i + self.batch_size]])
            for i in range(0, len(x), self.batch_size)
        ])
        return margin, gradient.reshape(len(x), -1)

    def generate(self, x: np.ndarray, y: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Smallest adversarial example found per point (targeted at ``targets``); ``x`` where none was found.

        :param x: ``(n, C, H, W)`` float32.
        :param y: True labels ``(n,)``.
        :param targets: Target labels ``(n,)``.
        """
        low, high = (0.0, 1.0) if self.estimator.clip_values is None else map(float, self.estimator.clip_values)
        shape = x.shape
        origin = x.reshape(len(x), -1).astype(np.float32)
        current = origin.copy()
        best = origin.copy()
        best_size = np.full(len(x), np.inf)
        for _ in range(self.n_iter):
            margin, w = self._margin_and_gradient(current.reshape(shape), y, targets)
            # Hyperplane through the linearisation at `current`: w . z + b = 0.
            b = margin - (w * current).sum(1)
            to_current = project_to_hyperplane(current, w, b, self.norm, low, high)
            to_origin = project_to_hyperplane(origin, w, b, self.norm, low, high)
            n_cur, n_orig = perturbation_size(to_current, self.norm), perturbation_size(to_origin, self.norm)
            alpha = np.minimum(n_cur / np.maximum(n_cur + n_orig, 1e-12), self.alpha_max)[:, None]
            current = np.clip(
                (1 - alpha) * (current + self.eta * to_current) + alpha * (origin + self.eta * to_origin), low, high
            ).astype(np.float32)
            predicted = self.estimator.predict(current.reshape(shape), batch_size=self.batch_size).argmax(1)
            adversarial = predicted == targets
            size = perturbation_size(current - origin, self.norm)
            improved = adversarial & (size < best_size)
            best[improved], best_size[improved] = current[improved], size[improved]
            # Once adversarial, step back towards the original input to shrink the perturbation.
            current[adversarial] = ((1 - self.beta) * origin + self.beta * current)[adversarial]
        return best.reshape(shape)
