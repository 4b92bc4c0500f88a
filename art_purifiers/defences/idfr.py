"""IDFR: input denoising and feature restoring (Li et al., 2021, arXiv:2111.10075).

Two parts: the input denoiser, a purifier (:class:`IDFRPreprocessor`), and the feature restorer, which changes the
model: it sits between the victim's encoder and head (:class:`IDFRDefence` deploys both). Both are deterministic
and differentiable, so ``gradient="exact"`` is the full adaptive attack.
"""

from __future__ import annotations

from pathlib import Path

import torch

from art_purifiers.base import PurifierPreprocessor, checked_weights
from art_purifiers.deploy import Defence, DefenceChain, EmbeddingDefence
from art_purifiers.nn.idfr import FeatureRestorer, InputDenoiser
from art_purifiers.weights import load_networks


def _load(weights: str | Path) -> tuple[dict, dict]:
    networks, metadata = load_networks(weights, method="idfr")
    if not isinstance(networks.get("denoiser"), InputDenoiser):
        raise ValueError(f"{weights}: an IDFR file holds an input denoiser under 'denoiser'.")
    return networks, metadata


def load_denoiser(weights: str | Path) -> tuple[InputDenoiser, dict]:
    """The input denoiser of an IDFR weight file (registered name, ``"cifar10"`` for ``idfr_cifar10``, or a path)
    and the file's metadata."""
    networks, metadata = _load(weights)
    return networks["denoiser"], metadata


def load_restorer(weights: str | Path) -> FeatureRestorer:
    """The feature restorer of an IDFR weight file."""
    networks, _ = _load(weights)
    if not isinstance(networks.get("restorer"), FeatureRestorer):
        raise ValueError(f"{weights} holds no feature restorer; deploy the denoiser alone (restorer=False).")
    return networks["restorer"]


class IDFRPreprocessor(PurifierPreprocessor):
    """IDFR's input denoiser: a U-Net that adds a learned correction to the image (Table 6), trained with the
    cross-entropy of the frozen target on adversarial and Gaussian-augmented images (Algorithm 1).

    | Paper link: https://arxiv.org/abs/2111.10075

    :param weights: Registered weights (``"cifar10"``: trained for the bundled ResNet-20) or a path to an IDFR
        ``.safetensors`` file written by the IDFR trainer.
    :param kwargs: Shared options of :class:`~art_purifiers.base.PurifierPreprocessor`.
    """

    params = PurifierPreprocessor.params + ["weights"]

    def __init__(self, weights: str | Path = "cifar10", **kwargs) -> None:
        super().__init__(**kwargs)
        self.weights = checked_weights(weights)
        self._load_networks()
        self._check_params()

    def _load_networks(self) -> None:
        """The input denoiser of ``self.weights``."""
        denoiser, self.config = load_denoiser(self.weights)
        self._drop_networks()
        self.register_network("denoiser", denoiser)

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.denoiser(x)

    def _check_params(self) -> None:
        super()._check_params()
        if hasattr(self, "denoiser") and self.channels != self.denoiser.channels:
            raise ValueError(f"The denoiser takes {self.denoiser.channels} channels, not channels={self.channels}.")


class IDFRDefence(DefenceChain):
    """The whole IDFR: the input denoiser, then the feature restorer between the victim's encoder and head
    (``logits = head(FR(encoder(ID(x))))``). ``restorer=False`` deploys the denoiser alone (the paper's ID row).

    In plain ART::

        deployment = IDFRDefence().deploy(victim)          # victim: the classifier the weights were trained for
        classifier = deployment.classifier()              # or PyTorchClassifier(deployment.model, ...,
                                                          #   preprocessing_defences=deployment.preprocessors)

    :param weights: As for :class:`IDFRPreprocessor`; the restorer belongs to the victim it was trained through.
    :param restorer: Whether to insert the feature restorer.
    :param gradient: ``"exact"`` or ``"bpda"`` for both parts.
    :param encoder: Explicit encoder of the victim (for models without timm's split; give ``head`` too).
    :param head: Explicit head of the victim.
    :param kwargs: Shared options of the denoiser (``batch_size``, ``device_type``, ...).
    """

    params = [*IDFRPreprocessor.params, "restorer"]
    objects = ["encoder", "head"]

    def __init__(self, weights: str | Path = "cifar10", restorer: bool | str = True, gradient: str = "exact",
                 encoder=None, head=None, **kwargs) -> None:
        self.restorer = _as_bool("restorer", restorer)
        self.encoder, self.head = encoder, head
        super().__init__([IDFRPreprocessor(weights, gradient=gradient, **kwargs)])
        self._load_networks()

    @property
    def denoiser(self) -> IDFRPreprocessor:
        """The input denoiser (the first part), which holds the shared settings."""
        return self.defences[0]

    def __getattr__(self, name: str):
        # The denoiser's settings (weights, seed, batch_size, ...) read through the whole defence.
        if name in IDFRPreprocessor.params and "defences" in self.__dict__:
            return getattr(self.defences[0], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _load_networks(self) -> None:
        """The feature restorer of ``self.weights`` (the denoiser loads its own), placed after the denoiser."""
        del self.defences[1:]
        if self.restorer:
            self.defences.append(EmbeddingDefence(load_restorer(self.weights), gradient=self.denoiser.gradient,
                                                  encoder=self.encoder, head=self.head))

    def _set(self, params: dict) -> None:
        own = {key: params[key] for key in ("restorer", "encoder", "head") if key in params}
        if "restorer" in own:
            own["restorer"] = _as_bool("restorer", own["restorer"])
        self.__dict__.update(own)
        self.denoiser._set({key: value for key, value in params.items() if key in IDFRPreprocessor.params})
        if own or "weights" in params:
            self._load_networks()
        elif len(self.defences) > 1 and "gradient" in params:
            self.defences[1]._set({"gradient": params["gradient"]})

    def __repr__(self) -> str:
        return Defence.__repr__(self)


def _as_bool(name: str, value: bool | str) -> bool:
    """``True``/``False``, also from the command line's ``true``/``false``."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return value
