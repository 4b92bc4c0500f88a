"""Victim classifiers: the CIFAR ResNets of He et al. and :func:`load_victim`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from art_purifiers.models.cifar_resnet import CifarResNet, cifar_resnet, infer_depth
from art_purifiers.models.normalized import IMAGENET_MEAN, IMAGENET_STD, NormalizedClassifier
from art_purifiers.weights import load_safetensors, load_weights, registry

__all__ = [
    "CifarResNet",
    "NormalizedClassifier",
    "cifar_resnet",
    "load_victim",
    "read_reference_checkpoint",
    "BUNDLED_VICTIMS",
]

#: Short names of victims whose weights ship inside the package, and their registry entries.
BUNDLED_VICTIMS = {"resnet20": "resnet20_cifar10"}


def read_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict of a reference CIFAR ResNet checkpoint (``.th``/``.pt``, loaded with ``weights_only=True``,
    so no pickled code runs), with the ``module.`` prefix of DataParallel stripped."""
    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_victim(name_or_path: str | Path = "resnet20", num_classes: int = 10) -> nn.Module:
    """A ready CIFAR-10 classifier taking ``(N, 3, 32, 32)`` images in ``[0, 1]`` and returning logits.

    :param name_or_path: ``"resnet20"`` (the bundled weights), a ``.safetensors`` file, or a reference
        ``.th``/``.pt`` checkpoint of a CIFAR ResNet (depth inferred from its keys).
    :return: A :class:`NormalizedClassifier` in ``eval()`` mode with ImageNet mean/std normalisation inside,
        as the reference checkpoints expect.
    """
    name = str(name_or_path)
    if name in BUNDLED_VICTIMS:
        state = load_weights(BUNDLED_VICTIMS[name])
    elif name in registry():
        state = load_weights(name)
    else:
        path = Path(name)
        if not path.is_file():
            raise ValueError(
                f"Unknown victim {name!r}: use one of {sorted(BUNDLED_VICTIMS)} or a path to a checkpoint."
            )
        state = load_safetensors(path) if path.suffix == ".safetensors" else read_reference_checkpoint(path)
    network = cifar_resnet(infer_depth(state), num_classes)
    network.load_state_dict(state)
    return NormalizedClassifier(network, IMAGENET_MEAN, IMAGENET_STD).eval()
