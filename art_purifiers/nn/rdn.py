"""Residual Dense Network encoder (Zhang et al., 2018) without upsampler, one of the encoders LIIF and IRAD accept.

Two shallow convolutions, a chain of residual dense blocks, a global fusion of every block's output and a global skip
to the first shallow feature; the spatial size is kept. The two presets of the paper are ``config="A"`` (20 blocks of
6 layers, growth 32) and ``config="B"`` (16 blocks of 8 layers, growth 64, the LIIF default).
"""

from __future__ import annotations

import torch
from torch import nn

from art_purifiers.checks import check_choice, check_integer
from art_purifiers.nn.registry import register_network

#: ``config -> (dense blocks, layers per block, growth rate)`` of the RDN paper.
RDN_CONFIGS: dict[str, tuple[int, int, int]] = {"A": (20, 6, 32), "B": (16, 8, 64)}


class ResidualDenseBlock(nn.Module):
    """``layers`` densely connected conv-ReLU layers (each sees the block input and every earlier layer's output), a
    1x1 local fusion back to ``features`` channels, and an identity skip.

    The dense layers are always 3x3, whatever the network's ``kernel_size`` (as in the reference implementation).
    """

    def __init__(self, features: int, layers: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Conv2d(features + i * growth, growth, 3, padding=1) for i in range(layers))
        self.fusion = nn.Conv2d(features + layers * growth, features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = x
        for layer in self.layers:
            state = torch.cat((state, torch.relu(layer(state))), dim=1)
        return x + self.fusion(state)


@register_network("rdn")
class RDNEncoder(nn.Module):
    """Per-pixel features of an image: ``(N, in_channels, H, W) -> (N, features, H, W)``.

    :param features: Feature channels G0 (the output dimension).
    :param kernel_size: Odd kernel size of the two shallow convolutions and of the last global-fusion convolution.
    :param config: ``"A"`` (20 blocks x 6 layers, growth 32) or ``"B"`` (16 x 8, growth 64); see :data:`RDN_CONFIGS`.
    :param in_channels: Image channels.
    """

    def __init__(self, features: int = 64, kernel_size: int = 3, config: str = "B", in_channels: int = 3) -> None:
        super().__init__()
        features = check_integer("features", features, minimum=1)
        kernel_size = check_integer("kernel_size", kernel_size, minimum=1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (the spatial size is kept), got {kernel_size}.")
        blocks, layers, growth = RDN_CONFIGS[check_choice("config", config, tuple(RDN_CONFIGS))]
        in_channels = check_integer("in_channels", in_channels, minimum=1)
        padding = kernel_size // 2
        self.out_dim = features
        self.shallow1 = nn.Conv2d(in_channels, features, kernel_size, padding=padding)
        self.shallow2 = nn.Conv2d(features, features, kernel_size, padding=padding)
        self.dense_blocks = nn.ModuleList(ResidualDenseBlock(features, layers, growth) for _ in range(blocks))
        self.global_fusion = nn.Sequential(nn.Conv2d(blocks * features, features, 1),
                                           nn.Conv2d(features, features, kernel_size, padding=padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.shallow1(x)
        state = self.shallow2(first)
        outputs = []
        for block in self.dense_blocks:
            state = block(state)
            outputs.append(state)
        return first + self.global_fusion(torch.cat(outputs, dim=1))
