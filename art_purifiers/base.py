"""The shared ART adapter that every purification defence subclasses.

:class:`PurifierPreprocessor` solves, once, the parts of ART's ``PreprocessorPyTorch`` contract that are
easy to get subtly wrong (see ``docs/evaluating.md`` and ART 1.20's ``art/estimators/pytorch.py``):

* ART back-propagates through :meth:`PurifierPreprocessor.forward` when every preprocessing step is a
  ``PreprocessorPyTorch``, and through :meth:`PurifierPreprocessor.estimate_forward` otherwise (the numpy
  path). Both must give the same gradient, so BPDA (identity backward, Athalye et al. 2018) is built into
  ``forward`` as a straight-through estimator and ``estimate_forward`` returns the identity in that mode.
* ``PyTorchClassifier.predict`` hands the *whole* input array to the defence under ``torch.no_grad()``;
  the purification therefore runs in chunks of ``batch_size`` samples.
* HopSkipJump under numpy 2 produces float64 queries; the output is always float32.
* Tensors and networks follow ``x.device``, not ``self.device`` (the estimator and the defence may have
  been given different ``device_type`` values).
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
import secrets
from collections.abc import Iterator

import numpy as np
import torch
from art.defences.preprocessor.preprocessor import Preprocessor, PreprocessorPyTorch
from torch import nn

from art_purifiers.checks import check_choice, check_integer, check_number
from art_purifiers.deploy import GRADIENT_MODES, Defence, Deployment
from art_purifiers.devices import default_device

__all__ = ["GRADIENT_MODES", "MAX_SEED", "PurifierPreprocessor", "checked_weights"]

#: Largest accepted ``seed``: ``torch.Generator.manual_seed`` takes a 64-bit integer.
MAX_SEED = 2**63 - 1


class PurifierPreprocessor(PreprocessorPyTorch, Defence):
    """Base class of every ``art_purifiers`` defence.

    A subclass implements only :meth:`purify` (and, if it holds networks, registers them with
    :meth:`register_network`). Everything else is shared: input checks, dtype, device, chunking, gradient
    modes and seeding. As a :class:`~art_purifiers.deploy.Defence`, it deploys as ``(victim, [self])``.

    | Please keep in mind the limitations of defences. For evaluations of purification defences under
      adaptive attacks see https://arxiv.org/abs/1802.00420 and https://arxiv.org/abs/2002.08347 .

    :param gradient: ``"exact"`` back-propagates through the purifier (the full adaptive attack);
        ``"bpda"`` uses the identity in the backward pass (Backward Pass Differentiable Approximation):
        the returned gradient is the classifier's gradient at the purified point. Non-differentiable
        defences accept only ``"bpda"`` (and the DIP defences ``"full"``, their own differentiation through the
        fit, which the base treats as ``"exact"``).
    :param batch_size: Number of samples purified at once; bounds memory when ART passes thousands of
        samples (HopSkipJump, ``predict`` on a whole test set).
    :param clip_values: ``(min, max)`` range of valid input values; inputs outside it are rejected and the
        output is clipped to it.
    :param channels: Number of image channels expected on axis 1.
    :param channels_first: Must be ``True``: inputs are NCHW. Present so ART can synchronise it.
    :param seed: Seed of the defence's randomness. With an integer, every call draws the same random
        numbers (identical outputs for identical inputs and ``batch_size``); with ``None``, every call
        draws fresh ones. Deterministic defences ignore it.
    :param device_type: ``"gpu"`` or ``"cpu"``, as in ART; used only by the numpy ``__call__`` path (``"gpu"``: the
        current CUDA device when torch sees one, else the CPU, looked up at the first numpy call, so that building a
        defence starts no CUDA context). The PyTorch path always runs on the device of its input tensor.
    :param apply_fit: Apply the defence during ``fit`` (default ``False``: purifiers are test-time only).
    :param apply_predict: Apply the defence during ``predict`` and every gradient call.
    """

    params = ["gradient", "batch_size", "clip_values", "channels", "channels_first", "seed"]

    #: Whether :meth:`purify` runs autograd internally (e.g. optimises a network per image). The base then
    #: enables gradients around it, since ART's ``predict`` calls the defence under ``torch.no_grad()``.
    needs_grad: bool = False

    def __init__(
        self,
        *,
        gradient: str = "exact",
        batch_size: int = 256,
        clip_values: tuple[float, float] = (0.0, 1.0),
        channels: int = 3,
        channels_first: bool = True,
        seed: int | None = None,
        device_type: str = "gpu",
        apply_fit: bool = False,
        apply_predict: bool = True,
    ) -> None:
        # ART's "gpu" would call torch.cuda.current_device() here (a CUDA context, even for CPU use): see `device`.
        super().__init__(device_type="cpu", is_fitted=True, apply_fit=apply_fit, apply_predict=apply_predict)
        self.device_type = check_choice("device_type", device_type, ("cpu", "gpu"))
        self._device = None
        self.gradient = gradient
        self.batch_size = batch_size
        self.clip_values = clip_values
        self.channels = channels
        self.channels_first = channels_first
        self.seed = seed
        self._networks: dict[str, nn.Module] = {}

    @property
    def device(self) -> torch.device:
        """Where the numpy path (``__call__``, ``estimate_gradient``) runs: the CPU for ``device_type="cpu"``, else the
        best available device (:func:`~art_purifiers.devices.default_device`), looked up at first use."""
        if self._device is None:
            self._device = torch.device("cpu") if self.device_type == "cpu" else default_device()
        return self._device

    @classmethod
    def __subclasshook__(cls, subclass):
        """Called by ``isinstance(x, Preprocessor)`` (through ART's abstract base classes) when ``x`` is none: where
        ART checks its ``preprocessing_defences``. A defence that changes the model cannot be one; say how to deploy
        it instead of ART's generic error."""
        if cls is PurifierPreprocessor and Defence in subclass.__mro__ and Preprocessor not in subclass.__mro__:
            name = subclass.__name__
            raise TypeError(
                f"{name} changes the model (it is not an input preprocessor), so it cannot be one of ART's "
                f"preprocessing_defences. Deploy it onto the victim instead: classifier = {name}(...)"
                ".deploy(victim).classifier(), or PyTorchClassifier(deployment.model, ..., "
                "preprocessing_defences=deployment.preprocessors) with deployment = defence.deploy(victim)."
            )
        return NotImplemented

    # ----------------------------------------------------------------------------------------------
    # What a subclass implements
    # ----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Purify one chunk of images.

        :param x: Images of shape ``(n, C, H, W)``, float32, on the device the defence runs on, values in
            ``clip_values``. ``1 <= n <= batch_size``.
        :param generator: CPU random generator for this call; draw every random number from it (on the
            CPU, then move it) so that a fixed ``seed`` reproduces the output on any device.
        :return: Purified images, float32, same shape and device as ``x``. In ``"exact"`` mode they must be
            differentiable with respect to ``x``.
        """
        raise NotImplementedError

    def register_network(self, name: str, network: nn.Module) -> nn.Module:
        """Freeze ``network`` (``eval()``, no parameter gradients) and let the base move it to the input's
        device on every call. Returns the network."""
        network.eval()
        network.requires_grad_(False)
        self._networks[name] = network
        setattr(self, name, network)
        return network

    # ----------------------------------------------------------------------------------------------
    # ART interface
    # ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Purify ``x`` of shape ``(N, C, H, W)`` (any float dtype, values in ``clip_values``).

        :return: ``(purified float32 tensor of shape (N, C, H, W), y unchanged)``. In ``"bpda"`` mode the
            value is the purified image and the gradient is the identity.
        """
        x32 = self._validated_float32(x)
        self._networks_to(x32.device)
        generator = self._call_generator()
        if self.gradient != "bpda":  # "exact", or a defence's own differentiable mode (DIP's "full")
            return self._purify_in_chunks(x32, generator), y
        with torch.no_grad():
            purified = self._purify_in_chunks(x32.detach(), generator)
        # Straight-through: forward value = purify(x), backward = identity.
        return x32 + (purified - x32).detach(), y

    def estimate_forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable stand-in used by ART's numpy gradient path (``estimate_gradient``).

        ``"exact"``: the purification itself. ``"bpda"``: the identity (cast to float32), so the numpy path
        and the PyTorch path (:meth:`forward`) return the same gradient.
        """
        if self.gradient != "bpda":
            return self.forward(x, y)[0]
        return self._validated_float32(x)

    def estimate_gradient(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """Gradient of the loss with respect to ``x`` given ``grad`` at the output (ART's numpy path), through
        :meth:`estimate_forward`.

        :param x: Images of shape ``(N, C, H, W)``, any float dtype, values in ``clip_values``.
        :param grad: Gradient at the purified images, shape ``(N, C, H, W)``.
        :return: float32 array of shape ``(N, C, H, W)``, like ``__call__``'s output. ART's base computes it in
            ``x``'s dtype, so float64 input (HopSkipJump under numpy 2) would otherwise give a float64 gradient.
        """
        gradient = super().estimate_gradient(x, grad)
        return gradient if gradient.dtype == object else gradient.astype(np.float32, copy=False)

    def _deploy(self, victim: nn.Module) -> Deployment:
        return Deployment(victim, [self])

    set_params = Defence.set_params  # ART's Preprocessor comes first in the method order

    def _set(self, params: dict) -> None:
        changed = {key for key, value in params.items() if not _same(getattr(self, key, None), value)}
        for key, value in params.items():
            setattr(self, key, value)
        if "weights" in changed:
            self.weights = checked_weights(self.weights)
        self._rebuild(changed)
        self._check_params()

    def _rebuild(self, changed: set[str]) -> None:
        """Rebuild what depends on the ``changed`` parameters (set, not yet checked): the networks when ``weights``
        changed. Subclasses holding other derived state extend it."""
        if "weights" in changed:
            self._load_networks()

    def _load_networks(self) -> None:
        """Load the networks named by ``self.weights`` (defences with weights override it)."""

    def _drop_networks(self) -> None:
        """Forget every registered network (before loading others)."""
        for name in self._networks:
            delattr(self, name)
        self._networks = {}

    def _check_params(self) -> None:
        self._check_defence()
        self.batch_size = check_integer("batch_size", self.batch_size, minimum=1)
        self.clip_values = self._checked_clip_values(self.clip_values)
        self.channels = check_integer("channels", self.channels, minimum=1)
        if self.channels_first is not True:
            raise ValueError("Only channels-first (NCHW) input is supported: channels_first must be True.")
        if self.seed is not None:
            # torch.Generator.manual_seed takes 64 bits; [0, 2**63 - 1] is what every platform accepts.
            self.seed = check_integer("seed", self.seed, minimum=0, maximum=MAX_SEED)

    @staticmethod
    def _checked_clip_values(clip_values) -> tuple[float, float]:
        """``clip_values`` as ``(min, max)`` floats, both finite (an infinite bound would switch the input range
        check off) with ``min < max``."""
        if not isinstance(clip_values, (tuple, list, np.ndarray)) or len(clip_values) != 2:
            raise ValueError(f"clip_values must be a pair (min, max) with min < max, got {clip_values!r}.")
        low = check_number("clip_values[0] (min)", clip_values[0])
        high = check_number("clip_values[1] (max)", clip_values[1])
        if not low < high:
            raise ValueError(f"clip_values must be a pair (min, max) with min < max, got {clip_values!r}.")
        return low, high

    # ----------------------------------------------------------------------------------------------
    # Shared machinery
    # ----------------------------------------------------------------------------------------------
    def _validated_float32(self, x: torch.Tensor) -> torch.Tensor:
        """Check ``x`` and return it as float32 (a differentiable cast)."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"Expected a torch.Tensor, got {type(x).__name__}.")
        if x.ndim != 4:
            raise ValueError(f"Expected images of rank 4 (N, C, H, W), got shape {tuple(x.shape)}.")
        if x.shape[0] == 0:
            raise ValueError("Expected a non-empty batch, got 0 samples.")
        if x.shape[1] != self.channels:
            if x.shape[-1] == self.channels:
                raise ValueError(
                    f"Input of shape {tuple(x.shape)} looks channels-last (NHWC); this defence expects "
                    f"channels-first (N, {self.channels}, H, W): transpose it first."
                )
            raise ValueError(f"Expected {self.channels} channels on axis 1, got shape {tuple(x.shape)}.")
        if not x.is_floating_point():
            raise ValueError(f"Expected a floating-point tensor, got {x.dtype}.")
        # One host sync: the extremes are NaN when any value is, infinite when any value is.
        smallest, largest = torch.stack(torch.aminmax(x.detach())).tolist()
        if not (math.isfinite(smallest) and math.isfinite(largest)):
            raise ValueError("Input contains NaN or infinite values.")
        low, high = float(self.clip_values[0]), float(self.clip_values[1])
        tolerance = 1e-6 * (high - low)
        if smallest < low - tolerance or largest > high + tolerance:
            raise ValueError(
                f"Input values must lie in clip_values {tuple(self.clip_values)}, "
                f"got range [{smallest:.4g}, {largest:.4g}]."
            )
        return x.to(torch.float32)

    def _call_generator(self) -> torch.Generator:
        seed = self.seed if self.seed is not None else secrets.randbits(63)
        return torch.Generator(device="cpu").manual_seed(int(seed))

    def _networks_to(self, device: torch.device) -> None:
        for name, network in self._networks.items():
            self._networks[name] = module_on(network, device)
            setattr(self, name, self._networks[name])

    def _chunks(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        yield from torch.split(x, int(self.batch_size), dim=0)

    def _purify_in_chunks(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        low, high = float(self.clip_values[0]), float(self.clip_values[1])
        with torch.enable_grad() if self.needs_grad else contextlib.nullcontext():
            out = [self.purify(chunk, generator) for chunk in self._chunks(x)]
        # float32 as promised, also under a caller's autocast region; one finiteness check (host sync) per call.
        purified = (out[0] if len(out) == 1 else torch.cat(out, dim=0)).to(torch.float32)
        return self._finite(purified).clamp(low, high)

    def _finite(self, purified: torch.Tensor) -> torch.Tensor:
        """``purified`` unchanged if every value is finite; else raise. Checked before clipping, which would turn
        an infinity into a valid-looking pixel (NaN would pass through it and be scored as a prediction)."""
        if not bool(torch.isfinite(purified.detach()).all()):
            raise ValueError(
                f"{type(self).__name__} produced non-finite values; check its weights and parameters."
            )
        return purified

    __repr__ = Defence.__repr__  # ART's Preprocessor comes first in the method order


def module_on(module: nn.Module, device: torch.device) -> nn.Module:
    """``module``, moved (in place) to ``device`` if its parameters are elsewhere."""
    parameter = next(module.parameters(), None)
    return module.to(device) if parameter is not None and parameter.device != device else module


def _same(old, new) -> bool:
    try:
        return bool(old is new or old == new)
    except Exception:  # noqa: BLE001 (arrays and modules do not compare to one truth value)
        return False


def checked_weights(weights) -> str:
    """``weights`` as a string: a registered name or a path (``str`` or ``os.PathLike``); anything else is refused
    here, with the parameter named, rather than deep in the loader."""
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str) or not weights:
        raise ValueError(f"weights must be a registered name (e.g. 'cifar10') or the path of a .safetensors file, "
                         f"got {weights!r}.")
    return weights
