"""DIR: information discard and robust representation restoration (Zhou et al., ICML 2023)."""

from __future__ import annotations

from pathlib import Path

import torch

from art_purifiers.base import PurifierPreprocessor, checked_weights
from art_purifiers.checks import check_integer, check_number
from art_purifiers.nn.masked_vit import MaskedViTDenoiser, complementary_masks, token_order
from art_purifiers.weights import load_networks


def load_dir_network(weights: str | Path) -> tuple[MaskedViTDenoiser, dict]:
    """The masked ViT of a DIR weight file (registered name, ``"cifar10"`` for ``dir_cifar10``, or a path) and the
    file's metadata."""
    networks, metadata = load_networks(weights, method="dir")
    if not isinstance(networks.get("denoiser"), MaskedViTDenoiser) or len(networks) != 1:
        raise ValueError(f"{weights}: a DIR file holds one masked ViT under 'denoiser', got "
                         f"{ {key: type(network).__name__ for key, network in networks.items()} }.")
    return networks["denoiser"], metadata


class DIRPreprocessor(PurifierPreprocessor):
    """Discard part of the input with K complementary random masks of its patches, restore each view with a masked
    ViT, average the restorations.

    Random: every call draws fresh masks (one partition per image) unless ``seed`` is set, so attack it with EOT
    (``defence.deploy(victim, eot=k)``, the harness's ``eot`` threat model). Differentiable: ``gradient="exact"``
    back-propagates through the ViT for the drawn masks.

    | Paper link: https://proceedings.mlr.press/v202/zhou23b.html

    :param weights: Registered weights (``"cifar10"``) or a path to a DIR ``.safetensors`` file written by the DIR
        trainer.
    :param masks: Number of complementary views ``K`` (at least 2).
    :param ratio: With two views, the share of tokens the first view masks (the second masks the rest); with more,
        it must be ``1 - 1/K``.
    :param kwargs: Shared options of :class:`~art_purifiers.base.PurifierPreprocessor` (``seed``, ``batch_size``, ...).
    """

    params = PurifierPreprocessor.params + ["weights", "masks", "ratio"]
    randomized = True

    def __init__(self, weights: str | Path = "cifar10", masks: int = 2, ratio: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.weights = checked_weights(weights)
        self.masks, self.ratio = masks, ratio
        self._load_networks()
        self._check_params()

    def _load_networks(self) -> None:
        """The masked ViT of ``self.weights``."""
        network, self.config = load_dir_network(self.weights)
        self._drop_networks()
        self.register_network("denoiser", network)

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        order = token_order(len(x), self.denoiser.tokens, generator)
        views = complementary_masks(len(x), self.denoiser.tokens, self.masks, self.ratio, order=order)
        return self.denoiser(x, views, order)

    def _check_params(self) -> None:
        super()._check_params()
        self.masks = check_integer("masks", self.masks, minimum=2)
        self.ratio = check_number("ratio", self.ratio, minimum=0, maximum=1, open_minimum=True, open_maximum=True)
        complementary_masks(1, 4 * self.masks, self.masks, self.ratio)  # refuses a ratio that K views cannot have
