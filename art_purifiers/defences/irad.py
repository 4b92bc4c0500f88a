"""IRAD: implicit-representation-driven image resampling (Cao et al., ICLR 2024)."""

from __future__ import annotations

from pathlib import Path

import torch

from art_purifiers.base import PurifierPreprocessor, checked_weights
from art_purifiers.checks import check_choice, check_number
from art_purifiers.nn.implicit import ImplicitRepresentation
from art_purifiers.nn.resampling import SAMPLERS as NAIVE_SAMPLERS
from art_purifiers.nn.resampling import naive_shifts
from art_purifiers.nn.samplenet import SampleNet
from art_purifiers.weights import load_networks

#: Samplers of :class:`IRADPreprocessor`.
IRAD_SAMPLERS = ("samplenet", "none", *NAIVE_SAMPLERS)


def load_irad_networks(weights: str | Path) -> tuple[ImplicitRepresentation, SampleNet | None, dict]:
    """The networks of an IRAD weight file: ``(representation, samplenet or None, metadata)``.

    :param weights: A registered name (``"cifar10"`` means ``irad_cifar10``; sha256 checked) or a path to a
        ``.safetensors`` file written by the IRAD trainer or by ``art-purifiers import-weights irad``, whose metadata
        names its networks.
    """
    networks, metadata = load_networks(weights, method="irad")
    representation, samplenet = networks.get("representation"), networks.get("samplenet")
    if not isinstance(representation, ImplicitRepresentation) or not isinstance(samplenet, (SampleNet, type(None))):
        raise ValueError(f"{weights}: an IRAD file holds an implicit representation and optionally a SampleNet, got "
                         f"{ {key: type(network).__name__ for key, network in networks.items()} }.")
    return representation, samplenet, metadata


class IRADPreprocessor(PurifierPreprocessor):
    """Reconstruct the image with an implicit representation and resample it at shifted pixel coordinates.

    ``sampler="samplenet"`` (IRAD): shifts predicted per pixel by SampleNet from the representation's codes.
    ``sampler="none"``: the reconstruction at the pixel grid (IRAD without sampling, a DISCO-style defence,
    paper Table 8). ``"invariant"``/``"variant"``: the naive samplers of
    :class:`~art_purifiers.defences.resampling.ResamplingPreprocessor` with the implicit reconstruction (Table 8).
    Deterministic unless ``sampler="variant"``; differentiable, so ``gradient="exact"`` back-propagates through
    both networks (the full adaptive attack of the paper's Table 5).

    | Paper link: https://arxiv.org/abs/2310.11890

    :param weights: Registered weights (``"cifar10"``, shipped) or a path to an IRAD ``.safetensors`` file (trained
        by ``art-purifiers train irad`` or imported from the authors' checkpoints by ``art-purifiers import-weights``).
    :param sampler: One of :data:`IRAD_SAMPLERS` (``"samplenet"``, ``"none"``, ``"invariant"``, ``"variant"``).
    :param magnitude: ``d`` or ``gamma`` (pixels, ``>= 0``) of the naive samplers.
    :param kwargs: Shared options of :class:`~art_purifiers.base.PurifierPreprocessor`.
    """

    params = PurifierPreprocessor.params + ["weights", "sampler", "magnitude"]

    def __init__(self, weights: str | Path = "cifar10", sampler: str = "samplenet", magnitude: float = 1.5,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.weights = checked_weights(weights)
        self.sampler = sampler
        self.magnitude = magnitude
        self._load_networks()
        self._check_params()

    def _load_networks(self) -> None:
        """The representation and SampleNet (when the file holds one) of ``self.weights``."""
        representation, samplenet, self.config = load_irad_networks(self.weights)
        self._drop_networks()
        self.register_network("representation", representation)
        if samplenet is not None:
            self.register_network("samplenet", samplenet)

    @property
    def randomized(self) -> bool:  # type: ignore[override]
        return self.sampler == "variant"

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        codes = self.representation.encode(x)
        if self.sampler == "samplenet":
            shifts = self.samplenet(codes, h, w, images=x)
        elif self.sampler == "none":
            shifts = None
        else:
            shifts = naive_shifts(self.sampler, self.magnitude, n, h, w, generator).to(x.device)
        return self.representation.render(codes, h, w, shifts)

    def _check_params(self) -> None:
        super()._check_params()
        check_choice("sampler", self.sampler, IRAD_SAMPLERS)
        if self.sampler == "samplenet" and "samplenet" not in self._networks:
            raise ValueError(f"The weights {self.weights!r} hold no SampleNet; use sampler='none' or a naive sampler.")
        self.magnitude = check_number("magnitude (pixels)", self.magnitude, minimum=0)
        if self.channels != 3:
            raise ValueError("IRAD works on RGB images: channels must be 3.")
