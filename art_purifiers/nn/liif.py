"""Local implicit image function (LIIF; Chen, Liu and Wang, CVPR 2021): continuous queries of a feature map.

Coordinates are LIIF's: ``(row, col)`` in ``[-1, 1]``, pixel centres at ``-1 + (2k + 1) / n``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Nudge of the ensemble's shifted query, so that a query on a cell border picks a side consistently.
_EPS_SHIFT = 1e-6


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

    :param feature_dim: Channels of the feature map.
    :param out_dim: Size of each answer (3 for colours, 2 for coordinate shifts).
    :param hidden: Hidden widths of the MLP (paper: 256 x 4).
    :param unfold: Concatenate each latent's 3x3 neighbourhood (zero-padded).
    :param local_ensemble: Blend the four neighbouring latents; otherwise use the nearest one.
    :param cell_decode: Give the MLP the query's cell size.
    :param max_rows: Queries decoded at once across the batch; bounds memory (about ``max_rows x 580`` floats).
    """

    def __init__(self, feature_dim: int = 64, out_dim: int = 3, hidden: Sequence[int] = (256, 256, 256, 256),
                 unfold: bool = True, local_ensemble: bool = True, cell_decode: bool = True,
                 max_rows: int = 65536) -> None:
        super().__init__()
        self.unfold, self.local_ensemble, self.cell_decode = unfold, local_ensemble, cell_decode
        self.max_rows = max_rows
        in_dim = feature_dim * (9 if unfold else 1) + 2 + (2 if cell_decode else 0)
        self.mlp = MLP(in_dim, out_dim, hidden)

    def forward(self, features: torch.Tensor, coords: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Decode queries.

        :param features: ``(B, C, h, w)`` feature map.
        :param coords: ``(B, Q, 2)`` query coordinates, ``(row, col)`` in ``[-1, 1]``.
        :param cells: ``(B, Q, 2)`` size of the pixel each query renders, in the same units (``2 / H``, ``2 / W``).
        :return: ``(B, Q, out_dim)`` answers.
        """
        if self.unfold:
            b, c, h, w = features.shape
            features = F.unfold(features, 3, padding=1).view(b, c * 9, h, w)
        step = max(1, self.max_rows // features.shape[0])
        answers = [self._query(features, coords[:, i : i + step], cells[:, i : i + step])
                   for i in range(0, coords.shape[1], step)]
        return answers[0] if len(answers) == 1 else torch.cat(answers, dim=1)

    def _query(self, features: torch.Tensor, coords: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        b, _, h, w = features.shape
        q = coords.shape[1]
        scale = coords.new_tensor([h, w])
        centres = pixel_centres(h, w, features.device).permute(2, 0, 1).unsqueeze(0).expand(b, 2, h, w)
        half = coords.new_tensor([1.0 / h, 1.0 / w])  # half a latent cell in normalised units
        corners = [(-1, -1), (-1, 1), (1, -1), (1, 1)] if self.local_ensemble else [(0, 0)]
        nudge = _EPS_SHIFT if self.local_ensemble else 0.0  # LIIF nudges only the ensemble's shifted queries
        answers, areas = [], []
        for v_row, v_col in corners:
            shifted = coords + coords.new_tensor([v_row, v_col]) * half + nudge
            grid = shifted.clamp(-1 + _EPS_SHIFT, 1 - _EPS_SHIFT).flip(-1).unsqueeze(1)  # grid_sample wants (x, y)
            latent = F.grid_sample(features, grid, mode="nearest", align_corners=False)[:, :, 0].permute(0, 2, 1)
            centre = F.grid_sample(centres, grid, mode="nearest", align_corners=False)[:, :, 0].permute(0, 2, 1)
            relative = (coords - centre) * scale
            inputs = [latent, relative] + ([cells * scale] if self.cell_decode else [])
            answers.append(self.mlp(torch.cat(inputs, dim=-1).reshape(b * q, -1)).view(b, q, -1))
            areas.append((relative[..., 0] * relative[..., 1]).abs() + 1e-9)
        if not self.local_ensemble:
            return answers[0]
        total = areas[0] + areas[1] + areas[2] + areas[3]
        # Each corner's answer is weighted by the area of the diagonally opposite rectangle.
        return sum(a * (area / total).unsqueeze(-1) for a, area in zip(answers, reversed(areas), strict=True))
