"""The WideResNet of Zagoruyko and Komodakis (2016) as RobustBench's CIFAR-10 leaderboard uses it: WRN-28-10 is
its "Standard" (naturally trained) entry, the victim of several purification papers.

Pre-activation blocks: ``bn1 -> relu -> conv1 (3x3, stride) -> bn2 -> relu -> conv2 (3x3)``, added to the
shortcut. Where a block changes the number of channels, its shortcut is a 1x1 convolution (with the block's stride)
of the *activated* input ``relu(bn1(x))``; elsewhere it is the raw input. Three stages of ``(depth - 4) / 6`` blocks
with ``16k``, ``32k`` and ``64k`` channels (``k`` the widen factor; strides 1, 2, 2) follow a 3x3 stem of 16
channels; a final batch norm and ReLU, 8x8 average pooling and a linear layer give the logits. No dropout.

Our parameter names are ours (``stem``, ``stage{1,2,3}.{i}.{bn1,conv1,bn2,conv2,shortcut}``, ``norm``, ``fc``);
:func:`published_key` names the tensor of RobustBench's published checkpoints each one is read from.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers.models.heads import pooled_head
from art_purifiers.nn.registry import register_network


class PreActBlock(nn.Module):
    """One pre-activation residual block, ``(N, in_channels, H, W) -> (N, out_channels, H/stride, W/stride)``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if in_channels == out_channels and stride != 1:
            raise ValueError("A block with an identity shortcut cannot change the resolution (stride must be 1).")
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut = (None if in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        residual = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return (x if self.shortcut is None else self.shortcut(activated)) + residual


@register_network("wide_resnet")
class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``. Input ``(N, 3, 32, 32)`` images in ``[0, 1]`` (RobustBench's models take them
    without normalisation); output ``(N, num_classes)`` logits.

    :param depth: ``6n + 4`` with ``n >= 1`` blocks per stage (28 for WRN-28-10).
    :param widen_factor: Channel multiplier ``k`` of the stages (10 for WRN-28-10).
    :param num_classes: Number of logits.
    """

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth!r}.")
        if not isinstance(widen_factor, int) or widen_factor < 1:
            raise ValueError(f"widen_factor must be a positive integer, got {widen_factor!r}.")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        blocks = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.depth, self.widen_factor, self.num_features = depth, widen_factor, widths[-1]
        self.stem = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.stage1 = self._stage(16, widths[0], blocks, stride=1)
        self.stage2 = self._stage(widths[0], widths[1], blocks, stride=2)
        self.stage3 = self._stage(widths[1], widths[2], blocks, stride=2)
        self.norm = nn.BatchNorm2d(widths[2])
        self.fc = nn.Linear(widths[2], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [PreActBlock(in_channels, out_channels, stride)]
        layers += [PreActBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Activated feature map of the last stage, ``(N, 64k, H/4, W/4)``: ``relu(norm(stage3(...)))`` (timm's
        ``forward_features``; the final batch norm belongs to the features, as in timm's pre-activation ResNets)."""
        return F.relu(self.norm(self.stage3(self.stage2(self.stage1(self.stem(x))))))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """8x8 average pooling, then the linear classifier unless ``pre_logits``: the embedding ``(N, 64k)`` or the
        logits ``(N, num_classes)`` (timm's ``forward_head``).

        :raises ValueError: Feature maps other than 8x8 (the network takes 32x32 images).
        """
        return pooled_head(features, 8, self.fc, pre_logits, "WideResNet")

    def get_classifier(self) -> nn.Module:
        """The head that maps the embedding to logits (timm's ``get_classifier``)."""
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


#: Our parameter names -> those of RobustBench's published state dicts (applied in order, each at most once).
_PUBLISHED_NAMES = (
    (re.compile(r"^stem\."), "conv1."),
    (re.compile(r"^stage([123])\."), r"block\1.layer."),
    (re.compile(r"\.shortcut\."), ".convShortcut."),
    (re.compile(r"^norm\."), "bn1."),
)


def published_key(name: str) -> str:
    """The key of RobustBench's published WideResNet state dict (without DataParallel's ``module.``) that holds our
    tensor ``name``: ``stem.weight`` is ``conv1.weight``, ``stage2.0.shortcut.weight`` is
    ``block2.layer.0.convShortcut.weight``, ``norm.*`` is ``bn1.*``; block and ``fc`` names are shared."""
    for pattern, replacement in _PUBLISHED_NAMES:
        name = pattern.sub(replacement, name, count=1)
    return name


def published_args(state_dict: dict[str, torch.Tensor]) -> dict:
    """``{"depth", "widen_factor", "num_classes"}`` of the WideResNet a published state dict (unprefixed keys)
    belongs to, from its number of blocks per stage and the shapes of its first stage and classifier.

    :raises ValueError: A tensor the inference needs is absent.
    """
    blocks = {key.split(".")[2] for key in state_dict if key.startswith("block1.layer.")}
    for needed in ("block1.layer.0.conv1.weight", "fc.weight"):
        if needed not in state_dict:
            raise ValueError(f"A WideResNet state dict needs {needed!r}, which is missing.")
    width = int(state_dict["block1.layer.0.conv1.weight"].shape[0])
    if width % 16:
        raise ValueError(f"block1.layer.0.conv1.weight has {width} output channels, not a multiple of 16.")
    return {"depth": 6 * len(blocks) + 4, "widen_factor": width // 16,
            "num_classes": int(state_dict["fc.weight"].shape[0])}
