"""SampleNet (IRAD, Cao et al., ICLR 2024): per-pixel coordinate shifts predicted from an image's codes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from art_purifiers.checks import check_choice
from art_purifiers.nn.implicit import query_grid
from art_purifiers.nn.liif import LocalImplicitDecoder
from art_purifiers.nn.registry import create_network, register_network

#: Units of SampleNet's raw output: ``pixels`` (ours), ``normalised`` (LIIF's coordinates, where the image spans
#: ``[-1, 1]``, so one pixel of an ``H``-pixel side is ``2 / H``; the authors' code).
SHIFT_UNITS = ("pixels", "normalised")


@register_network("samplenet")
class SampleNet(nn.Module):
    """A local implicit decoder with two outputs: the shift of each output pixel, returned **in pixels** ``(row, col)``.

    By default it reads the latent codes of the (frozen) implicit representation, so the encoder runs once per image
    for both the shifts and the colours. With ``encoder`` it has an encoder of its own that reads the raw ``[0, 1]``
    image, as the authors' code does (there a frozen copy of the representation's encoder, with its own weights in
    ``SampleNet.pt``); its codes then differ from the representation's, which sees ``2x - 1``.

    :param feature_dim: Channels of the codes (with ``encoder``: its ``out_dim`` is used).
    :param hidden: MLP widths (paper 256 x 4).
    :param max_shift: Optional bound: shifts become ``max_shift * tanh(raw / max_shift)`` (in ``units``); ``None``
        leaves them raw, as in the paper.
    :param max_rows: Decoder chunk size (memory bound).
    :param encoder: Spec ``{"name", "args"}`` of its own encoder, or ``None`` to read the representation's codes.
    :param units: Units of the decoder's raw output, one of :data:`SHIFT_UNITS`.
    """

    def __init__(self, feature_dim: int = 64, hidden: Sequence[int] = (256, 256, 256, 256),
                 max_shift: float | None = None, max_rows: int = 65536, encoder: Mapping | None = None,
                 units: str = "pixels") -> None:
        super().__init__()
        if max_shift is not None and max_shift <= 0:
            raise ValueError(f"max_shift must be positive or None, got {max_shift!r}.")
        self.max_shift = max_shift
        self.units = check_choice("units", units, SHIFT_UNITS)
        self.encoder = None if encoder is None else create_network(encoder)
        if self.encoder is not None:
            feature_dim = self.encoder.out_dim
        self.decoder = LocalImplicitDecoder(feature_dim=feature_dim, out_dim=2, hidden=hidden, max_rows=max_rows)

    def forward(self, codes: torch.Tensor | None, height: int, width: int,
                images: torch.Tensor | None = None) -> torch.Tensor:
        """Shifts ``(B, H, W, 2)`` in pixels for rendering a ``height x width`` image.

        :param codes: The representation's codes ``(B, C, h, w)``; unused (may be ``None``) with an own encoder.
        :param images: The raw images ``(B, 3, H, W)`` in ``[0, 1]``; required with an own encoder.
        """
        if self.encoder is not None:
            if images is None:
                raise ValueError("This SampleNet has its own encoder: pass the raw images (images=...).")
            codes = self.encoder(images)
        batch = codes.shape[0]
        coords, cells = query_grid(batch, height, width, None, codes.device)
        shifts = self.decoder(codes, coords, cells).view(batch, height, width, 2)
        if self.max_shift is not None:
            shifts = self.max_shift * torch.tanh(shifts / self.max_shift)
        if self.units == "normalised":
            shifts = shifts * shifts.new_tensor([height / 2.0, width / 2.0])
        return shifts
