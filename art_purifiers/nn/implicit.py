"""The implicit (continuous) image representation of IRAD and DISCO: an EDSR encoder plus a LIIF decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from art_purifiers.nn.edsr import EDSREncoder
from art_purifiers.nn.liif import LocalImplicitDecoder, pixel_centres
from art_purifiers.nn.registry import create_network, register_network


def query_grid(
    batch: int, height: int, width: int, shifts: torch.Tensor | None, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query coordinates and cells for rendering a ``height x width`` image, optionally at shifted positions.

    :param shifts: ``(B, H, W, 2)`` shifts in pixels ``(row, col)``, or ``None``.
    :return: ``coords`` ``(B, H*W, 2)`` and ``cells`` ``(B, H*W, 2)`` in LIIF's normalised units.
    """
    coords = pixel_centres(height, width, device).unsqueeze(0).expand(batch, height, width, 2)
    if shifts is not None:
        coords = coords + shifts * coords.new_tensor([2.0 / height, 2.0 / width])
    cells = coords.new_tensor([2.0 / height, 2.0 / width]).expand(batch, height * width, 2)
    return coords.reshape(batch, height * width, 2), cells


@register_network("implicit_representation")
class ImplicitRepresentation(nn.Module):
    """A continuous representation of an image in ``[0, 1]``: colours at any coordinates.

    Images are mapped to ``[-1, 1]`` before the encoder and colours back to ``[0, 1]`` after the decoder (as in
    LIIF, DISCO and IRAD's code); outputs are not clipped.

    :param blocks: EDSR residual blocks (paper 16); unused when ``encoder`` is given.
    :param features: EDSR width (paper 64); unused when ``encoder`` is given.
    :param hidden: Decoder MLP widths (paper 256 x 4).
    :param max_rows: Decoder chunk size (memory bound).
    :param encoder: Spec ``{"name", "args"}`` of a registered encoder (``edsr``, ``rdn``, ``rcan``, ...) with an
        ``out_dim`` attribute; ``None``: an EDSR encoder of ``blocks`` x ``features``.
    :param unfold: Decoder option: concatenate each code's 3x3 neighbourhood (LIIF's ``feat_unfold``).
    :param local_ensemble: Decoder option: blend the four nearest codes.
    :param cell_decode: Decoder option: give the decoder the query's cell size.
    """

    def __init__(self, blocks: int = 16, features: int = 64, hidden: Sequence[int] = (256, 256, 256, 256),
                 max_rows: int = 65536, encoder: Mapping | None = None, unfold: bool = True,
                 local_ensemble: bool = True, cell_decode: bool = True) -> None:
        super().__init__()
        self.encoder = EDSREncoder(blocks=blocks, features=features) if encoder is None else create_network(encoder)
        self.decoder = LocalImplicitDecoder(feature_dim=self.encoder.out_dim, out_dim=3, hidden=hidden,
                                            unfold=unfold, local_ensemble=local_ensemble, cell_decode=cell_decode,
                                            max_rows=max_rows)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images in ``[0, 1]`` -> ``(B, features, H, W)`` latent codes (channels-last in memory:
        oneDNN's convolutions are faster so on a CPU, and the decoder's first layer reads them so)."""
        return self.encoder((images * 2 - 1).contiguous(memory_format=torch.channels_last))

    def render(self, codes: torch.Tensor, height: int, width: int, shifts: torch.Tensor | None = None) -> torch.Tensor:
        """Colours at the ``height x width`` grid plus ``shifts`` (pixels), ``(B, 3, H, W)``, about ``[0, 1]``."""
        batch = codes.shape[0]
        coords, cells = query_grid(batch, height, width, shifts, codes.device)
        colours = self.decoder(codes, coords, cells)
        return (colours.view(batch, height, width, 3).permute(0, 3, 1, 2) + 1) / 2

    def forward(self, images: torch.Tensor, shifts: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        """Reconstruct ``images`` at the pixel grid of ``size`` (default: their own), plus optional ``shifts``
        ``(B, H, W, 2)`` in output pixels. A larger ``size`` is super-resolution."""
        height, width = size if size is not None else images.shape[-2:]
        return self.render(self.encode(images), int(height), int(width), shifts)
