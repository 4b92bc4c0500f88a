"""Deployable defences: what turns a victim into the model and preprocessing defences that ART is given.

Most defences purify the input (:class:`~art_purifiers.base.PurifierPreprocessor`, deployed as
``(victim, [defence])``); some change the model itself, such as IDFR's feature restorer between the victim's
encoder and head (:class:`EmbeddingDefence`). Both are a :class:`Defence`::

    deployment = defence.deploy(victim)                 # or defence.deploy(victim, eot=8) for random defences
    classifier = deployment.classifier(nb_classes=10, input_shape=(3, 32, 32))

which equals ``PyTorchClassifier(deployment.model, ..., preprocessing_defences=deployment.preprocessors)``. The
harness, the command line and the contract suite use only this interface, so a new kind of defence needs no change
there. Every defence also has a :meth:`Defence.fingerprint` (class, parameters and the sha256 of every weight it
holds) that names it in cache keys.
"""

from __future__ import annotations

import abc
import copy
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from art.estimators.classification import PyTorchClassifier
from art.preprocessing.expectation_over_transformation.pytorch import EoTPyTorch
from torch import nn

from art_purifiers.checks import check_choice, check_integer
from art_purifiers.devices import current_cuda_device, resolve_device
from art_purifiers.keys import tensors_digest
from art_purifiers.models.split import split_victim

#: Gradient modes of every defence: exact autograd, or BPDA (identity backward).
GRADIENT_MODES = ("exact", "bpda")


