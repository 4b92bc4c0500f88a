"""Victim classifiers: the CIFAR ResNets of He et al., the victims of the papers (RobustBench's WideResNet-28-10,
the CIFAR ResNet-18 of DIR's authors) and :func:`load_victim`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from art_purifiers.models.cifar_resnet import CifarResNet, cifar_resnet
from art_purifiers.models.normalized import NormalizedClassifier
from art_purifiers.models.published import (
    IDENTITY_NORMALIZATION,
    IMAGENET_NORMALIZATION,
    read_published_victim,
    read_victim_state_dict,
)
from art_purifiers.models.resnet18_cifar import CifarResNet18
from art_purifiers.models.split import split_victim
from art_purifiers.models.wide_resnet import WideResNet
from art_purifiers.weights import load_into, load_networks, load_weights, resolve_registered

__all__ = [
    "CifarResNet",
    "CifarResNet18",
    "IDENTITY_NORMALIZATION",
    "IMAGENET_NORMALIZATION",
    "NormalizedClassifier",
    "WideResNet",
    "cifar_resnet",
    "load_victim",
    "read_published_victim",
    "read_reference_checkpoint",
    "split_victim",
    "BUNDLED_VICTIMS",
]

#: Short names of victims whose weights ship inside the package, and their registry entries: the reference
#: (naturally trained) CIFAR ResNets, and a PGD adversarially trained ResNet-20 (DIR's main setting).
BUNDLED_VICTIMS = {"resnet20": "resnet20_cifar10", "resnet32": "resnet32_cifar10", "resnet20-at": "resnet20_at_cifar10"}


def read_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict of a published checkpoint (``.th``/``.pt``, loaded with ``weights_only=True``, so no pickled code
    runs), with the ``module.`` prefix of DataParallel stripped (see
    :func:`~art_purifiers.models.published.read_victim_state_dict`)."""
    return read_victim_state_dict(path)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_weights(path, method="victim").tensors
    return read_victim_state_dict(path)


def _timm_victim(name: str, checkpoint: str | Path | None, num_classes: int, mean, std) -> nn.Module:
    import timm

    network = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if checkpoint is None:
        raise ValueError(f"timm victim {name!r} needs a checkpoint (weights are never downloaded).")
    load_into(network, _read_state(Path(checkpoint)), checkpoint)
    config = getattr(network, "pretrained_cfg", {}) or {}
    mean = mean or config.get("mean", IMAGENET_NORMALIZATION["mean"])
    return NormalizedClassifier(network, mean, std or config.get("std", IMAGENET_NORMALIZATION["std"]))


def _recorded_normalization(metadata: dict, source) -> dict:
    """The ``{"mean", "std"}`` a victim file records; ImageNet's for files that record none (the legacy victims)."""
    normalization = metadata.get("normalization", IMAGENET_NORMALIZATION)
    valid = isinstance(normalization, Mapping) and all(
        isinstance(normalization.get(key), list) and len(normalization[key]) == 3
        and all(isinstance(v, (int, float)) for v in normalization[key]) for key in ("mean", "std"))
    if not valid or not all(v > 0 for v in normalization["std"]):
        raise ValueError(f"{source}: its metadata's normalization must be {{'mean': [3 numbers], 'std': [3 positive "
                         f"numbers]}}, got {normalization!r}.")
    return normalization


def _victim_file(name_or_path: str | Path) -> tuple[nn.Module, dict]:
    """The bare network of a victim weight file (registered name or ``.safetensors`` path) and its normalisation."""
    networks, metadata = load_networks(name_or_path, method="victim")
    if set(networks) != {""}:
        raise ValueError(f"{name_or_path} holds the networks {sorted(networks)}, not one victim (stored without a "
                         "prefix, key '').")
    return networks[""], _recorded_normalization(metadata, name_or_path)


def load_victim(
    name_or_path: str | Path = "resnet20",
    num_classes: int = 10,
    checkpoint: str | Path | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> nn.Module:
    """A ready classifier taking ``(N, 3, 32, 32)`` images in ``[0, 1]`` and returning logits ``(N, num_classes)``.

    :param name_or_path: ``"resnet20"``, ``"resnet32"`` or ``"resnet20-at"`` (the bundled weights; the last PGD
        adversarially trained); a victim ``.safetensors`` file (as ``convert-victim`` writes them: the network and
        its input normalisation are read from the file); a published ``.th``/``.pt``/``.pth`` checkpoint of a CIFAR
        ResNet-(6n+2), of DIR's CIFAR ResNet-18 or of RobustBench's WideResNet (the architecture is detected from
        its keys, see :mod:`art_purifiers.models.published`); or ``"timm:NAME"``, a timm architecture whose weights
        come from ``checkpoint``.
    :param num_classes: Number of classes: a timm victim is built with it; any other victim must have it.
    :param checkpoint: Weights of a timm victim (``.safetensors``, or a state dict loaded with
        ``weights_only=True``).
    :param mean: Normalisation mean applied inside the model (default: the one the weights record or their
        architecture expects: ImageNet's for the CIFAR ResNets and for victim files that record none, none
        (mean 0, std 1) for the WideResNet and the ResNet-18; for timm, the architecture's ``pretrained_cfg``).
    :param std: Normalisation standard deviation, likewise.
    :return: A :class:`~art_purifiers.models.normalized.NormalizedClassifier` in ``eval()`` mode.
    :raises ValueError: An unknown name, an unreadable or refused file, weights that fit no known architecture, or
        a victim with another number of classes.
    """
    name = str(name_or_path)
    if name.startswith("timm:"):
        return _timm_victim(name.removeprefix("timm:"), checkpoint, num_classes, mean, std).eval()
    registered = resolve_registered(BUNDLED_VICTIMS.get(name, name), method="victim")
    if registered is not None:
        network, normalization = _victim_file(registered)
    else:
        path = Path(name)
        if not path.is_file():
            raise ValueError(
                f"Unknown victim {name!r}: use one of {sorted(BUNDLED_VICTIMS)} or a path to a checkpoint."
            )
        if path.suffix == ".safetensors":
            network, normalization = _victim_file(path)
        else:
            network, architecture = read_published_victim(path)
            normalization = architecture.normalization
    classes = network.get_classifier().out_features
    if classes != num_classes:
        raise ValueError(f"Victim {name!r} has {classes} classes, not num_classes={num_classes}.")
    return NormalizedClassifier(network, mean or normalization["mean"], std or normalization["std"]).eval()
