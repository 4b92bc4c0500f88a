"""EDSR-style convolutional encoder (Lim et al., 2017) without upsampler, as used by LIIF, DISCO and IRAD."""

from __future__ import annotations

import torch
from torch import nn

from art_purifiers.nn.registry import register_network


class ResidualBlock(nn.Module):
    """conv-ReLU-conv with an identity skip, no batch norm (EDSR drops it)."""

    def __init__(self, features: int, res_scale: float = 1.0) -> None:
        super().__init__()
        conv = lambda: nn.Conv2d(features, features, 3, padding=1)  # noqa: E731
        self.body = nn.Sequential(conv(), nn.ReLU(inplace=True), conv())
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


@register_network("edsr")
class EDSREncoder(nn.Module):
    """Per-pixel features of an image: ``(N, in_channels, H, W) -> (N, features, H, W)``.

    Head convolution, ``blocks`` residual blocks, a closing convolution and a global skip; the spatial size is
    kept (no upsampler). The paper preset is 16 blocks x 64 features (1.22 M parameters).

    :param blocks: Number of residual blocks.
    :param features: Feature channels (the output dimension).
    :param in_channels: Image channels.
    :param res_scale: Scale of each block's residual branch.
    """

    def __init__(self, blocks: int = 16, features: int = 64, in_channels: int = 3, res_scale: float = 1.0) -> None:
        super().__init__()
        self.out_dim = features
        self.head = nn.Conv2d(in_channels, features, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(features, res_scale) for _ in range(blocks)),
                                  nn.Conv2d(features, features, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        return head + self.body(head)
