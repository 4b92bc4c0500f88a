"""HopSkipJump (Chen et al., 2020) under an exact per-image query budget.

ART's ``HopSkipJump`` has no query budget, only iteration counts, and draws its random start from an unseeded
generator. :class:`BudgetedHopSkipJump` draws the start itself (seeded), counts every sample sent to ``predict``
and runs ART's HopSkipJump iteration (binary search, gradient estimate, step-size search) one at a time while
the next iteration is forecast to fit in the budget (its gradient estimate plus the previous iteration's other
queries), so the count ends at or slightly below the budget, rarely a few queries above it. It calls two
internal methods of ART's ``HopSkipJump`` (``_binary_search`` and ``_attack``, ART 1.20). With a checkpoint it
saves its progress after every image, so that an interrupted run resumes at the next image.

| Paper link: https://arxiv.org/abs/1904.02144
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
from art.attacks.evasion import HopSkipJump
from tqdm.auto import tqdm

from art_purifiers.evaluation.progress import load_progress, save_progress

_MAX_EVAL = 10_000
# Queries of an iteration besides its gradient estimate (binary search, step size), before one was measured.
_FIRST_OVERHEAD = 25


class _QueryCounter:
    def __init__(self, estimator) -> None:
        self.estimator = estimator
        self.count = 0

    def predict(self, x: np.ndarray, batch_size: int = 128, **kwargs) -> np.ndarray:
        self.count += len(x)
        # float32: ART's binary search produces float64 under numpy 2, which float32 models reject.
        return self.estimator.predict(x.astype(np.float32), batch_size=batch_size, **kwargs)


class BudgetedHopSkipJump:
    """Untargeted HopSkipJump with at most about ``max_queries`` model queries per image.

    :param estimator: ART classifier (only its ``predict`` is used).
    :param norm: ``np.inf`` or ``2``.
    :param eps: Budget for judging success (the attack itself minimises the perturbation).
    :param max_queries: Queries per image.
    :param init_eval: Initial number of gradient-estimation queries (ART's default 100).
    :param init_size: Random draws tried to find a starting adversarial.
    :param seed: Seed of the random starts.
    :param checkpoint: ``.npz`` file where progress is saved after every image; an interrupted run resumes from
        it. ``None``: no checkpoint.
    """

    def __init__(self, estimator, norm: float = 2, eps: float = 0.5, max_queries: int = 1000, init_eval: int = 100,
                 init_size: int = 100, batch_size: int = 128, seed: int = 0, verbose: bool = False,
                 checkpoint: str | Path | None = None) -> None:
        if max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {max_queries}.")
        self.estimator = estimator
        self.norm = norm
        self.eps = float(eps)
        self.max_queries = int(max_queries)
        self.init_eval = int(init_eval)
        self.init_size = int(init_size)
        self.seed = seed
        self.batch_size = batch_size
        self.verbose = verbose
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        #: Queries spent on each image in the last :meth:`generate` call.
        self.queries_used: np.ndarray = np.zeros(0, dtype=np.int64)
        #: Seconds spent before the last :meth:`generate` call resumed from its checkpoint (0 without one).
        self.resumed_seconds = 0.0

    @property
    def params(self) -> dict:
        """Settings recorded with the results."""
        return {"attack": "hopskipjump", "max_queries": self.max_queries, "init_eval": self.init_eval,
                "init_size": self.init_size, "seed": self.seed}

    def _attack_one(self, x: np.ndarray, label: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """HopSkipJump on one image ``(C, H, W)`` whose predicted class is ``label``."""
        counter = _QueryCounter(self.estimator)
        counted = copy.copy(self.estimator)
        counted.predict = counter.predict  # every query goes through the counter
        hsj = HopSkipJump(counted, batch_size=self.batch_size, targeted=False, norm=self.norm, max_iter=1,
                          max_eval=_MAX_EVAL, init_eval=self.init_eval, init_size=self.init_size, verbose=False)
        low, high = (0.0, 1.0) if self.estimator.clip_values is None else map(float, self.estimator.clip_values)
        # The random start is drawn here, from a seeded generator: ART draws it from an unseeded one.
        start = None
        for _ in range(self.init_size):
            candidate = rng.uniform(low, high, size=x.shape).astype(np.float32)
            if counter.predict(candidate[None], batch_size=1).argmax(1)[0] != label:
                start = hsj._binary_search(current_sample=candidate, original_sample=x, target=label, norm=2,
                                           clip_min=low, clip_max=high, threshold=0.001)
                break
        if start is None:
            return x, counter.count
        current, overhead = start, _FIRST_OVERHEAD
        hsj.curr_iter = 0
        while True:
            estimate = min(int(self.init_eval * np.sqrt(hsj.curr_iter + 1)), _MAX_EVAL)
            if counter.count + estimate + overhead > self.max_queries:
                break
            before = counter.count
            # One HopSkipJump iteration: binary search, gradient estimate, geometric step-size search.
            current = hsj._attack(current, x, label, None, low, high)
            overhead = counter.count - before - estimate
        return current.astype(np.float32), counter.count

    def generate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Adversarial examples (smallest perturbation found within the budget), float32 like ``x``.

        :param y: True labels; points the estimator already misclassifies are not attacked. ``None``: attack all.
        """
        x = x.astype(np.float32)
        out = x.copy()
        predicted = self.estimator.predict(x, batch_size=self.batch_size).argmax(1)
        self.queries_used = np.zeros(len(x), dtype=np.int64)
        rng = np.random.default_rng(self.seed)
        first, self.resumed_seconds = 0, 0.0
        saved = load_progress(self.checkpoint, x)
        if saved is not None:
            first, self.resumed_seconds = self._resume(saved, out, rng)
        start = time.perf_counter()
        for i in tqdm(range(first, len(x)), desc="HopSkipJump", disable=not self.verbose):
            if y is not None and predicted[i] != y[i]:
                continue
            out[i], self.queries_used[i] = self._attack_one(x[i], int(predicted[i]), rng)
            # Random states too, so that a resumed run draws what an uninterrupted one would.
            save_progress(self.checkpoint, x, x_adv=out, queries=self.queries_used, done=np.int64(i + 1),
                          rng=np.array(json.dumps(rng.bit_generator.state)), numpy_state=_numpy_state(),
                          seconds=np.float64(self.resumed_seconds + time.perf_counter() - start))
        return out

    def _resume(self, saved: dict[str, np.ndarray], out: np.ndarray, rng: np.random.Generator) -> tuple[int, float]:
        """Restore a checkpoint's examples, query counts and random states; returns (next image, seconds spent)."""
        x_adv, queries, done = saved["x_adv"], saved["queries"], int(saved["done"])  # x_adv checked on load
        if queries.shape != (len(out),) or queries.dtype != np.int64 or not 0 <= done <= len(out):
            raise ValueError("HopSkipJump checkpoint: queries must be int64 per image and done an image count.")
        out[:], self.queries_used[:] = x_adv, queries
        rng.bit_generator.state = json.loads(str(saved["rng"]))
        np.random.set_state(_numpy_state(str(saved["numpy_state"])))  # noqa: NPY002 (ART's global generator)
        return done, float(saved["seconds"])


def _numpy_state(saved: str | None = None) -> np.ndarray | tuple:
    """numpy's global generator state (which ART's HopSkipJump draws from) as a JSON array, or back from one."""
    if saved is None:
        name, keys, position, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
        return np.array(json.dumps([name, keys.tolist(), int(position), int(has_gauss), float(gauss)]))
    name, keys, position, has_gauss, gauss = json.loads(saved)
    return name, np.array(keys, dtype=np.uint32), position, has_gauss, gauss