class Defence(abc.ABC):
    """A defence that can be deployed onto a victim classifier.

    Subclasses set :attr:`params` (the names of the settings that define them), :attr:`differentiable` and
    :attr:`randomized`, and implement :meth:`_deploy`.
    """

    #: Names of the attributes that define the defence (reported in tables and hashed into its fingerprint).
    params: list[str] = ["gradient"]
    #: Constructor arguments that are objects, such as networks (DIP's ``classifier``, an explicit ``encoder``):
    #: settable like :attr:`params` and shown in ``repr`` by type; the fingerprint holds their weights.
    objects: list[str] = []
    #: Whether autograd through the defence gives a meaningful gradient (else only ``gradient="bpda"``).
    differentiable: bool = True
    #: Whether the defence draws random numbers (it then needs EOT to be attacked properly).
    randomized: bool = False
    gradient: str = "exact"

    @abc.abstractmethod
    def _deploy(self, victim: nn.Module) -> Deployment:
        """The victim with this defence in place."""

    def deploy(self, victim: nn.Module, eot: int | None = None) -> Deployment:
        """The victim with this defence in place, as a model plus ART preprocessing defences.

        :param victim: Classifier taking ``(N, C, H, W)`` images in ``[0, 1]`` and returning logits.
        :param eot: With an integer ``k``, put the expectation over ``k`` draws of the defence inside the model
            (:class:`EOTClassifier`): every ART attack then sees averaged gradients and decisions. Use it for random
            defences with ``seed=None``, so that every call draws afresh.
        """
        deployment = self._deploy(victim)
        return deployment if eot is None else deployment.with_eot(eot)

    def settable(self) -> list[str]:
        """Names accepted by :meth:`set_params` and :meth:`configured`: :attr:`params` and :attr:`objects`."""
        return [*self.params, *self.objects]

    def _checked_keys(self, params: dict) -> None:
        """Refuse names the defence does not have (a misspelt key must not be a silent no-op)."""
        unknown = sorted(set(params) - set(self.settable()))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter(s) {unknown}; its parameters: "
                             f"{sorted(self.settable())}.")

    def set_params(self, **params) -> None:
        """Change parameters in place (networks are reloaded when ``weights`` changes); the new values are checked.

        :raises ValueError: A name the defence does not have (the message lists the valid ones), or a bad value.
        """
        self._checked_keys(params)
        self._set(params)

    def configured(self, **params) -> Defence:
        """A copy with the given parameters changed (e.g. ``gradient="bpda"``, ``seed=None``, ``weights=PATH``).

        :raises ValueError: A name the defence does not have (the message lists the valid ones), or a bad value.
        """
        self._checked_keys(params)
        defence = copy.deepcopy(self)
        defence._set(params)
        return defence

    def _set(self, params: dict) -> None:
        for key, value in params.items():
            setattr(self, key, value)
        self._check_defence()

    def __repr__(self) -> str:
        settings = [f"{name}={getattr(self, name)!r}" for name in self.params]
        settings += [f"{name}={_short(getattr(self, name, None))}" for name in self.objects]
        return f"{type(self).__name__}({', '.join(settings)})"

    def _check_defence(self) -> None:
        check_choice("gradient", self.gradient, GRADIENT_MODES)
        if self.gradient == "exact" and not self.differentiable:
            raise ValueError(
                f"{type(self).__name__} is not differentiable, so gradient='exact' is not available; "
                "use gradient='bpda' (identity backward pass) to attack it."
            )

    def describe(self) -> dict:
        """The defining settings, ``{name: value}``."""
        return {name: getattr(self, name) for name in self.params}

    def weight_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every tensor of every network the defence holds, as ``(attribute.key, tensor)``."""
        for attribute, value in sorted(vars(self).items()):
            module = value.model if isinstance(value, PyTorchClassifier) else value
            if isinstance(module, nn.Module):
                for key, tensor in module.state_dict().items():
                    yield f"{attribute}.{key}", tensor

    def fingerprint(self) -> str:
        """Hex sha256 of the class, the defining settings and every weight the defence holds: two defences with
        the same fingerprint give the same outputs (given the same random draws). ``weights`` enters through what
        it loads (every tensor, and the file's architecture metadata), so one file under two paths hashes alike."""
        digest = hashlib.sha256()
        settings = {name: value for name, value in self.describe().items() if name not in ("device_type", "weights")}
        if isinstance(getattr(self, "config", None), dict):
            settings["weights_metadata"] = {key: value for key, value in self.config.items() if key != "provenance"}
        digest.update(f"{type(self).__module__}.{type(self).__qualname__}|".encode())
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        digest.update(tensors_digest(self.weight_tensors()).encode())
        return digest.hexdigest()


def _short(value) -> str:
    """An object in a ``repr``: its type (and parameter count) for a network, else its own ``repr``."""
    if isinstance(value, PyTorchClassifier):
        return f"<ART {type(value).__name__} of {_short(value.model)}>"
    if isinstance(value, nn.Module):
        count = sum(p.numel() for p in value.parameters())
        return f"<{type(value).__name__}, {count:,} parameters>"
    return repr(value)


@dataclass(repr=False)
class Deployment:
    """A victim with a defence in place: ART is given ``model`` and ``preprocessors``."""

    model: nn.Module
    preprocessors: list[PreprocessorPyTorch] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Deployment(model={_short(self.model)}, preprocessors={self.preprocessors!r})"

    def classifier(self, nb_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32),
                   clip_values: tuple[float, float] = (0.0, 1.0),
                   device: str | torch.device | None = None) -> PyTorchClassifier:
        """The ART ``PyTorchClassifier`` of this deployment (cross-entropy loss), with the model moved to ``device``.

        :param device: ``None`` (the best available: the current CUDA device when torch sees one, else the CPU),
            ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (that GPU, whichever is current); see
            :func:`~art_purifiers.devices.resolve_device`.
        :raises ValueError: ``preprocessors`` holds one of ART's ``EoT*PyTorch`` preprocessors (see
            :func:`refuse_art_eot`), or a device that is not there.
        """
        refuse_art_eot(self.preprocessors)
        return art_estimator(PyTorchClassifier, resolve_device(device), model=self.model.eval(),
                             loss=nn.CrossEntropyLoss(), input_shape=input_shape, nb_classes=nb_classes,
                             clip_values=clip_values, preprocessing_defences=list(self.preprocessors) or None)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """What the deployed classifier computes on ``x`` ``(N, C, H, W)``: each preprocessor's ``forward``, then the
        model (differentiable as the defences' gradient modes make it)."""
        for preprocessor in self.preprocessors:
            x, _ = preprocessor.forward(x)
        return self.model(x)

    def with_eot(self, draws: int, draws_per_forward: int | None = None) -> Deployment:
        """The same deployment with the expectation over ``draws`` draws inside the model (no preprocessors);
        ``draws_per_forward`` as in :class:`EOTClassifier`."""
        return Deployment(EOTClassifier(self.model, self.preprocessors, draws, draws_per_forward), [])


