"""Perturbation sizes, shared by the attacks that judge or keep adversarial examples by their budget."""

from __future__ import annotations

import numpy as np

#: Relative slack on the budget: float32 projections land a rounding error above ``eps``.
BUDGET_TOLERANCE = 1e-4


def perturbation_size(delta: np.ndarray, norm: float | str) -> np.ndarray:
    """L-inf or L2 size of each perturbation in ``delta`` ``(n, ...)``; ``norm``: ``np.inf``/``"inf"`` or
    ``2``/``"2"``."""
    flat = delta.reshape(len(delta), -1)
    return np.abs(flat).max(1) if norm in (np.inf, "inf") else np.linalg.norm(flat, axis=1)


def within_budget(x: np.ndarray, x_adv: np.ndarray, norm: float | str, eps: float) -> np.ndarray:
    """Boolean mask ``(n,)`` of the points of ``x_adv`` whose perturbation from ``x`` is at most ``eps``."""
    return perturbation_size(x_adv - x, norm) <= eps * (1 + BUDGET_TOLERANCE)
