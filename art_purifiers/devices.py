"""Where things run: the one device rule of the package, and the switch for reproducible CUDA runs.

The rule (``docs/deploying.md``, *Devices*): a device left unset (``None``) is the best available one, the current
CUDA device when torch sees one, else the CPU; ``"cpu"``, ``"cuda"`` (the current CUDA device) and ``"cuda:N"`` are
honoured as given. Plain torch: nothing here knows ART.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["CUBLAS_WORKSPACE", "current_cuda_device", "default_device", "deterministic", "resolve_device"]

#: The cuBLAS workspace setting that PyTorch's deterministic mode asks for (``CUBLAS_WORKSPACE_CONFIG``).
CUBLAS_WORKSPACE = ":4096:8"


def default_device() -> torch.device:
    """The best available device: the current CUDA device when torch sees one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` with an index for CUDA (``None``: :func:`default_device`).

    :param device: ``None``, ``"cpu"``, ``"cuda"`` (the current CUDA device), ``"cuda:N"`` or a ``torch.device``.
    :param name: The parameter's name in error messages.
    :raises ValueError: Not a CPU or CUDA device, CUDA asked for where torch sees none, or an index beyond the
        GPUs torch sees.
    """
    if device is None:
        return default_device()
    parsed = None
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str):  # not an int: torch.device(1) would quietly mean cuda:1
        with contextlib.suppress(RuntimeError):
            parsed = torch.device(device)
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be 'cpu', 'cuda', 'cuda:N' or None (the best available), got {device!r}.")
    if parsed.type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"{name} {str(parsed)!r} was asked for, but torch sees no CUDA device; use 'cpu' or None.")
    index = torch.cuda.current_device() if parsed.index is None else parsed.index
    if index >= torch.cuda.device_count():
        raise ValueError(f"{name} {str(parsed)!r}: torch sees {torch.cuda.device_count()} CUDA device(s), "
                         f"numbered from 0.")
    return torch.device("cuda", index)


@contextlib.contextmanager
def current_cuda_device(device: torch.device) -> Iterator[None]:
    """Make ``device`` the current CUDA device for the duration (nothing for a CPU device): ART places an estimator
    built with ``device_type="gpu"`` on the current device, so this is how ``cuda:N`` reaches it."""
    if device.type != "cuda":
        yield
        return
    previous = torch.cuda.current_device()
    torch.cuda.set_device(device)
    try:
        yield
    finally:
        torch.cuda.set_device(previous)


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Reproducible CUDA runs for the duration; every setting is restored afterwards.

    Sets ``torch.backends.cudnn.deterministic`` (cuDNN's deterministic convolution algorithms),
    ``torch.backends.cudnn.benchmark = False``, ``torch.use_deterministic_algorithms(True)`` (an operation without
    a deterministic CUDA kernel then raises instead of varying; DIP's and IDFR's bilinear upsampling switch to a
    deterministic form, :func:`~art_purifiers.nn.resampling.resize_bilinear`) and, when it is unset,
    ``CUBLAS_WORKSPACE_CONFIG`` to :data:`CUBLAS_WORKSPACE` (PyTorch refuses cuBLAS products in deterministic mode
    without it). On the CPU the defences are already bitwise reproducible, and give the same outputs inside the
    switch as outside.
    """
    cudnn = torch.backends.cudnn
    saved = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    cudnn.deterministic, cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True)
    if saved[4] is None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
