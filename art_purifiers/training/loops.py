"""Shared data pieces of every trainer: PGD, adversarial pairs (cached under a key that names their inputs, crafted
in shares across ranks), augmentation, and batches and random draws that are functions of the iteration."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from art_purifiers.keys import fingerprint
from art_purifiers.training.framework import Distributed, to_device

logger = logging.getLogger(__name__)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin, summed: best other logit minus the true logit (to be maximised)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return (other - true).sum()


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor, step: float,
             steps: int, generator: torch.Generator, random_start: bool = True, loss: str = "ce") -> torch.Tensor:
    """L-inf PGD (Madry et al.) on images in ``[0, 1]``: with ``random_start`` a uniform start in the ball, without it
    BIM; ``loss="margin"`` maximises the Carlini-Wagner margin (C&W L-inf within the budget) instead of the
    cross-entropy. ``eps`` may be a tensor ``(N, 1, 1, 1)`` of per-image budgets; FGSM is ``steps=1, step=eps``."""
    x_adv = x
    if random_start:
        x_adv = (x + to_device(torch.rand(x.shape, generator=generator) * 2 - 1, x.device) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        logits = model(x_adv)
        objective = F.cross_entropy(logits, y, reduction="sum") if loss == "ce" else margin_loss(logits, y)
        (grad,) = torch.autograd.grad(objective, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


#: ``craft(model, x, y, generator, start) -> adversarial x`` for one batch whose first row is ``start``.
Craft = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator, int], torch.Tensor]


def pairs_cache_path(folder: str | Path, source: nn.Module, x: np.ndarray, y: np.ndarray, recipe: dict) -> Path:
    """Where the pairs of these inputs are cached: the file name is a key of everything that determines them (the
    source model's weights, the images and labels, and the recipe: eps, step, iterations, seed, ...)."""
    key = fingerprint("pairs-v2", source, x, y, recipe)
    return Path(folder) / f"pairs_{key}.npz"


def adversarial_pairs(model: nn.Module, x: np.ndarray, y: np.ndarray, cache: str | Path | None, eps: float = 8 / 255,
                      step: float = 2 / 255, steps: int = 100, batch_size: int = 256, seed: int = 0,
                      device: str = "cpu", distributed: Distributed | None = None,
                      craft: Craft | None = None) -> np.ndarray:
    """PGD adversarial examples of ``x`` (float32 NCHW in ``[0, 1]``) against ``model``, as uint8 images.

    ``craft`` replaces the PGD of ``eps``, ``step`` and ``steps`` by any attack (e.g. a different one per row).

    Stored with 8-bit quantisation, as DISCO stores its pairs (PNG). With ``cache`` (see :func:`pairs_cache_path`),
    finished batches are saved after every batch, so an interrupted run resumes where it stopped. Under ``torchrun``
    each rank crafts a contiguous share of the batches into its own part file, then every rank reads all parts: no
    rank waits while another crafts everything. Batch ``k``'s random start comes from the ``k``-th draw of a
    generator seeded with ``seed``, so the pairs do not depend on the number of ranks or on resuming.
    """
    distributed = distributed or Distributed()
    cache = Path(cache) if cache is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache) as archive:
            if int(archive["done"]) == len(x) and archive["x_adv"].shape == x.shape:
                return archive["x_adv"]
    starts = list(range(0, len(x), batch_size))
    generator = torch.Generator().manual_seed(seed)
    seeds = [int(torch.randint(2**62, (), generator=generator)) for _ in starts]
    share = distributed.share(len(starts))
    part = cache if cache is None or distributed.world == 1 else cache.with_suffix(
        f".part{distributed.rank}of{distributed.world}.npz")
    if cache is None and distributed.world > 1:
        raise ValueError("Pairs crafted across ranks need a cache file to meet in.")
    if craft is None:
        def craft(model, xb, yb, generator, start):
            return pgd_linf(model, xb, yb, eps, step, steps, generator)
    crafted = None
    if len(share):
        crafted = _craft_share(model.eval().to(device), x, y, part, [starts[k] for k in share],
                               [seeds[k] for k in share], batch_size, craft, device)
    distributed.barrier()
    # One process holds every batch already; several meet in their part files.
    return crafted if distributed.world == 1 else _assemble(x, cache, distributed, starts)


def _craft_share(model: nn.Module, x: np.ndarray, y: np.ndarray, part: Path | None, starts: list[int],
                 seeds: list[int], batch_size: int, craft: Craft, device: str) -> np.ndarray:
    """Craft the batches beginning at ``starts`` (resuming from ``part`` when given); returns them as uint8."""
    first, last = starts[0], min(starts[-1] + batch_size, len(x))
    out, done = np.zeros((last - first, *x.shape[1:]), dtype=np.uint8), 0
    if part is not None and part.is_file():
        with np.load(part) as archive:
            done = int(archive["done"])
            out[:done] = archive["x_adv"][:done]
    for start, batch_seed in tqdm(list(zip(starts, seeds, strict=True)), desc="adversarial pairs", disable=None):
        stop = min(start + batch_size, len(x))
        if stop - first <= done:
            continue
        xb = to_device(torch.from_numpy(x[start:stop]), torch.device(device))
        yb = to_device(torch.from_numpy(y[start:stop]).long(), torch.device(device))
        x_adv = craft(model, xb, yb, torch.Generator().manual_seed(batch_seed), start)
        out[start - first : stop - first] = (x_adv.cpu().numpy() * 255).round().astype(np.uint8)
        done = stop - first
        if part is not None:
            _save_npz(part, x_adv=out, done=np.int64(done))
    return out


def _assemble(x: np.ndarray, cache: Path, distributed: Distributed, starts: list[int]) -> np.ndarray:
    """All ranks' parts as one array; rank 0 writes it to ``cache``."""
    out = np.zeros(x.shape, dtype=np.uint8)
    for rank in range(distributed.world):
        share = np.array_split(np.arange(len(starts)), distributed.world)[rank]
        if len(share):
            with np.load(cache.with_suffix(f".part{rank}of{distributed.world}.npz")) as archive:
                first = starts[share[0]]
                out[first : first + len(archive["x_adv"])] = archive["x_adv"]
    distributed.barrier()
    if distributed.is_main:
        _save_npz(cache, x_adv=out, done=np.int64(len(x)))
    return out


def _save_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


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