def art_estimator(cls: type, device: torch.device, **kwargs):
    """``cls(**kwargs, device_type=...)``, an ART PyTorch estimator, on ``device`` exactly: ART takes the current CUDA
    device for ``device_type="gpu"``, so ``cuda:N`` is made current while it is built (and ART's own preprocessing
    with it)."""
    with current_cuda_device(device):
        return cls(**kwargs, device_type="cpu" if device.type == "cpu" else "gpu")


def refuse_art_eot(preprocessors: Sequence[PreprocessorPyTorch]) -> None:
    """Raise ``ValueError`` if ``preprocessors`` holds one of ART's EoT preprocessors (``EoTPyTorch`` subclasses,
    e.g. ``EoTGaussianNoisePyTorch``).

    They return ``nb_samples`` rows per image, so ``predict`` gives ``(N * nb_samples, classes)``. On ART 1.20.1 only
    PGD with labels survives that: PGD without labels fails with a size mismatch, AutoAttack with a broadcast error
    and HopSkipJump with a reshape error (``docs/evaluating.md``). Inside :class:`EOTClassifier` they would be
    averaged over the wrong rows. ``deploy(victim, eot=k)`` puts the expectation inside the model instead.
    """
    for preprocessor in preprocessors:
        if isinstance(preprocessor, EoTPyTorch):
            rows = getattr(preprocessor, "nb_samples", "several")
            raise ValueError(
                f"ART's {type(preprocessor).__name__} returns {rows} rows per image, which "
                "AutoAttack, HopSkipJump and PGD without labels cannot handle. For expectation over transformation "
                "use defence.deploy(victim, eot=k) (art_purifiers.deploy.EOTClassifier), which averages k draws "
                "inside the model; to average over a transformation of your own, wrap it as a PreprocessorPyTorch "
                "that returns one row per image and pass it to EOTClassifier."
            )


class EOTClassifier(nn.Module):
    """``logits(x) = mean_k model(preprocessors(x; draw k))`` for ``x`` of shape ``(N, C, H, W)`` in ``[0, 1]``.

    ART's own ``EoT*PyTorch`` preprocessors multiply the batch, which breaks AutoAttack, APGD and HopSkipJump (they
    are refused here and by :meth:`Deployment.classifier`, see :func:`refuse_art_eot`); here the expectation is
    inside the model, so ART sees an ordinary classifier whose gradients (Athalye et al. 2018)
    and decisions are averages over draws.

    :param model: Classifier taking the preprocessed images, returning ``(M, classes)`` logits.
    :param preprocessors: One ART ``PreprocessorPyTorch`` or a sequence of them, applied in order; their
        ``gradient`` mode decides how gradients pass through them. Leave their ``seed`` as ``None`` so that every
        call draws afresh.
    :param draws: Number of draws averaged, ``>= 1``.
    :param draws_per_forward: Draws batched into one forward pass (``draws_per_forward x N`` images through the
        defence and the model at once), ``>= 1``; ``None``: all of them, the fastest where memory allows. Lower it
        when ``draws x N`` images do not fit; ``1`` runs the draws one after the other. The value is the mean of
        the draws' logits either way (up to float rounding), and so is its gradient.
    """

    def __init__(self, model: nn.Module, preprocessors: PreprocessorPyTorch | Sequence[PreprocessorPyTorch],
                 draws: int = 8, draws_per_forward: int | None = None) -> None:
        super().__init__()
        self.draws = check_integer("draws", draws, minimum=1)
        self.draws_per_forward = self.draws if draws_per_forward is None else min(
            check_integer("draws_per_forward", draws_per_forward, minimum=1), self.draws)
        self.model = model
        self.preprocessors = [preprocessors] if isinstance(preprocessors, PreprocessorPyTorch) else list(preprocessors)
        refuse_art_eot(self.preprocessors)  # they multiply the batch, which the view in forward cannot undo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Each defence draws its random numbers per sample, so the repeated copies get independent draws.
        deployment, total, done = Deployment(self.model, self.preprocessors), 0, 0
        while done < self.draws:
            group = min(self.draws_per_forward, self.draws - done)
            logits = deployment.logits(x.repeat_interleave(group, dim=0))
            total = total + logits.view(x.shape[0], group, -1).sum(dim=1)
            done += group
        return total / self.draws


