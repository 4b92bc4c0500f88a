"""The classifier head the authors' CIFAR networks share: a fixed-size average pooling, then a linear layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pooled_head(features: torch.Tensor, side: int, classifier: nn.Module, pre_logits: bool,
                network: str) -> torch.Tensor:
    """``side x side`` average pooling of ``features`` ``(N, C, side, side)``, then ``classifier`` unless
    ``pre_logits``: the embedding ``(N, C)`` or the logits (timm's ``forward_head``).

    :raises ValueError: Feature maps of another size (the network takes 32x32 images; its pooling is fixed).
    """
    if tuple(features.shape[-2:]) != (side, side):
        raise ValueError(f"{network} takes 32x32 images ({side}x{side} final feature maps), got feature maps of shape "
                         f"{tuple(features.shape)}.")
    embedding = F.avg_pool2d(features, side).flatten(1)
    return embedding if pre_logits else classifier(embedding)
