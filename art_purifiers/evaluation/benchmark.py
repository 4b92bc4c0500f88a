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


def time_purifier(defence: PurifierPreprocessor, x: torch.Tensor, batch_size: int, repeats: int = 3,
                  warmup: bool = True) -> Timing:
    """Time ``defence`` on ``x`` (``(N, C, H, W)`` in ``[0, 1]``, already on the device to measure), in calls of
    ``batch_size`` images (``N`` a multiple of it), without gradients; the best of ``repeats`` passes over ``x``.

    The defence's own chunking is set to ``batch_size`` for the measurement (so one call purifies one batch) and
    restored afterwards.
    """
    if len(x) % batch_size:
        raise ValueError(f"The number of images ({len(x)}) must be a multiple of batch_size ({batch_size}).")
    chunking = defence.batch_size
    defence.set_params(batch_size=batch_size)
    batches = torch.split(x, batch_size)
    best = float("inf")
    try:
        with torch.no_grad():
            if warmup:
                defence.forward(batches[0])
            for _ in range(repeats):
                _synchronise(x.device)
                start = time.perf_counter()
                for batch in batches:
                    defence.forward(batch)
                _synchronise(x.device)
                best = min(best, time.perf_counter() - start)
    finally:
        defence.set_params(batch_size=chunking)
    return Timing(str(x.device), batch_size, len(x), repeats, best, torch.get_num_threads())


def multiply_accumulates(defence: PurifierPreprocessor, x: torch.Tensor) -> float:
    """Multiply-accumulates per image of one purification of ``x`` (matrix products and convolutions, as counted
    by :class:`torch.utils.flop_counter.FlopCounterMode`, whose FLOPs are two per multiply-accumulate)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        defence.forward(x)
    return counter.get_total_flops() / 2 / len(x)


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
