"""Speed, memory and compute of a purifier: what the benchmark scripts in ``benchmarks/`` report."""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from art_purifiers.base import PurifierPreprocessor
from art_purifiers.deploy import Deployment


@dataclass(frozen=True)
class Timing:
    """Wall time of purifying ``images`` images in calls of ``batch_size`` on ``device``, best of ``repeats``."""

    device: str
    batch_size: int
    images: int
    repeats: int
    seconds: float
    threads: int

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / self.images

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_second": self.images_per_second,
                "seconds_per_image": self.seconds_per_image}


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(call, batches: tuple[torch.Tensor, ...], repeats: int, warmup: bool) -> float:
    """Best wall time of ``repeats`` passes of ``call`` over ``batches``, without gradients."""
    best = float("inf")
    with torch.no_grad():
        if warmup:
            call(batches[0])
        for _ in range(repeats):
            _synchronise(batches[0].device)
            start = time.perf_counter()
            for batch in batches:
                call(batch)
            _synchronise(batches[0].device)
            best = min(best, time.perf_counter() - start)
    return best


def _check_batches(x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, ...]:
    if len(x) % batch_size:
        raise ValueError(f"The number of images ({len(x)}) must be a multiple of batch_size ({batch_size}).")
    return torch.split(x, batch_size)


def time_purifier(defence: PurifierPreprocessor, x: torch.Tensor, batch_size: int, repeats: int = 3,
                  warmup: bool = True) -> Timing:
    """Time ``defence`` on ``x`` (``(N, C, H, W)`` in ``[0, 1]``, already on the device to measure), in calls of
    ``batch_size`` images (``N`` a multiple of it), without gradients; the best of ``repeats`` passes over ``x``.

    The defence's own chunking is set to ``batch_size`` for the measurement (so one call purifies one batch) and
    restored afterwards.
    """
    batches = _check_batches(x, batch_size)
    chunking = defence.batch_size
    defence.set_params(batch_size=batch_size)
    try:
        best = _best_time(defence.forward, batches, repeats, warmup)
    finally:
        defence.set_params(batch_size=chunking)
    return Timing(str(x.device), batch_size, len(x), repeats, best, torch.get_num_threads())


def time_deployment(deployment: Deployment, x: torch.Tensor, batch_size: int, repeats: int = 3) -> Timing:
    """Time a whole deployed classifier (defences and victim, :meth:`Deployment.logits`) as :func:`time_purifier`
    times a purifier: what a defence costs against the bare victim's own timing."""
    return Timing(str(x.device), batch_size, len(x), repeats,
                  _best_time(deployment.logits, _check_batches(x, batch_size), repeats, True),
                  torch.get_num_threads())


def multiply_accumulates(defence, x: torch.Tensor) -> float:
    """Multiply-accumulates per image of one pass of ``x`` through a purifier (its ``forward``) or a
    :class:`~art_purifiers.deploy.Deployment` (its ``logits``): matrix products and convolutions, as counted by
    :class:`torch.utils.flop_counter.FlopCounterMode`, whose FLOPs are two per multiply-accumulate."""
    counter = FlopCounterMode(display=False)
    call = defence.logits if isinstance(defence, Deployment) else defence.forward
    with torch.no_grad(), counter:
        call(x)
    return counter.get_total_flops() / 2 / len(x)


def repeated_sample(n: int, device: torch.device) -> torch.Tensor:
    """``n`` images ``(n, 3, 32, 32)`` on ``device``: the bundled CIFAR-10 sample, repeated as often as needed (a
    purifier's speed does not depend on the content)."""
    from art_purifiers.data import load_sample

    sample, _ = load_sample()
    return torch.from_numpy(sample).repeat((n + len(sample) - 1) // len(sample), 1, 1, 1)[:n].to(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory so far: CUDA memory allocated by torch on a GPU, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes.


def report(summary: str, result: dict, path: str | None = None) -> None:
    """Print ``summary``; with ``path``, also write ``result`` (with :func:`machine` added) there as JSON."""
    print(summary)
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({**result, "machine": machine()}, handle, indent=2)


def machine() -> dict:
    """What the figures were measured on."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