class DefenceChain(Defence):
    """Several defences deployed in order: input purifiers run one after the other, model changes wrap the model
    in turn (e.g. IDFR: an input denoiser, then a feature restorer inside the victim)."""

    def __init__(self, defences: Sequence[Defence]) -> None:
        if not defences or not all(isinstance(d, Defence) for d in defences):
            raise ValueError("A DefenceChain needs one or more Defence objects.")
        self.defences = list(defences)

    @property
    def params(self) -> list[str]:  # type: ignore[override]
        return sorted({name for defence in self.defences for name in defence.params})

    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        return all(defence.differentiable for defence in self.defences)

    @property
    def randomized(self) -> bool:  # type: ignore[override]
        return any(defence.randomized for defence in self.defences)

    @property
    def gradient(self) -> str:  # type: ignore[override]
        modes = {defence.gradient for defence in self.defences}
        return modes.pop() if len(modes) == 1 else "mixed"

    def _set(self, params: dict) -> None:
        """Each member gets the parameters it has (``seed`` goes to the random ones only)."""
        for defence in self.defences:
            defence._set({key: value for key, value in params.items() if key in defence.settable()})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.defences!r})"

    def describe(self) -> dict:
        return {"chain": [{"defence": type(d).__name__, **d.describe()} for d in self.defences]}

    def fingerprint(self) -> str:
        """Hex sha256 of the class and of each member's fingerprint, in order."""
        parts = [f"{type(self).__module__}.{type(self).__qualname__}", *(d.fingerprint() for d in self.defences)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def weight_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for index, defence in enumerate(self.defences):
            for key, tensor in defence.weight_tensors():
                yield f"{index}.{key}", tensor

    def _deploy(self, victim: nn.Module) -> Deployment:
        model, preprocessors = victim, []
        for defence in self.defences:
            deployment = defence.deploy(model)
            model, preprocessors = deployment.model, preprocessors + deployment.preprocessors
        return Deployment(model, preprocessors)


class EmbeddingDefence(Defence):
    """A defence that changes the model: ``logits = head(module(encoder(x)))``, with ``module`` inserted between
    the victim's encoder and head (see :func:`~art_purifiers.models.split.split_victim`).

    ``gradient="exact"`` back-propagates through ``module``; ``"bpda"`` treats it as the identity in the backward
    pass (its output's gradient is passed to its input unchanged), which needs equal input and output shapes.

    :param module: Maps embeddings ``(N, D)`` to embeddings ``(N, D)``; frozen and put in ``eval()`` mode.
    :param gradient: ``"exact"`` or ``"bpda"``.
    :param encoder: Explicit encoder of the victim, for models without timm's split (give ``head`` too).
    :param head: Explicit head of the victim.
    """

    params = ["gradient"]
    objects = ["module", "encoder", "head"]

    def __init__(self, module: nn.Module, gradient: str = "exact", encoder: nn.Module | None = None,
                 head: nn.Module | None = None) -> None:
        self.module = module.eval().requires_grad_(False)
        self.encoder, self.head = encoder, head
        self.gradient = gradient
        self._check_defence()

    def _set(self, params: dict) -> None:
        super()._set(params)
        self.module = self.module.eval().requires_grad_(False)

    def _deploy(self, victim: nn.Module) -> Deployment:
        encoder, head = split_victim(victim, self.encoder, self.head)
        return Deployment(EmbeddingDefendedClassifier(encoder, self.module, head, self.gradient), [])


class EmbeddingDefendedClassifier(nn.Module):
    """``head(module(encoder(x)))``, with BPDA through ``module`` when ``gradient="bpda"``."""

    def __init__(self, encoder: nn.Module, module: nn.Module, head: nn.Module, gradient: str = "exact") -> None:
        super().__init__()
        self.encoder, self.module, self.head = encoder, module, head
        self.gradient = check_choice("gradient", gradient, GRADIENT_MODES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self.encoder(x)
        if self.gradient == "exact":
            return self.head(self.module(embedding))
        with torch.no_grad():
            changed = self.module(embedding)
        if changed.shape != embedding.shape:
            raise ValueError(f"BPDA needs the module to keep the embedding's shape {tuple(embedding.shape)}, "
                             f"got {tuple(changed.shape)}.")
        return self.head(embedding + (changed - embedding).detach())
