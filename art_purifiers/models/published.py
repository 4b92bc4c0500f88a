"""Victims read from the checkpoints their authors publish (``.th``/``.pt``/``.pth`` state dicts).

Three layouts are recognised from their keys (after DataParallel's ``module.`` prefix is stripped and a
``{"state_dict": ...}`` wrapper is opened):

- ``layer4.*``: the CIFAR ResNet-18 of DIR's authors (:class:`~art_purifiers.models.resnet18_cifar.CifarResNet18`),
  input ``[0, 1]`` without normalisation;
- ``block1.layer.*``: RobustBench's WideResNet (:class:`~art_purifiers.models.wide_resnet.WideResNet`; depth and
  widen factor from the shapes), input ``[0, 1]`` without normalisation;
- ``layer1.*`` without ``layer4.*``: the CIFAR ResNet-(6n+2) of He et al.
  (:class:`~art_purifiers.models.cifar_resnet.CifarResNet`), input normalised with ImageNet's mean and std.

Checkpoints are read with ``torch.load(..., weights_only=True)``: a file that would need to run code is refused.
Every published tensor must fill one parameter or buffer of the network, with its shape; the error names the
published key that is missing, mis-shaped or left over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from art_purifiers.models import resnet18_cifar, wide_resnet
from art_purifiers.models.cifar_resnet import infer_depth
from art_purifiers.models.normalized import IMAGENET_MEAN, IMAGENET_STD
from art_purifiers.nn.registry import create_network
from art_purifiers.weights.checkpoints import check_tensors

#: Normalisation of a network that takes ``[0, 1]`` images as they are.
IDENTITY_NORMALIZATION = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
#: ImageNet's normalisation, which the reference CIFAR ResNets expect (and victim files that record none).
IMAGENET_NORMALIZATION = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def _same_key(name: str) -> str:
    return name


def cifar_resnet_args(state_dict: dict[str, torch.Tensor]) -> dict:
    """``{"depth", "num_classes"}`` of the CIFAR ResNet a state dict (unprefixed keys) belongs to."""
    if "linear.weight" not in state_dict:
        raise ValueError("A CIFAR ResNet state dict needs 'linear.weight', which is missing.")
    return {"depth": infer_depth(state_dict), "num_classes": int(state_dict["linear.weight"].shape[0])}


@dataclass(frozen=True)
class PublishedArchitecture:
    """How one published layout is recognised and read.

    :param network: Registered name of our network (:mod:`art_purifiers.nn.registry`).
    :param description: What the layout is, for messages.
    :param marker: A key prefix only this layout's state dicts hold (checked in the order of :data:`ARCHITECTURES`).
    :param args: Constructor arguments of the network, inferred from a published state dict.
    :param published_key: Our tensor name -> the published key it is read from.
    :param normalization: ``{"mean", "std"}`` the network's input expects, applied to ``[0, 1]`` images.
    """

    network: str
    description: str
    marker: str
    args: Callable[[dict[str, torch.Tensor]], dict]
    published_key: Callable[[str], str]
    normalization: dict


#: The layouts :func:`detect_architecture` recognises, in the order their markers are tried.
ARCHITECTURES = (
    PublishedArchitecture("resnet18_cifar", "the CIFAR ResNet-18 (DIR's target)", "layer4.",
                          resnet18_cifar.published_args, _same_key, IDENTITY_NORMALIZATION),
    PublishedArchitecture("wide_resnet", "RobustBench's WideResNet", "block1.layer.",
                          wide_resnet.published_args, wide_resnet.published_key, IDENTITY_NORMALIZATION),
    PublishedArchitecture("cifar_resnet", "the CIFAR ResNet of He et al.", "layer1.",
                          cifar_resnet_args, _same_key, IMAGENET_NORMALIZATION),
)


def read_victim_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a published checkpoint (``torch.load`` with ``weights_only=True``, on the CPU): the state dict
    itself or the one under ``"state_dict"``, with DataParallel's ``module.`` prefix stripped.

    :raises ValueError: A file ``torch.load`` refuses (truncated, or holding more than tensors, whose loading would
        run code), one that holds no state dict of tensors, or a tensor that holds NaN or infinite values.
    """
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for truncated files and refused pickles
        raise ValueError(f"{path} is not a readable checkpoint ({type(error).__name__}): it is truncated or holds "
                         "more than tensors, whose loading would run code and is refused.") from error
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} holds no state dict (a mapping of names to tensors).")
    others = sorted(str(key) for key, value in state.items() if not isinstance(value, torch.Tensor))
    if others:
        raise ValueError(f"{path}: entries of its state dict that are not tensors: {others[:4]}.")
    state = {str(key).removeprefix("module."): value for key, value in state.items()}
    check_tensors(state, path)  # dense, floating or integer, finite: the checks every other weight file gets
    return state


