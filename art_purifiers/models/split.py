"""The encoder/head split of a victim, for defences that act on its embeddings (e.g. IDFR's feature restorer).

The convention is timm's: ``forward_features(x)`` then ``forward_head(features, pre_logits=True)`` give the
embedding, and ``get_classifier()`` is the head that maps it to logits. The bundled CIFAR ResNets follow it through
:class:`~art_purifiers.models.normalized.NormalizedClassifier`; timm models follow it as they are; any other model
takes an explicit ``(encoder, head)`` pair.
"""

from __future__ import annotations

import torch
from torch import nn

from art_purifiers.models.normalized import NormalizedClassifier

_TIMM_METHODS = ("forward_features", "forward_head", "get_classifier")


class TimmEncoder(nn.Module):
    """``embedding = model.forward_head(model.forward_features(x), pre_logits=True)``, ``(N, D)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def follows_timm_split(model: nn.Module) -> bool:
    """Whether ``model`` exposes timm's encoder/head methods (a wrapper must also be able to call them)."""
    if isinstance(model, NormalizedClassifier):  # it forwards the methods to the network it wraps
        return follows_timm_split(model.network)
    return all(callable(getattr(model, name, None)) for name in _TIMM_METHODS)


def split_victim(victim: nn.Module, encoder: nn.Module | None = None,
                 head: nn.Module | None = None) -> tuple[nn.Module, nn.Module]:
    """``(encoder, head)`` with ``head(encoder(x))`` equal to ``victim(x)``: ``encoder`` maps images in ``[0, 1]``
    to embeddings ``(N, D)``, ``head`` maps embeddings to logits ``(N, classes)``.

    :param victim: The classifier.
    :param encoder: An explicit encoder; give it together with ``head`` for models without timm's split.
    :param head: An explicit head.
    :raises ValueError: When only one of ``encoder``/``head`` is given, or no split can be found.
    """
    if (encoder is None) != (head is None):
        raise ValueError("Give both encoder and head for an explicit split, or neither.")
    if encoder is not None:
        return encoder, head
    if not follows_timm_split(victim):
        raise ValueError(
            f"Cannot split {type(victim).__name__} into encoder and head: it lacks timm's forward_features, "
            "forward_head(pre_logits=True) and get_classifier. Pass encoder= and head= explicitly."
        )
    return TimmEncoder(victim), victim.get_classifier()
