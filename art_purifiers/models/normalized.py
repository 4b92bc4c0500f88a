"""Wrap a network that expects normalised input so that it takes images in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class NormalizedClassifier(nn.Module):
    """``logits = network((x - mean) / std)`` for ``x`` of shape ``(N, C, H, W)`` in ``[0, 1]``.

    When the network follows timm's convention (``forward_features``, ``forward_head``, ``get_classifier``), so
    does the wrapper, with the normalisation inside ``forward_features``.
    """

    def __init__(self, network: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std``, the network's input."""
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalize(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.forward_features(self.normalize(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.network.forward_head(features, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        return self.network.get_classifier()