def detect_architecture(state_dict: dict[str, torch.Tensor], source: str | Path = "state dict") -> tuple[
        PublishedArchitecture, dict]:
    """The layout of a published state dict (unprefixed keys) and the spec ``{"name", "args"}`` of our network.

    :raises ValueError: No known layout, or one whose shapes do not give the network's arguments.
    """
    for architecture in ARCHITECTURES:
        if any(key.startswith(architecture.marker) for key in state_dict):
            try:
                args = architecture.args(state_dict)
            except ValueError as error:
                raise ValueError(f"{source}: {architecture.description}: {error}") from error
            return architecture, {"name": architecture.network, "args": args}
    markers = ", ".join(f"{a.marker}* ({a.description})" for a in ARCHITECTURES)
    raise ValueError(f"{source} is no known victim layout: its keys hold none of {markers}.")


def fill_from_published(network: nn.Module, state_dict: dict[str, torch.Tensor],
                        published_key: Callable[[str], str], source: str | Path) -> nn.Module:
    """Fill ``network`` from a published state dict through the key map ``published_key``, strictly.

    :raises ValueError: Naming the published keys that are missing, have the wrong shape, or fill nothing (batch
        norm's step counters may be absent: torch fills them in).
    """
    expected = network.state_dict()
    names = {ours: published_key(ours) for ours in expected}
    missing = sorted(p for o, p in names.items() if p not in state_dict and not o.endswith("num_batches_tracked"))
    wrong = sorted(f"{p} {tuple(state_dict[p].shape)}, expected {tuple(expected[o].shape)}"
                   for o, p in names.items() if p in state_dict and state_dict[p].shape != expected[o].shape)
    unexpected = sorted(set(state_dict) - set(names.values()))
    if missing or wrong or unexpected:
        groups = (("missing", missing), ("wrong shape", wrong), ("unexpected", unexpected))
        details = [f"{label}: {keys[:4]}{' ...' if len(keys) > 4 else ''}" for label, keys in groups if keys]
        raise ValueError(f"{source} does not fit {type(network).__name__} ({'; '.join(details)}).")
    counters_absent = any(p not in state_dict for p in names.values())
    network.load_state_dict({o: state_dict[p] for o, p in names.items() if p in state_dict},
                            strict=not counters_absent)
    return network


def published_victim(state_dict: dict[str, torch.Tensor], source: str | Path = "state dict") -> tuple[
        nn.Module, PublishedArchitecture]:
    """Our network (``eval()`` mode) holding a published state dict's tensors, and the layout it was read as."""
    architecture, spec = detect_architecture(state_dict, source)
    try:
        network = create_network(spec)
    except ValueError as error:
        raise ValueError(f"{source}: {architecture.description}: {error}") from error
    return fill_from_published(network, state_dict, architecture.published_key, source).eval(), architecture


def read_published_victim(path: str | Path) -> tuple[nn.Module, PublishedArchitecture]:
    """Our network holding the tensors of a published checkpoint file (:func:`read_victim_state_dict`), and its
    layout."""
    return published_victim(read_victim_state_dict(path), path)
