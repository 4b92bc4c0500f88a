"""The CIFAR ResNet of He et al. (2016, Sec. 4.2): 6n+2 layers, 16/32/64 channels, option-A shortcuts.

Parameter names match the widely used reference checkpoints (``conv1``, ``bn1``, ``layer{1,2,3}.{i}``,
``linear``), so their state dicts load once the ``module.`` prefix of DataParallel is stripped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers.nn.registry import register_network

DEPTHS = (20, 32, 44, 56, 110)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; a parameter-free option-A shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = stride != 1 or in_planes != planes
        self.pad = (planes - in_planes) // 2

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.downsample:
            return x
        # Option A: subsample spatially and zero-pad the new channels (no parameters).
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@register_network("cifar_resnet")
class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2). Input ``(N, 3, 32, 32)`` *normalised* images; output ``(N, num_classes)`` logits."""

    def __init__(self, depth: int = 20, num_classes: int = 10) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {DEPTHS}, got {depth}.")
        blocks = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks, stride=1)
        self.layer2 = self._stage(16, 32, blocks, stride=2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map of the last stage, ``(N, 64, H/4, W/4)`` (timm's ``forward_features``)."""
        out = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(out)))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling, then the linear classifier unless ``pre_logits``: the embedding ``(N, 64)`` or
        the logits ``(N, num_classes)`` (timm's ``forward_head``)."""
        embedding = F.adaptive_avg_pool2d(features, 1).flatten(1)
        return embedding if pre_logits else self.linear(embedding)

    def get_classifier(self) -> nn.Module:
        """The head that maps the embedding to logits (timm's ``get_classifier``)."""
        return self.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def cifar_resnet(depth: int = 20, num_classes: int = 10) -> CifarResNet:
    """The bare CIFAR ResNet of the given depth (20, 32, 44, 56 or 110), randomly initialised."""
    return CifarResNet(depth=depth, num_classes=num_classes)


def infer_depth(state_dict: dict[str, torch.Tensor]) -> int:
    """Depth of the CIFAR ResNet a state dict belongs to, from its number of blocks per stage."""
    blocks = {key.split(".")[1] for key in state_dict if key.startswith("layer1.")}
    return 6 * len(blocks) + 2
