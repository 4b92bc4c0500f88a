"""Image resampling at shifted pixel coordinates (IRAD paper, Sec. 3.2, Eqs. 4-8). Plain torch, no ART.

Coordinates are in pixels: pixel ``[i, j]`` of the output takes the colour of the continuous image at
``(i + shift[..., 0], j + shift[..., 1])`` (row, column), where integer coordinates are pixel centres.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Naive samplers (Eqs. 7 and 8): one fixed shift for every pixel, or a random shift per pixel.
SAMPLERS = ("invariant", "variant")
#: Reconstructions of :func:`shift_resample` (Eqs. 5 and 6).
INTERPOLATIONS = ("bilinear", "nearest")
#: What :func:`shift_resample` reads outside the image.
PADDING_MODES = ("border", "zeros")


def pixel_grid(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """The coordinate grid ``G`` of Eq. (4): ``G[i, j] = (i, j)``, shape ``(H, W, 2)``, float32."""
    rows = torch.arange(height, dtype=torch.float32, device=device)
    cols = torch.arange(width, dtype=torch.float32, device=device)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)


def naive_shifts(
    sampler: str, magnitude: float, n: int, height: int, width: int, generator: torch.Generator
) -> torch.Tensor:
    """Shifts in pixels ``(row, col)`` of the naive samplers, on the CPU.

    :param sampler: ``"invariant"``: every pixel moves by ``(d, d)``, ``d = magnitude`` (Eq. 7), returned as
        ``(1, 1, 1, 2)``; ``"variant"``: each pixel's two shifts are drawn from ``U(0, gamma)``,
        ``gamma = magnitude`` (Eq. 8), returned as ``(n, H, W, 2)``.
    :param generator: Source of the variant sampler's random numbers.
    """
    if sampler == "invariant":
        return torch.full((1, 1, 1, 2), float(magnitude), device="cpu")
    if sampler == "variant":
        return torch.rand((n, height, width, 2), generator=generator, device="cpu") * float(magnitude)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")


def _gather(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Colours of integer pixels ``(rows, cols)`` (each ``(N, H', W')``, long) from ``images`` (N, C, H, W)."""
    n, c, h, w = images.shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).reshape(n, 1, -1).expand(n, c, -1)
    values = images.reshape(n, c, h * w).gather(2, flat).reshape(n, c, *rows.shape[1:])
    if padding_mode == "zeros":
        values = values * inside.unsqueeze(1).to(values.dtype)
    return values


def shift_resample(
    images: torch.Tensor, shifts: torch.Tensor, interpolation: str = "bilinear", padding_mode: str = "border"
) -> torch.Tensor:
    """Resample ``images`` at the pixel grid plus ``shifts``.

    :param images: ``(N, C, H, W)`` float tensor.
    :param shifts: ``(N, H, W, 2)`` or broadcastable (e.g. ``(1, 1, 1, 2)``) shifts in pixels, ``(row, col)``.
    :param interpolation: ``"bilinear"`` (Eq. 5, four-neighbour weights) or ``"nearest"`` (Eq. 6; ties
        round up, so a shift of exactly 1.5 pixels is a translation by 2 pixels).
    :param padding_mode: ``"border"`` repeats edge pixels outside the image; ``"zeros"`` uses black.
    :return: ``(N, C, H, W)`` resampled images, differentiable with respect to ``images`` (and, for
        bilinear, with respect to ``shifts``).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}.")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}.")
    n, _, h, w = images.shape
    coords = (pixel_grid(h, w, images.device) + shifts.to(images.dtype)).expand(n, h, w, 2)
    u, v = coords[..., 0], coords[..., 1]
    if interpolation == "nearest":
        return _gather(images, torch.floor(u + 0.5).long(), torch.floor(v + 0.5).long(), padding_mode)
    u0, v0 = torch.floor(u), torch.floor(v)
    du, dv = (u - u0).unsqueeze(1), (v - v0).unsqueeze(1)
    r0, c0 = u0.long(), v0.long()
    top = _gather(images, r0, c0, padding_mode) * (1 - dv) + _gather(images, r0, c0 + 1, padding_mode) * dv
    bottom = _gather(images, r0 + 1, c0, padding_mode) * (1 - dv) + _gather(images, r0 + 1, c0 + 1, padding_mode) * dv
    return top * (1 - du) + bottom * du


def resize_bilinear(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(images, size, mode="bilinear", align_corners=False)`` for ``(N, C, h, w)`` images, except off
    the CPU under ``torch.use_deterministic_algorithms`` (:func:`art_purifiers.devices.deterministic`): CUDA's
    upsampling backward has no deterministic kernel there (it raises), so the same resize is computed by
    :func:`resize_by_selection`, whose backward has one.
    """
    if images.device.type == "cpu" or not torch.are_deterministic_algorithms_enabled():
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return resize_by_selection(images, size)


def resize_by_selection(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PyTorch's bilinear resize (``align_corners=False``) of ``(N, C, h, w)`` images to ``size`` ``(H, W)``, as row
    then column selections (``index_select``) and weights; equal to ``F.interpolate`` up to rounding."""
    lower, upper, weight = _source_pixels(images.shape[-2], size[0], images)
    rows = images.index_select(2, lower) * (1 - weight).view(-1, 1) + images.index_select(2, upper) * weight.view(-1, 1)
    lower, upper, weight = _source_pixels(images.shape[-1], size[1], images)
    return rows.index_select(3, lower) * (1 - weight) + rows.index_select(3, upper) * weight


def _source_pixels(size_in: int, size_out: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Along one axis, PyTorch's source of each output pixel for ``align_corners=False``: ``(lower index, upper
    index, weight of the upper)``, each ``(size_out,)``, on ``like``'s device in its dtype."""
    source = (torch.arange(size_out, device=like.device, dtype=like.dtype) + 0.5) * (size_in / size_out) - 0.5
    source = source.clamp(min=0)
    lower = source.floor().long().clamp(max=size_in - 1)
    return lower, (lower + 1).clamp(max=size_in - 1), source - lower
