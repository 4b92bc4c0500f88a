"""Local implicit image function (LIIF; Chen, Liu and Wang, CVPR 2021): continuous queries of a feature map.

Coordinates are LIIF's: ``(row, col)`` in ``[-1, 1]``, pixel centres at ``-1 + (2k + 1) / n``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers.checks import check_integer

# Nudge of the ensemble's shifted query, so that a query on a cell border picks a side consistently.
_EPS_SHIFT = 1e-6
#: Most MLP rows per pass on a CPU: few enough for a pass's tensors to stay in a core's cache, enough for efficient
#: matrix products (docs/defences/irad.md has the measurement).
CPU_ROWS = 8192


def pixel_centres(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised centres of a ``height x width`` grid, ``(H, W, 2)`` as ``(row, col)`` in ``(-1, 1)``."""
    rows = -1 + (2 * torch.arange(height, device=device, dtype=torch.float32) + 1) / height
    cols = -1 + (2 * torch.arange(width, device=device, dtype=torch.float32) + 1) / width
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)


class MLP(nn.Sequential):
    """``Linear-ReLU`` for every hidden width, then a final ``Linear``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU(inplace=True)]
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        super().__init__(*layers)


class LocalImplicitDecoder(nn.Module):
    """Answer queries at continuous coordinates from a feature map.

    For each query the four nearest latent codes (local ensemble) are decoded by an MLP from
    ``[3x3-unfolded feature, offset to the latent's centre (in latent cells), cell size (in latent cells)]``, and
    the four answers are blended with bilinear-style area weights (each weighted by the area of the opposite
    rectangle).

    The MLP's first layer is linear, so its part that reads the unfolded feature is computed once per latent, as a
    3x3 convolution of the feature map, and gathered for each query and corner; the offset and cell parts are added
    per query. This is LIIF's computation reordered (equal up to float32 rounding) with about a quarter of the
    first layer's multiply-accumulates when there are as many queries as latents, and no unfolded copy.

    :param feature_dim: Channels of the feature map.
    :param out_dim: Size of each answer (3 for colours, 2 for coordinate shifts).
    :param hidden: Hidden widths of the MLP (paper: 256 x 4).
    :param unfold: Concatenate each latent's 3x3 neighbourhood (zero-padded).
    :param local_ensemble: Blend the four neighbouring latents; otherwise use the nearest one.
    :param cell_decode: Give the MLP the query's cell size.
    :param max_rows: Most MLP rows (queries x corners, across the batch) decoded at once; bounds memory (about
        ``max_rows`` x the sum of the hidden widths floats per pass). On a CPU passes are at most :data:`CPU_ROWS`.
    """

    def __init__(self, feature_dim: int = 64, out_dim: int = 3, hidden: Sequence[int] = (256, 256, 256, 256),
                 unfold: bool = True, local_ensemble: bool = True, cell_decode: bool = True,
                 max_rows: int = 65536) -> None:
        super().__init__()
        self.unfold, self.local_ensemble, self.cell_decode = unfold, local_ensemble, cell_decode
        self.max_rows = check_integer("max_rows", max_rows, minimum=1)
        self.feature_inputs = feature_dim * (9 if unfold else 1)
        self.mlp = MLP(self.feature_inputs + 2 + (2 if cell_decode else 0), out_dim, hidden)

    def forward(self, features: torch.Tensor, coords: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Decode queries.

        :param features: ``(B, C, h, w)`` feature map.
        :param coords: ``(B, Q, 2)`` query coordinates, ``(row, col)`` in ``[-1, 1]``.
        :param cells: ``(B, Q, 2)`` size of the pixel each query renders, in the same units (``2 / H``, ``2 / W``).
        :return: ``(B, Q, out_dim)`` answers.
        """
        b, q = coords.shape[:2]
        corners = 4 if self.local_ensemble else 1
        rows = min(self.max_rows, CPU_ROWS) if features.device.type == "cpu" else self.max_rows
        # Whole images per pass where they fit, so that each pass gathers from a small table (in cache on a CPU).
        images = max(1, min(b, rows // (corners * q)))
        queries = max(1, rows // (corners * images))
        # split, not slicing: a slice's backward fills a zero tensor of the whole input for every pass.
        answers = [self._decode(*group, queries) for group in zip(*(t.split(images) for t in (features, coords, cells)),
                                                                  strict=True)]
        return answers[0] if len(answers) == 1 else torch.cat(answers, dim=0)

    def _decode(self, features: torch.Tensor, coords: torch.Tensor, cells: torch.Tensor,
                queries: int) -> torch.Tensor:
        """Answers ``(b, Q, out_dim)`` for a group of images, ``queries`` queries per image at a time."""
        projected, size = self._project(features), features.shape[-2:]
        answers = [self._query(projected, size, *chunk)
                   for chunk in zip(coords.split(queries, dim=1), cells.split(queries, dim=1), strict=True)]
        return answers[0] if len(answers) == 1 else torch.cat(answers, dim=1)

    def _project(self, features: torch.Tensor) -> torch.Tensor:
        """The first layer's feature part (bias included) at every latent, ``(B * h * w, width)``, rows in
        ``(b, row, col)`` order: a convolution with that part of the weight, 3x3 with unfolding, else 1x1."""
        first = self.mlp[0]
        size = 3 if self.unfold else 1
        kernel = first.weight[:, : self.feature_inputs].reshape(first.out_features, -1, size, size)
        # Channels-last, so the (b, row, col, width) rows below are a view, not a copy.
        out = F.conv2d(features.contiguous(memory_format=torch.channels_last), kernel, first.bias,
                       padding=size // 2)
        return out.permute(0, 2, 3, 1).reshape(-1, first.out_features)

    def _query(self, projected: torch.Tensor, size: tuple[int, int], coords: torch.Tensor,
               cells: torch.Tensor) -> torch.Tensor:
        (h, w), (b, q) = size, coords.shape[:2]
        scale = coords.new_tensor([h, w])
        rows, cols, centres = self._nearest_latents(coords, h, w)
        relative = (coords.unsqueeze(1) - centres) * scale  # (B, corners, q, 2) in latent cells
        inputs = [relative] + ([(cells * scale).unsqueeze(1).expand_as(relative)] if self.cell_decode else [])
        index = rows * w + cols + torch.arange(b, device=coords.device).view(b, 1, 1) * (h * w)
        first = self.mlp[0]
        hidden = torch.addmm(projected.index_select(0, index.reshape(-1)),
                             torch.cat(inputs, dim=-1).reshape(index.numel(), -1),
                             first.weight[:, self.feature_inputs :].t())
        for layer in list(self.mlp)[1:]:
            hidden = layer(hidden)
        answers = hidden.view(b, -1, q, hidden.shape[-1])
        if not self.local_ensemble:
            return answers[:, 0]
        areas = (relative[..., 0] * relative[..., 1]).abs() + 1e-9
        total = areas[:, 0] + areas[:, 1] + areas[:, 2] + areas[:, 3]
        # Each corner's answer is weighted by the area of the diagonally opposite rectangle.
        return (answers * (areas.flip(1) / total.unsqueeze(1)).unsqueeze(-1)).sum(1)

    def _nearest_latents(self, coords: torch.Tensor, h: int,
                         w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Row and column ``(B, corners, q)`` (long) and centre ``(B, corners, q, 2)`` of each query's corner
        latents. The indices are read by nearest-neighbour ``grid_sample`` from a map of them, so they are exactly
        the latents that sampling the features would pick; nothing here carries a gradient (as with nearest
        sampling)."""
        half = coords.new_tensor([1.0 / h, 1.0 / w])  # half a latent cell in normalised units
        corners = [(-1, -1), (-1, 1), (1, -1), (1, 1)] if self.local_ensemble else [(0, 0)]
        nudge = _EPS_SHIFT if self.local_ensemble else 0.0  # LIIF nudges only the ensemble's shifted queries
        offsets = coords.new_tensor(corners).view(1, -1, 1, 2) * half
        shifted = coords.detach().unsqueeze(1) + offsets + nudge
        grid = shifted.clamp(-1 + _EPS_SHIFT, 1 - _EPS_SHIFT).flip(-1)  # grid_sample wants (x, y)
        indices = torch.stack(torch.meshgrid(torch.arange(h, device=coords.device, dtype=coords.dtype),
                                             torch.arange(w, device=coords.device, dtype=coords.dtype),
                                             indexing="ij"))
        picked = F.grid_sample(indices.unsqueeze(0).expand(coords.shape[0], 2, h, w), grid, mode="nearest",
                               align_corners=False)
        # The centre's formula is pixel_centres', so the values are the same floats.
        centres = torch.stack([-1 + (2 * picked[:, 0] + 1) / h, -1 + (2 * picked[:, 1] + 1) / w], dim=-1)
        return picked[:, 0].long(), picked[:, 1].long(), centres
