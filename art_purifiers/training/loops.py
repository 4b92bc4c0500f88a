"""Shared pieces of every trainer: adversarial pairs, data batches, checkpoints that resume, DDP, logging."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int,
             generator: torch.Generator) -> torch.Tensor:
    """L-inf PGD with a uniform random start and cross-entropy (Madry et al.), images in ``[0, 1]``."""
    noise = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x.device) * eps
    x_adv = (x + noise).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def adversarial_pairs(model: nn.Module, x: np.ndarray, y: np.ndarray, cache: str | Path | None, eps: float = 8 / 255,
                      step: float = 2 / 255, steps: int = 100, batch_size: int = 256, seed: int = 0,
                      device: str = "cpu") -> np.ndarray:
    """PGD adversarial examples of ``x`` (float32 NCHW in ``[0, 1]``) against ``model``, as uint8 images.

    Stored with 8-bit quantisation, as DISCO stores its pairs (PNG). With ``cache``, finished batches are saved to
    that ``.npz`` after every batch, so an interrupted run resumes where it stopped.
    """
    model = model.eval().to(device)
    cache = Path(cache) if cache is not None else None
    out = np.zeros(x.shape, dtype=np.uint8)
    done = 0
    if cache is not None and cache.is_file():
        with np.load(cache) as archive:
            done = int(archive["done"])
            out[:done] = archive["x_adv"][:done]
    generator = torch.Generator().manual_seed(seed)
    for start in tqdm(range(0, len(x), batch_size), desc=f"PGD-{steps} pairs", disable=None):
        stop = min(start + batch_size, len(x))
        # Draw every batch's random start even when resuming, so resumed and fresh runs are identical.
        batch_generator = torch.Generator().manual_seed(int(torch.randint(2**62, (), generator=generator)))
        if stop <= done:
            continue
        xb = torch.from_numpy(x[start:stop]).to(device)
        yb = torch.from_numpy(y[start:stop]).long().to(device)
        x_adv = pgd_linf(model, xb, yb, eps, step, steps, batch_generator)
        out[start:stop] = (x_adv.cpu().numpy() * 255).round().astype(np.uint8)
        done = stop
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, x_adv=out, done=np.int64(done))
            tmp.replace(cache)
    return out


def augment_pairs(generator: torch.Generator, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The same random horizontal flip, vertical flip and transpose on every tensor (DISCO/LIIF augmentation)."""
    hflip, vflip, transpose = (bool(torch.rand((), generator=generator) < 0.5) for _ in range(3))
    result = []
    for image in images:
        if hflip:
            image = image.flip(-1)
        if vflip:
            image = image.flip(-2)
        if transpose:
            image = image.transpose(-1, -2)
        result.append(image)
    return tuple(result)


def iteration_generator(seed: int, iteration: int, rank: int = 0) -> torch.Generator:
    """The random generator of one training iteration: a function of (seed, iteration, rank) alone, so a run
    resumed from a checkpoint draws exactly what the uninterrupted run would have drawn."""
    return torch.Generator().manual_seed(seed * 1_000_003 + iteration * 101 + rank)


def batch_for_iteration(iteration: int, n: int, batch_size: int, seed: int, rank: int = 0,
                        world: int = 1) -> np.ndarray:
    """Indices of the mini-batch of ``iteration``: epochs are seeded permutations of ``range(n)`` cut into
    ``batch_size`` pieces (the last partial one dropped), dealt to the ``world`` ranks in turn."""
    per_epoch = max(1, (n // batch_size) // world)
    epoch, position = divmod(iteration, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).numpy()
    start = (position * world + rank) * batch_size
    return order[start : start + batch_size]


@dataclass
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def setup(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        if self.world == 1:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One optimiser step on ``loss``; returns its value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


class Checkpoint:
    """Training state in one file, written atomically; loaded with ``weights_only=True`` (no pickled code)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)


def run_iterations(name: str, step: Callable[[int], float], modules: dict[str, nn.Module],
                   optimizer: torch.optim.Optimizer, iterations: int, checkpoint: Checkpoint, every: int,
                   distributed: Distributed, log_every: int = 50) -> tuple[list[tuple[int, float]], float]:
    """Run ``step(i) -> loss`` for ``i`` in ``[start, iterations)``, resuming from ``checkpoint``.

    The checkpoint holds the modules' and optimizer's states, the iteration, the loss log and the seconds spent
    so far; it is written every ``every`` iterations and at the end (by rank 0). Returns the loss log
    ``[(iteration, mean loss)]`` and the stage's wall time in seconds, including the time before any resume
    (up to the checkpoint it resumed from; checkpoints without it count from the resume).
    """
    state = checkpoint.load()
    start, log, before = 0, [], 0.0
    if state is not None:
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        optimizer.load_state_dict(state["optimizer"])
        start, log = int(state["iteration"]), [tuple(item) for item in state["log"].tolist()]
        before = float(state.get("seconds", 0.0))
        logger.info("%s: resumed at iteration %d", name, start)
    began = time.perf_counter()

    def elapsed() -> float:
        return before + time.perf_counter() - began

    def save(iteration: int) -> None:
        if distributed.is_main:
            checkpoint.save({"modules": {k: m.state_dict() for k, m in modules.items()},
                             "optimizer": optimizer.state_dict(), "iteration": iteration,
                             "log": torch.tensor(log if log else np.zeros((0, 2)), dtype=torch.float64),
                             "seconds": elapsed()})

    losses: list[float] = []
    progress = tqdm(range(start, iterations), desc=name, initial=start, total=iterations,
                    disable=None if distributed.is_main else True)
    for i in progress:
        losses.append(step(i))
        if (i + 1) % log_every == 0 or i + 1 == iterations:
            log.append((i + 1, float(np.mean(losses))))
            progress.set_postfix(loss=f"{log[-1][1]:.4f}")
            logger.info("%s it %d loss %.5f (%.1f s)", name, i + 1, log[-1][1], elapsed())
            losses = []
        if (i + 1) % every == 0 or i + 1 == iterations:
            save(i + 1)
    return log, elapsed()
