"""The CIFAR variant of ResNet-18 common in adversarial-robustness code (DIR's authors train it as their target).

It differs from ImageNet's ResNet-18 in its stem: one 3x3 convolution of 64 channels with stride 1 and batch norm,
no max pooling. Four stages of two basic blocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2); a block whose
shape changes has a projection shortcut (1x1 convolution with the block's stride, then batch norm). A 4x4 average
pooling of the 4x4 final maps and a linear layer give the logits.

Parameter names match the published checkpoints of that code (``conv1``, ``bn1``, ``layer{1..4}.{0,1}``,
``shortcut.{0,1}``, ``linear``), so their state dicts load as they are once DataParallel's ``module.`` is stripped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers.models.heads import pooled_head
from art_purifiers.nn.registry import register_network

#: Channels of the four stages.
WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, ``(N, in_planes, H, W) -> (N, planes, H/s, W/s)``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        projects = stride != 1 or in_planes != planes
        # An empty Sequential is the identity; the projection's modules are numbered 0 (conv) and 1 (batch norm).
        self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(planes)) if projects else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@register_network("resnet18_cifar")
class CifarResNet18(nn.Module):
    """ResNet-18 for 32x32 images. Input ``(N, 3, 32, 32)`` images in ``[0, 1]`` (DIR's authors train it on
    unnormalised images); output ``(N, num_classes)`` logits.

    :param num_classes: Number of logits.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        self.num_features = WIDTHS[-1]
        self.conv1 = nn.Conv2d(3, WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        self.layer1 = self._stage(WIDTHS[0], WIDTHS[0], stride=1)
        self.layer2 = self._stage(WIDTHS[0], WIDTHS[1], stride=2)
        self.layer3 = self._stage(WIDTHS[1], WIDTHS[2], stride=2)
        self.layer4 = self._stage(WIDTHS[2], WIDTHS[3], stride=2)
        self.linear = nn.Linear(WIDTHS[3], num_classes)

    @staticmethod
    def _stage(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map of the last stage, ``(N, 512, H/8, W/8)`` (timm's ``forward_features``)."""
        out = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(out))))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """4x4 average pooling, then the linear classifier unless ``pre_logits``: the embedding ``(N, 512)`` or the
        logits ``(N, num_classes)`` (timm's ``forward_head``).

        :raises ValueError: Feature maps other than 4x4 (the network takes 32x32 images).
        """
        return pooled_head(features, 4, self.linear, pre_logits, "CifarResNet18")

    def get_classifier(self) -> nn.Module:
        """The head that maps the embedding to logits (timm's ``get_classifier``)."""
        return self.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def published_args(state_dict: dict[str, torch.Tensor]) -> dict:
    """``{"num_classes"}`` of the ResNet-18 a published state dict (unprefixed keys) belongs to.

    :raises ValueError: The classifier's weight is absent.
    """
    if "linear.weight" not in state_dict:
        raise ValueError("A ResNet-18 state dict needs 'linear.weight', which is missing.")
    return {"num_classes": int(state_dict["linear.weight"].shape[0])}
