"""Speed, memory and compute of a purifier: what the benchmark scripts in ``benchmarks/`` report."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from art_purifiers.base import PurifierPreprocessor
from art_purifiers.checks import check_integer
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
    with torch.no_grad():
        return _best_pass(call, batches, repeats, warmup)


def _best_pass(call, batches: tuple[torch.Tensor, ...], repeats: int, warmup: bool) -> float:
    """Best wall time of ``repeats`` passes of ``call`` over ``batches`` (after one warm-up call if ``warmup``)."""
    best = float("inf")
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


def _forward_backward(defence) -> Callable[[torch.Tensor], None]:
    """One pass through ``defence`` (a purifier's ``forward`` or a deployment's ``logits``) and back to the input,
    as an attack's gradient step runs it: the output's sum is back-propagated (every output gets gradient 1)."""
    call = defence.logits if isinstance(defence, Deployment) else lambda x: defence.forward(x)[0]

    def step(x: torch.Tensor) -> None:
        x = x.detach().requires_grad_(True)
        call(x).sum().backward()

    return step


def _check_batches(x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, ...]:
    if len(x) % batch_size:
        raise ValueError(f"The number of images ({len(x)}) must be a multiple of batch_size ({batch_size}).")
    return torch.split(x, batch_size)


def time_purifier(defence: PurifierPreprocessor, x: torch.Tensor, batch_size: int, repeats: int = 3,
                  warmup: bool = True, backward: bool = False) -> Timing:
    """Time ``defence`` on ``x`` (``(N, C, H, W)`` in ``[0, 1]``, already on the device to measure), in calls of
    ``batch_size`` images (``N`` a multiple of it); the best of ``repeats`` passes over ``x``. Without gradients,
    or with ``backward`` forward and backward to the input, as an attack's gradient step (the defence's own
    gradient mode applies).

    The defence's own chunking is set to ``batch_size`` for the measurement (so one call purifies one batch) and
    restored afterwards.
    """
    batches = _check_batches(x, batch_size)
    chunking = defence.batch_size
    defence.set_params(batch_size=batch_size)
    try:
        best = (_best_pass(_forward_backward(defence), batches, repeats, warmup) if backward
                else _best_time(defence.forward, batches, repeats, warmup))
    finally:
        defence.set_params(batch_size=chunking)
    return Timing(str(x.device), batch_size, len(x), repeats, best, torch.get_num_threads())


def time_deployment(deployment: Deployment, x: torch.Tensor, batch_size: int, repeats: int = 3) -> Timing:
    """Time a whole deployed classifier (defences and victim, :meth:`Deployment.logits`) as :func:`time_purifier`
    times a purifier: what a defence costs against the bare victim's own timing."""
    return Timing(str(x.device), batch_size, len(x), repeats,
                  _best_time(deployment.logits, _check_batches(x, batch_size), repeats, True),
                  torch.get_num_threads())


def multiply_accumulates(defence, x: torch.Tensor, backward: bool = False) -> float:
    """Multiply-accumulates per image of one pass of ``x`` through a purifier (its ``forward``) or a
    :class:`~art_purifiers.deploy.Deployment` (its ``logits``), and with ``backward`` back to the input as
    :func:`time_purifier` times it: matrix products and convolutions (their backward passes included), as counted by
    :class:`torch.utils.flop_counter.FlopCounterMode`, whose FLOPs are two per multiply-accumulate."""
    counter = FlopCounterMode(display=False)
    if backward:
        with counter:
            _forward_backward(defence)(x)
    else:
        call = defence.logits if isinstance(defence, Deployment) else defence.forward
        with torch.no_grad(), counter:
            call(x)
    return counter.get_total_flops() / 2 / len(x)


def matmul_flops_per_second(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """Floating-point operations per second of a ``size x size`` float32 matrix product on ``device`` (SGEMM, with
    the threads torch uses now), the best of ``repeats`` after a warm-up: the machine's reference for how much of
    it a network's own matrix products and convolutions use."""
    size = check_integer("size", size, minimum=1)
    repeats = check_integer("repeats", repeats, minimum=1)
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.rand(size, size, generator=generator).to(device) for _ in range(2))
    out = torch.empty(size, size, device=device)
    seconds = _best_pass(lambda _: torch.mm(a, b, out=out), (a,), repeats, warmup=True)
    return 2 * size**3 / seconds


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
    """What the figures were measured on, and how busy it was: the load average (1, 5, 15 minutes) when the
    figures were written, where the platform reports one."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
