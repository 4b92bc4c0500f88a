"""IDFR's networks (Li et al., 2021, arXiv:2111.10075, App. A.1): the input denoiser (Table 6) and the feature
restorer (Table 7). Plain modules: no classifier and no ART inside."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers.checks import check_integer
from art_purifiers.nn.registry import register_network
from art_purifiers.nn.resampling import resize_bilinear

#: Table 6's widths: layers 1-5 (encoder), then 6-7 and 8 (decoder); layer 9 maps to the image's channels.
DENOISER_WIDTHS = (32, 32, 64, 64, 128, 192, 64, 96)
#: Table 7's widths relative to the embedding (512-256-128-32-128-256-512): 1/2, 1/4, 1/16, 1/4, 1/2, 1.
RESTORER_RATIOS = (2, 4, 16, 4, 2, 1)


def _conv_bn_relu(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(outputs),
                         nn.ReLU(inplace=True))


@register_network("idfr_input_denoiser")
class InputDenoiser(nn.Module):
    """The U-Net of Table 6, predicting a residual: ``denoised = x + residual(x)``, ``x`` of shape ``(N, C, H, W)``
    in ``[0, 1]`` with ``H`` and ``W`` multiples of 4; the output has the same shape (not clipped).

    Layers 1-2 run at full resolution, 3 halves it (stride 2), 4 keeps it, 5 halves it again. The decoder upsamples
    layer 5's output (bilinear, x2), concatenates layer 3's (64 + 128 = 192 channels) for layers 6-7, upsamples again
    and concatenates layer 1's (32 + 64 = 96) for layer 8. Every layer is conv 3x3 + BN + ReLU except the last,
    which is a *linear* 3x3 conv: the public PyTorch code ends with BN + ReLU, which forces the residual to be
    non-negative (the Keras code, and any denoiser, need both signs).

    :param channels: Image channels.
    :param widths: The eight hidden widths (default Table 6's); the skip concatenations follow from them.
    """

    def __init__(self, channels: int = 3, widths: Sequence[int] = DENOISER_WIDTHS) -> None:
        super().__init__()
        w = [check_integer("width", width, minimum=1) for width in widths]
        if len(w) != 8:
            raise ValueError(f"widths must hold 8 values (layers 1-8), got {len(w)}.")
        self.channels = check_integer("channels", channels, minimum=1)
        self.widths = tuple(w)
        self.layer1 = _conv_bn_relu(channels, w[0])
        self.layer2 = _conv_bn_relu(w[0], w[1])
        self.layer3 = _conv_bn_relu(w[1], w[2], stride=2)
        self.layer4 = _conv_bn_relu(w[2], w[3])
        self.layer5 = _conv_bn_relu(w[3], w[4], stride=2)
        self.layer6 = _conv_bn_relu(w[4] + w[2], w[5])
        self.layer7 = _conv_bn_relu(w[5], w[6])
        self.layer8 = _conv_bn_relu(w[6] + w[0], w[7])
        self.layer9 = nn.Conv2d(w[7], channels, 3, padding=1)
        nn.init.zeros_(self.layer9.weight)  # start as the identity map: denoised = x
        nn.init.zeros_(self.layer9.bias)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted correction, same shape as ``x``."""
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"InputDenoiser needs height and width divisible by 4, got {tuple(x.shape[-2:])}.")
        x1 = self.layer1(x)
        x2 = self.layer3(self.layer2(x1))
        x3 = self.layer5(self.layer4(x2))
        up = resize_bilinear(x3, x2.shape[-2:])  # deterministic under devices.deterministic(), also on CUDA
        out = self.layer7(self.layer6(torch.cat([up, x2], dim=1)))
        up = resize_bilinear(out, x1.shape[-2:])
        return self.layer9(self.layer8(torch.cat([up, x1], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


@register_network("idfr_feature_restorer")
class FeatureRestorer(nn.Module):
    """The fully connected restorer of Table 7 on embeddings ``(N, D)``: widths ``D/2, D/4, D/16, D/4, D/2, D``
    (512-256-128-32-128-256-512 for ``D = 512``; 64-32-16-4-16-32-64 for the CIFAR ResNets' 64), ReLU after every
    layer, the last included, as post-ReLU pooled embeddings are non-negative.

    :param dimension: The embedding size ``D`` (at least 16).
    :param skips: Add each encoder layer's output to the decoder layer of the same width (the Keras version's
        "U-Net-like" MLP) instead of the plain bottleneck of the paper's Table 7 and the public PyTorch code.
    """

    def __init__(self, dimension: int = 512, skips: bool = False) -> None:
        super().__init__()
        self.dimension = check_integer("dimension", dimension, minimum=16)
        if not isinstance(skips, bool):
            raise ValueError(f"skips must be True or False, got {skips!r}.")
        self.skips = skips
        widths = [dimension, *(max(1, dimension // ratio) for ratio in RESTORER_RATIOS)]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        if embedding.ndim != 2 or embedding.shape[1] != self.dimension:
            raise ValueError(f"FeatureRestorer expects embeddings (N, {self.dimension}), got {tuple(embedding.shape)}.")
        out, encoded = embedding, []
        for index, layer in enumerate(self.layers):
            out = F.relu(layer(out))
            if index < 2:
                encoded.append(out)  # outputs of widths D/2 and D/4, met again by layers 5 and 4
            elif self.skips and index in (3, 4):
                out = out + encoded[4 - index]
        return out
