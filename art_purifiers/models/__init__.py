"""Victim classifiers: the CIFAR ResNets of He et al. and :func:`load_victim`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from art_purifiers.models.cifar_resnet import CifarResNet, cifar_resnet, infer_depth
from art_purifiers.models.normalized import IMAGENET_MEAN, IMAGENET_STD, NormalizedClassifier
from art_purifiers.models.split import split_victim
from art_purifiers.weights import load_into, load_weights, resolve_registered

__all__ = [
    "CifarResNet",
    "NormalizedClassifier",
    "cifar_resnet",
    "load_victim",
    "read_reference_checkpoint",
    "split_victim",
    "BUNDLED_VICTIMS",
]

#: Short names of victims whose weights ship inside the package, and their registry entries: the reference
#: (naturally trained) CIFAR ResNets, and a PGD adversarially trained ResNet-20 (DIR's main setting).
BUNDLED_VICTIMS = {"resnet20": "resnet20_cifar10", "resnet32": "resnet32_cifar10", "resnet20-at": "resnet20_at_cifar10"}


def read_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict of a reference CIFAR ResNet checkpoint (``.th``/``.pt``, loaded with ``weights_only=True``,
    so no pickled code runs), with the ``module.`` prefix of DataParallel stripped."""
    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    return {key.removeprefix("module."): value for key, value in state.items()}


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_weights(path, method="victim").tensors
    try:
        return read_reference_checkpoint(path)
    except Exception as error:  # torch.load raises many types for truncated files and refused pickles
        raise ValueError(f"{path} is not a readable checkpoint ({type(error).__name__}): it is truncated or holds "
                         "more than tensors, whose loading would run code and is refused.") from error


def _timm_victim(name: str, checkpoint: str | Path | None, num_classes: int, mean, std) -> nn.Module:
    import timm

    network = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if checkpoint is None:
        raise ValueError(f"timm victim {name!r} needs a checkpoint (weights are never downloaded).")
    load_into(network, _read_state(Path(checkpoint)), checkpoint)
    config = getattr(network, "pretrained_cfg", {}) or {}
    mean = mean or config.get("mean", IMAGENET_MEAN)
    return NormalizedClassifier(network, mean, std or config.get("std", IMAGENET_STD))


def load_victim(
    name_or_path: str | Path = "resnet20",
    num_classes: int = 10,
    checkpoint: str | Path | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> nn.Module:
    """A ready classifier taking ``(N, 3, H, W)`` images in ``[0, 1]`` and returning logits.

    :param name_or_path: ``"resnet20"``, ``"resnet32"`` or ``"resnet20-at"`` (the bundled weights; the last PGD
        adversarially trained); a ``.safetensors`` file or a reference
        ``.th``/``.pt`` checkpoint of a CIFAR ResNet (depth inferred from its keys); or ``"timm:NAME"``, a timm
        architecture whose weights come from ``checkpoint``.
    :param checkpoint: Weights of a timm victim (``.safetensors``, or a state dict loaded with
        ``weights_only=True``).
    :param mean: Normalisation mean applied inside the model (default: ImageNet's, as the reference CIFAR
        ResNets expect; for timm, the architecture's ``pretrained_cfg``).
    :param std: Normalisation standard deviation, likewise.
    :return: A :class:`~art_purifiers.models.normalized.NormalizedClassifier` in ``eval()`` mode.
    """
    name = str(name_or_path)
    if name.startswith("timm:"):
        return _timm_victim(name.removeprefix("timm:"), checkpoint, num_classes, mean, std).eval()
    registered = resolve_registered(BUNDLED_VICTIMS.get(name, name), method="victim")
    if registered is not None:
        state, source = load_weights(registered, method="victim").tensors, registered
    else:
        path = Path(name)
        if not path.is_file():
            raise ValueError(
                f"Unknown victim {name!r}: use one of {sorted(BUNDLED_VICTIMS)} or a path to a checkpoint."
            )
        state, source = _read_state(path), path
    network = load_into(cifar_resnet(infer_depth(state), num_classes), state, source)
    return NormalizedClassifier(network, mean or IMAGENET_MEAN, std or IMAGENET_STD).eval()
