"""HopSkipJump (Chen et al., 2020) under an exact per-image query budget.

ART's ``HopSkipJump`` has no query budget, only iteration counts. :class:`BudgetedHopSkipJump` counts every
sample the attack sends to ``predict`` and runs HopSkipJump one iteration at a time (ART's ``resume``) until
the next iteration's gradient estimate would exceed the budget.

| Paper link: https://arxiv.org/abs/1904.02144
"""

from __future__ import annotations

import copy

import numpy as np
from art.attacks.evasion import HopSkipJump
from tqdm.auto import tqdm

# ART's HopSkipJump.generate predicts the clean input and the initial adversarial once per call: bookkeeping,
# not attack queries, so they are not charged to the budget.
_BOOKKEEPING_QUERIES = 2


class _QueryCounter:
    def __init__(self, estimator) -> None:
        self.estimator = estimator
        self.count = 0

    def predict(self, x: np.ndarray, batch_size: int = 128, **kwargs) -> np.ndarray:
        self.count += len(x)
        return self.estimator.predict(x.astype(np.float32), batch_size=batch_size, **kwargs)


class BudgetedHopSkipJump:
    """Untargeted HopSkipJump with at most about ``max_queries`` model queries per image.

    :param estimator: ART classifier (only its ``predict`` is used).
    :param norm: ``np.inf`` or ``2``.
    :param eps: Budget for judging success (the attack itself minimises the perturbation).
    :param max_queries: Queries per image.
    :param init_eval: Initial number of gradient-estimation queries (ART's default 100).
    :param init_size: Random draws tried to find a starting adversarial.
    """

    def __init__(self, estimator, norm: float = 2, eps: float = 0.5, max_queries: int = 1000, init_eval: int = 100,
                 init_size: int = 100, batch_size: int = 128, verbose: bool = False) -> None:
        if max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {max_queries}.")
        self.estimator = estimator
        self.norm = norm
        self.eps = float(eps)
        self.max_queries = int(max_queries)
        self.init_eval = int(init_eval)
        self.init_size = int(init_size)
        self.batch_size = batch_size
        self.verbose = verbose
        #: Queries spent on each image in the last :meth:`generate` call.
        self.queries_used: np.ndarray = np.zeros(0, dtype=np.int64)

    @property
    def params(self) -> dict:
        return {"attack": "hopskipjump", "max_queries": self.max_queries, "init_eval": self.init_eval,
                "init_size": self.init_size}

    def _attack_one(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        counter = _QueryCounter(self.estimator)
        counted = copy.copy(self.estimator)
        counted.predict = counter.predict  # every query goes through the counter
        hsj = HopSkipJump(counted, batch_size=self.batch_size, targeted=False, norm=self.norm, max_iter=1,
                          max_eval=10_000, init_eval=self.init_eval, init_size=self.init_size, verbose=False)
        label = counter.predict(x, batch_size=1).argmax(1)[0]
        x_adv = hsj.generate(x)
        overhead = 1 + _BOOKKEEPING_QUERIES
        while True:
            next_estimate = min(int(self.init_eval * np.sqrt(hsj.curr_iter + 1)), 10_000)
            if counter.count - overhead + next_estimate > self.max_queries:
                break
            overhead += 1
            if counter.predict(x_adv, batch_size=1).argmax(1)[0] == label:
                break  # no adversarial starting point was found: HopSkipJump cannot proceed
            x_adv = hsj.generate(x, x_adv_init=x_adv, resume=True)
            overhead += _BOOKKEEPING_QUERIES
        return x_adv, counter.count - overhead

    def generate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Adversarial examples (minimal perturbation found within the budget), float32 like ``x``."""
        x = x.astype(np.float32)
        out = x.copy()
        self.queries_used = np.zeros(len(x), dtype=np.int64)
        for i in tqdm(range(len(x)), desc="HopSkipJump", disable=not self.verbose):
            out[i : i + 1], self.queries_used[i] = self._attack_one(x[i : i + 1])
        return out
