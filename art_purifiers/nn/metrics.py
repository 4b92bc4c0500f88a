"""Image-quality measures, batched and differentiable: PSNR and SSIM for images in ``[0, 1]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, ``(..., C, H, W)`` -> ``(...)``, peak 1."""
    mse = ((a - b) ** 2).mean(dim=(-3, -2, -1))
    return -10 * torch.log10(mse.clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return (kernel[:, None] * kernel[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al., 2004) per image, averaged over channels and positions.

    Gaussian window (``window`` x ``window``, ``sigma``), constants for a data range of 1, valid positions only
    (the window shrinks to the image for images smaller than it). ``(N, C, H, W)`` -> ``(N,)``.
    """
    n, c, h, w = a.shape
    size = min(window, h, w)
    kernel = _gaussian_window(size, sigma, c, a.device, a.dtype)
    c1, c2 = 0.01**2, 0.03**2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return value.mean(dim=(1, 2, 3))
