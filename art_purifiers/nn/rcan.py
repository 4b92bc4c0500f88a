"""Residual Channel Attention Network encoder (Zhang et al., 2018) without upsampler, one of the encoders LIIF and
IRAD accept.

A head convolution, ``groups`` residual groups of ``blocks`` channel-attention blocks, a closing convolution and a
global skip; the spatial size is kept. No mean shift is applied (the LIIF forward skips it) and the blocks' residuals
are not scaled, as in the reference implementation.
"""

from __future__ import annotations

import torch
from torch import nn

from art_purifiers.checks import check_integer
from art_purifiers.nn.registry import register_network


def _conv3x3(features: int) -> nn.Conv2d:
    return nn.Conv2d(features, features, 3, padding=1)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: global average pool, 1x1 reduce, ReLU, 1x1 expand, sigmoid, times the input."""

    def __init__(self, features: int, reduction: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(features, features // reduction, 1)
        self.expand = nn.Conv2d(features // reduction, features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(pooled))))


class ChannelAttentionBlock(nn.Module):
    """RCAB: conv-ReLU-conv, channel attention, and an identity skip (residual not scaled)."""

    def __init__(self, features: int, reduction: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(features)
        self.conv2 = _conv3x3(features)
        self.attention = ChannelAttention(features, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.conv2(torch.relu(self.conv1(x))))


class ResidualGroup(nn.Module):
    """``blocks`` channel-attention blocks, a closing convolution, and an identity skip."""

    def __init__(self, features: int, blocks: int, reduction: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ChannelAttentionBlock(features, reduction) for _ in range(blocks))
        self.conv = _conv3x3(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = x
        for block in self.blocks:
            state = block(state)
        return x + self.conv(state)


@register_network("rcan")
class RCANEncoder(nn.Module):
    """Per-pixel features of an image: ``(N, in_channels, H, W) -> (N, features, H, W)``.

    The paper preset (and LIIF's default) is 10 groups x 20 blocks x 64 features, reduction 16.

    :param groups: Number of residual groups (``n_resgroups``).
    :param blocks: Channel-attention blocks per group (``n_resblocks``).
    :param features: Feature channels (the output dimension).
    :param reduction: Channel reduction of the attention gate (``features // reduction`` hidden channels, >= 1).
    :param in_channels: Image channels.
    """

    def __init__(self, groups: int = 10, blocks: int = 20, features: int = 64, reduction: int = 16,
                 in_channels: int = 3) -> None:
        super().__init__()
        groups = check_integer("groups", groups, minimum=1)
        blocks = check_integer("blocks", blocks, minimum=1)
        features = check_integer("features", features, minimum=1)
        reduction = check_integer("reduction", reduction, minimum=1, maximum=features)
        in_channels = check_integer("in_channels", in_channels, minimum=1)
        self.out_dim = features
        self.head = nn.Conv2d(in_channels, features, 3, padding=1)
        self.groups = nn.ModuleList(ResidualGroup(features, blocks, reduction) for _ in range(groups))
        self.conv = _conv3x3(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        state = head
        for group in self.groups:
            state = group(state)
        return head + self.conv(state)
