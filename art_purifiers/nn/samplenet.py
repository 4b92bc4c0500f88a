"""SampleNet (IRAD, Cao et al., ICLR 2024): per-pixel coordinate shifts predicted from the representation's codes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from art_purifiers.nn.implicit import query_grid
from art_purifiers.nn.liif import LocalImplicitDecoder
from art_purifiers.nn.registry import register_network


@register_network("samplenet")
class SampleNet(nn.Module):
    """A local implicit decoder with two outputs: the shift of every output pixel, **in pixels** ``(row, col)``.

    It reads the latent codes of the (frozen) implicit representation, so the encoder runs once per image for both
    the shifts and the colours. (The reference code runs a second copy of the encoder on the raw ``[0, 1]`` image;
    here both see the same ``[-1, 1]`` input, which makes the codes identical and the second pass unnecessary.)

    :param feature_dim: Channels of the codes.
    :param hidden: MLP widths (paper 256 x 4).
    :param max_shift: Optional bound: shifts become ``max_shift * tanh(raw / max_shift)``; ``None`` leaves them raw,
        as in the paper.
    """

    def __init__(self, feature_dim: int = 64, hidden: Sequence[int] = (256, 256, 256, 256),
                 max_shift: float | None = None, max_rows: int = 65536) -> None:
        super().__init__()
        if max_shift is not None and max_shift <= 0:
            raise ValueError(f"max_shift must be positive or None, got {max_shift!r}.")
        self.max_shift = max_shift
        self.decoder = LocalImplicitDecoder(feature_dim=feature_dim, out_dim=2, hidden=hidden, max_rows=max_rows)

    def forward(self, codes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Shifts ``(B, H, W, 2)`` in pixels for rendering a ``height x width`` image from ``codes``."""
        batch = codes.shape[0]
        coords, cells = query_grid(batch, height, width, None, codes.device)
        shifts = self.decoder(codes, coords, cells).view(batch, height, width, 2)
        if self.max_shift is not None:
            shifts = self.max_shift * torch.tanh(shifts / self.max_shift)
        return shifts
