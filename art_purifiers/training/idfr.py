"""Train IDFR (Li et al., 2021, arXiv:2111.10075): the input denoiser (Algorithm 1), then the feature restorer
(Algorithm 2), both through the frozen target classifier.

* Examples (Algorithm 1, lines 1-4): FGSM, BIM and C&W L-inf at each eps, crafted once on the target (BIM and C&W:
  ``attack_iterations`` steps of ``attack_step_size``, the paper's 0.03). The paper crafts every attack for every image;
  ``examples_per_image=1`` draws one (attack, eps) per image instead, which the CPU preset uses.
* Denoiser: cross-entropy of the frozen target on the denoised adversarial examples together with Gaussian-augmented
  clean images (``x + N(0, s^2)``, ``s`` drawn per image and iteration from ``noise_levels``: multi-round
  augmentation, Jeong & Shin 2020), Adam.
* Restorer: cross-entropy of the frozen head on convex combinations ``a h + (1 - a) h'``, ``a ~ U(0, 1)``, of encoder
  embeddings of denoised samples of one class. ``pairing="paper"`` (Eq. 6): ``h`` correctly classified by the head,
  ``h'`` misclassified (any member of the class when it has no misclassified one); ``pairing="code"`` (the public
  code): ``h`` a denoised augmented clean image, ``h'`` a denoised adversarial example.
* The last ``validation_images`` training images are held out: the validation hook reports clean and BIM-20 8/255
  (crafted on the bare target) accuracy through the defence on them.

Run with ``art-purifiers train idfr``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers.checks import check_choice, check_integer, check_number
from art_purifiers.models import load_victim, split_victim
from art_purifiers.nn.idfr import DENOISER_WIDTHS, FeatureRestorer, InputDenoiser
from art_purifiers.training.framework import Optimisation, RunContext, Schedule, accuracies, run_stage, to_device
from art_purifiers.training.loops import (
    adversarial_pairs,
    batch_for_iteration,
    iteration_generator,
    pairs_cache_path,
    pgd_linf,
)
from art_purifiers.training.registry import RunSettings, Trainer, TrainingJob, provenance
from art_purifiers.weights import save_networks

#: Attacks of Algorithm 1 (C&W L-inf: PGD without random start on the C&W margin, inside the budget).
ATTACKS = ("fgsm", "bim", "cw")
PAIRINGS = ("paper", "code")


@dataclass(frozen=True)
class IDFRTrainingConfig(RunSettings):
    """Examples, networks and schedules of one IDFR training run."""

    attacks: tuple[str, ...] = ATTACKS
    eps: tuple[float, ...] = (4 / 255, 8 / 255, 16 / 255)
    attack_iterations: int = 20
    attack_step_size: float = 0.03
    #: (attack, eps) settings crafted per image: ``None`` for all of them (the paper), else drawn at random.
    examples_per_image: int | None = None
    noise_levels: tuple[float, ...] = (0.0, 4 / 255, 8 / 255, 16 / 255)
    denoiser_widths: tuple[int, ...] = DENOISER_WIDTHS
    denoiser_iterations: int = 63_000
    denoiser_batch: int = 64
    denoiser_lr: float = 0.01
    restorer_skips: bool = False
    pairing: str = "paper"
    restorer_iterations: int = 40_000
    restorer_batch: int = 96
    restorer_lr: float = 0.01
    schedule: str = "constant"
    warmup: int = 0
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        self._check_run_settings()
        for attack in self.attacks:
            check_choice("attacks", attack, ATTACKS)
        for eps in (*self.eps, self.attack_step_size):
            check_number("eps and attack_step_size", eps, minimum=0, maximum=1, open_minimum=True)
        for level in self.noise_levels:
            check_number("noise_levels", level, minimum=0, maximum=1)
        for name in ("attack_iterations", "denoiser_batch", "restorer_batch"):
            check_integer(name, getattr(self, name), minimum=1)
        for name in ("denoiser_iterations", "restorer_iterations", "warmup"):
            check_integer(name, getattr(self, name), minimum=0)
        for name in ("denoiser_lr", "restorer_lr"):
            check_number(name, getattr(self, name), minimum=0, open_minimum=True)
        check_choice("pairing", self.pairing, PAIRINGS)
        check_choice("schedule", self.schedule, ("constant", "cosine"))
        if self.examples_per_image is not None:
            check_integer("examples_per_image", self.examples_per_image, 1, len(self.attacks) * len(self.eps))

    def settings(self) -> list[tuple[str, float]]:
        """Every (attack, eps) of Algorithm 1."""
        return [(attack, eps) for attack in self.attacks for eps in self.eps]


#: ``cpu`` (default): the shipped weights' preset, about 45 minutes of one CPU thread (docs/defences/idfr.md): one
#: (attack, eps) per image, 500 denoiser steps of 64 + 64 images (about 4 passes over the examples), Adam 1e-3 with a
#: cosine decay, the restorer with skips (chosen on held-out training images). ``paper``: 100 + 80 epochs of every
#: attack at every eps, Adam 0.01, the plain Table-7 restorer (for a GPU). ``smoke``: tiny, seconds on one core.
PRESETS = {
    "cpu": IDFRTrainingConfig(examples_per_image=1, denoiser_iterations=500, denoiser_lr=1e-3,
                              restorer_iterations=3000, restorer_lr=1e-3, restorer_skips=True, schedule="cosine",
                              warmup=20, validate_every=100, checkpoint_every=25),
    "paper": IDFRTrainingConfig(),
    "smoke": IDFRTrainingConfig(examples_per_image=1, attack_iterations=2, denoiser_widths=(8, 8, 8, 8, 8, 8, 8, 8),
                                denoiser_iterations=20, denoiser_batch=16, restorer_iterations=20, restorer_batch=32,
                                validation_images=32, validate_every=10, checkpoint_every=10, images=288),
}


def example_plan(config: IDFRTrainingConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of Algorithm 1: ``(image index, setting index)`` for each adversarial example to craft, settings indexing
    :meth:`IDFRTrainingConfig.settings`; a function of the seed alone."""
    count = len(config.settings())
    if config.examples_per_image is None:
        return np.repeat(np.arange(n), count), np.tile(np.arange(count), n)
    rng = np.random.default_rng(config.seed)
    chosen = np.stack([rng.permutation(count)[: config.examples_per_image] for _ in range(n)])
    return np.repeat(np.arange(n), config.examples_per_image), chosen.reshape(-1)


def _craft_settings(config: IDFRTrainingConfig, setting_of_row: np.ndarray):
    """A :data:`~art_purifiers.training.loops.Craft` that attacks each row with its own (attack, eps)."""
    settings = config.settings()

    def craft(model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, start: int):
        rows = setting_of_row[start : start + len(x)]
        out = x.clone()
        for attack in config.attacks:
            chosen = [i for i, s in enumerate(rows) if settings[s][0] == attack]
            if not chosen:
                continue
            index = torch.tensor(chosen)
            eps = torch.tensor([settings[rows[i]][1] for i in chosen], dtype=x.dtype, device=x.device)[:, None, None,
                                                                                                       None]
            steps, step = (1, eps) if attack == "fgsm" else (config.attack_iterations, config.attack_step_size)
            out[index] = pgd_linf(model, x[index], y[index], eps, step, steps, generator, random_start=False,
                                  loss="margin" if attack == "cw" else "ce")
        return out

    return craft


def craft_examples(config: IDFRTrainingConfig, context: RunContext, target: nn.Module, x: np.ndarray,
                   y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1's adversarial examples ``(uint8 images, image index of each)``, cached under a key of the
    target's weights, the images and the recipe, crafted in shares under ``torchrun``."""
    source_index, setting = example_plan(config, len(x))
    recipe = {"algorithm": "idfr-1", "settings": config.settings(), "iterations": config.attack_iterations,
              "step": config.attack_step_size, "examples_per_image": config.examples_per_image, "seed": config.seed}
    cache = pairs_cache_path(context.out_dir, target, x, y, recipe)
    examples = adversarial_pairs(target, x[source_index], y[source_index], cache, seed=config.seed,
                                 device=str(context.device), distributed=context.distributed,
                                 craft=_craft_settings(config, setting))
    return examples, source_index


def _augmented(config: IDFRTrainingConfig, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Multi-round Gaussian augmentation: each image gets noise of a level drawn from ``noise_levels``."""
    levels = torch.tensor(config.noise_levels)[torch.randint(len(config.noise_levels), (len(clean),),
                                                             generator=generator)]
    noise = torch.randn(clean.shape, generator=generator) * levels[:, None, None, None]
    return (clean + to_device(noise, clean.device)).clamp(0, 1)


def _flip(generator: torch.Generator, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The same random horizontal flip on every tensor (the target saw no other augmentation)."""
    flip = bool(torch.rand((), generator=generator) < 0.5)
    return tuple(image.flip(-1) if flip else image for image in images)


def _optimisation(parameters, lr: float, iterations: int, config: IDFRTrainingConfig,
                  context: RunContext) -> Optimisation:
    parameters = list(parameters)
    schedule = Schedule(max(1, iterations), min(config.warmup, iterations), config.schedule)
    return Optimisation(parameters, torch.optim.Adam(parameters, lr=lr), schedule, config.clip_norm,
                        mixed_precision=context.mixed_precision)


@dataclass
class _Data:
    """Training tensors on the run's device: clean images and labels, the adversarial examples and their image
    indices."""

    x: torch.Tensor
    y: torch.Tensor
    adversarial: torch.Tensor
    source: torch.Tensor


def train_denoiser(config: IDFRTrainingConfig, context: RunContext, target: nn.Module, data: _Data, report: dict,
                   score: Callable[[nn.Module], dict] | None = None) -> InputDenoiser:
    """Algorithm 1: the denoiser with the frozen target's cross-entropy on adversarial and augmented images."""
    torch.manual_seed(config.seed)
    denoiser = InputDenoiser(data.x.shape[1], config.denoiser_widths).to(context.device)
    model = context.wrap(denoiser)
    optimisation = _optimisation(denoiser.parameters(), config.denoiser_lr, config.denoiser_iterations, config,
                                 context)
    rank, world = context.distributed.rank, context.distributed.world

    def step(i: int) -> torch.Tensor:
        denoiser.train()
        generator = iteration_generator(config.seed, i, rank)
        rows = batch_for_iteration(i, len(data.adversarial), config.denoiser_batch, config.seed, rank, world)
        clean_rows = batch_for_iteration(i, len(data.x), config.denoiser_batch, config.seed + 1, rank, world)
        adversarial, clean = _flip(generator, data.adversarial[rows], _augmented(config, data.x[clean_rows],
                                                                                  generator))
        inputs = torch.cat([adversarial, clean])
        labels = torch.cat([data.y[data.source[rows]], data.y[clean_rows]])
        with optimisation.autocast(context.device):
            loss = F.cross_entropy(target(model(inputs).clamp(0, 1)), labels)
        return optimisation.step(loss, i)

    result = run_stage(context, "denoiser", "denoiser", step, {"denoiser": denoiser}, optimisation,
                       config.denoiser_iterations, config.checkpoint_every,
                       validate=None if score is None else lambda i: score(denoiser.eval()),
                       validate_every=config.validate_every)
    report.update(denoiser_log=result.log, denoiser_seconds=result.seconds, denoiser_validation=result.validations)
    return denoiser.eval().requires_grad_(False)


@torch.no_grad()
def embeddings(encoder: nn.Module, denoiser: InputDenoiser, images: torch.Tensor, device: torch.device,
               batch_size: int = 256) -> torch.Tensor:
    """``encoder(denoiser(images))`` for ``images`` ``(N, C, H, W)`` on the CPU; returns ``(N, D)`` on the CPU."""
    out = [encoder(denoiser(chunk.to(device)).clamp(0, 1)).cpu() for chunk in torch.split(images, batch_size)]
    return torch.cat(out)


class ConvexPairs:
    """Pools of embeddings per class and the pairs of Algorithm 2 drawn from them (see the module's docstring)."""

    def __init__(self, clean: torch.Tensor, adversarial: torch.Tensor, labels_clean: torch.Tensor,
                 labels_adversarial: torch.Tensor, head: nn.Module, pairing: str) -> None:
        self.pairing = check_choice("pairing", pairing, PAIRINGS)
        self.h = torch.cat([clean, adversarial])
        self.labels = torch.cat([labels_clean, labels_adversarial])
        with torch.no_grad():
            device = next(head.parameters()).device  # pools and draws stay on the CPU; the head may not
            correct = head(self.h.to(device)).argmax(1).cpu() == self.labels
        is_clean = torch.arange(len(self.h)) < len(clean)
        self.classes = sorted(int(c) for c in self.labels.unique())
        first, second = (correct, ~correct) if pairing == "paper" else (is_clean, ~is_clean)
        self.pools = {c: (self._members(c, first), self._members(c, second)) for c in self.classes}
        self.correct_share = float(correct.float().mean())

    def _members(self, label: int, mask: torch.Tensor) -> torch.Tensor:
        members = torch.nonzero((self.labels == label) & mask).flatten()
        # A class with an empty pool draws from the whole class instead.
        return members if len(members) else torch.nonzero(self.labels == label).flatten()

    def draw(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a h + (1 - a) h', label)`` for ``batch`` pairs of one class each, classes uniform: ``(batch, D)`` on
        the embeddings' device and ``(batch,)``. One scalar ``randint`` per pool member drawn: that order of draws
        is the random stream the shipped weights were trained with, and a batched draw would change it."""
        cpu = generator.device
        chosen = torch.randint(len(self.classes), (batch,), generator=generator, device=cpu).cpu()
        labels = torch.tensor(self.classes, device="cpu")[chosen]
        first, second = [], []
        for label in labels.tolist():
            pool_a, pool_b = self.pools[label]
            first.append(pool_a[torch.randint(len(pool_a), (), generator=generator, device=cpu).cpu()])
            second.append(pool_b[torch.randint(len(pool_b), (), generator=generator, device=cpu).cpu()])
        members = to_device(torch.stack([torch.stack(first), torch.stack(second)], dim=1), self.h.device)
        alpha = to_device(torch.rand(batch, 1, generator=generator, device=cpu), self.h.device)
        return alpha * self.h[members[:, 0]] + (1 - alpha) * self.h[members[:, 1]], labels


def train_restorer(config: IDFRTrainingConfig, context: RunContext, pairs: ConvexPairs, head: nn.Module,
                   report: dict, score: Callable[[nn.Module], dict] | None = None) -> FeatureRestorer:
    """Algorithm 2: the restorer with the frozen head's cross-entropy on convex combinations of embeddings."""
    torch.manual_seed(config.seed + 2)
    restorer = FeatureRestorer(pairs.h.shape[1], config.restorer_skips).to(context.device)
    model = context.wrap(restorer)
    optimisation = _optimisation(restorer.parameters(), config.restorer_lr, config.restorer_iterations, config,
                                 context)

    def step(i: int) -> torch.Tensor:
        restorer.train()
        mixed, labels = pairs.draw(config.restorer_batch, iteration_generator(config.seed + 2, i,
                                                                              context.distributed.rank))
        with optimisation.autocast(context.device):
            loss = F.cross_entropy(head(model(to_device(mixed, context.device))), to_device(labels, context.device))
        return optimisation.step(loss, i)

    result = run_stage(context, "restorer", "restorer", step, {"restorer": restorer}, optimisation,
                       config.restorer_iterations, config.checkpoint_every,
                       validate=None if score is None else lambda i: score(restorer.eval()),
                       validate_every=config.validate_every)
    report.update(restorer_log=result.log, restorer_seconds=result.seconds, restorer_validation=result.validations,
                  restorer_pool_correct=pairs.correct_share)
    return restorer.eval().requires_grad_(False)


class HeldOut:
    """The validation images (the last ``validation_images`` training images, never trained on) and their BIM-20
    8/255 examples crafted on the bare target: what the validation hook scores."""

    def __init__(self, target: nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device, seed: int) -> None:
        self.device = device
        self.x, self.y = torch.from_numpy(x).to(device), torch.from_numpy(y).long().to(device)
        generator = torch.Generator().manual_seed(seed)
        self.adversarial = pgd_linf(target, self.x, self.y, 8 / 255, 2 / 255, 20, generator, random_start=False)

    def scores(self, classify) -> dict:
        """Clean and BIM accuracy (%) of ``classify(images) -> logits``."""
        return accuracies(classify, self.y, clean=self.x, bim8=self.adversarial)


def train_idfr(config: IDFRTrainingConfig, x: np.ndarray, y: np.ndarray, target: nn.Module, out_dir: str | Path,
               device: str | None = "cpu") -> tuple[InputDenoiser, FeatureRestorer | None, dict]:
    """Both algorithms (each stage resumes from ``out_dir``); returns the networks and a training report.

    :param x: Training images, float32 ``(N, 3, H, W)`` in ``[0, 1]`` (never test images); the last
        ``config.validation_images`` of them are held out for validation.
    :param y: Their labels ``(N,)``.
    :param target: The classifier (images in ``[0, 1]`` to logits) the defence is trained through, with an
        encoder/head split (:func:`~art_purifiers.models.split_victim`).
    """
    context = RunContext.create(out_dir, device, config.seed, config.precision)
    with context.running():
        return _train_idfr(config, context, x, y, target)


def _train_idfr(config: IDFRTrainingConfig, context: RunContext, x: np.ndarray, y: np.ndarray,
                target: nn.Module) -> tuple[InputDenoiser, FeatureRestorer | None, dict]:
    target = target.eval().to(context.device).requires_grad_(False)
    encoder, head = split_victim(target)
    held = len(x) - config.validation_images
    if held < 1:
        raise ValueError(f"validation_images={config.validation_images} leaves no training image of {len(x)}.")
    report: dict = {"config": dataclasses.asdict(config), **context.describe(), "images": held,
                    "validation_images": config.validation_images}
    began = time.perf_counter()
    examples, source = craft_examples(config, context, target, x[:held], y[:held])
    report["examples"], report["examples_seconds"] = len(examples), time.perf_counter() - began
    # On a GPU the whole training set moves there once, so a batch is indexed where it is used.
    data = _Data(*(tensor.to(context.device) for tensor in (
        torch.from_numpy(x[:held]), torch.from_numpy(y[:held]).long(),
        torch.from_numpy(examples.astype(np.float32) / 255), torch.from_numpy(source))))
    # Only rank 0 validates, so only rank 0 crafts the held-out examples.
    held_out = HeldOut(target, x[held:], y[held:], context.device, config.seed) \
        if config.validation_images and context.distributed.is_main else None

    def score_denoiser(denoiser: nn.Module) -> dict:
        return held_out.scores(lambda images: target(denoiser(images).clamp(0, 1)))

    denoiser = train_denoiser(config, context, target, data, report, score_denoiser if held_out else None)
    restorer = None
    if config.restorer_iterations > 0:
        began = time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed + 3)
        pairs = ConvexPairs(embeddings(encoder, denoiser, _augmented(config, data.x, generator), context.device),
                            embeddings(encoder, denoiser, data.adversarial, context.device), data.y.cpu(),
                            data.y[data.source].cpu(), head, config.pairing)
        report["embeddings_seconds"] = time.perf_counter() - began

        def score_restorer(restorer: nn.Module) -> dict:
            return held_out.scores(lambda images: head(restorer(encoder(denoiser(images).clamp(0, 1)))))

        restorer = train_restorer(config, context, pairs, head, report, score_restorer if held_out else None)
    report["seconds"] = sum(report.get(f"{part}_seconds", 0.0)
                            for part in ("examples", "denoiser", "embeddings", "restorer"))
    return denoiser.cpu(), None if restorer is None else restorer.cpu(), report


def export_weights(denoiser: InputDenoiser, restorer: FeatureRestorer | None, config: IDFRTrainingConfig,
                   path: str | Path, target: str, provenance: dict | None = None) -> str:
    """Write an IDFR weight file (safetensors; architecture, target and provenance in its metadata); return its
    sha256."""
    networks = {"denoiser": denoiser, **({"restorer": restorer} if restorer is not None else {})}
    metadata = {"method": "idfr", "pairing": config.pairing, "target": target, "provenance": provenance or {}}
    return save_networks(networks, path, metadata=metadata)


def run(config: IDFRTrainingConfig, job: TrainingJob) -> dict:
    """``art-purifiers train idfr``: train through the target on ``job``'s images, export if asked."""
    target_name = job.options.get("target", "resnet20")
    denoiser, restorer, report = train_idfr(config, job.x, job.y, load_victim(target_name), job.out_dir, job.device)
    report.update(command=job.command, target=target_name)
    if job.export is not None:
        record = provenance(report, "target")
        report["sha256"] = export_weights(denoiser, restorer, config, job.export, target_name, record)
    return report


TRAINER = Trainer(
    method="idfr",
    summary="IDFR: input denoiser (Algorithm 1), then feature restorer (Algorithm 2), through the frozen target",
    presets=PRESETS,
    run=run,
    options={"target": ("resnet20", "classifier the defence is trained through: a bundled victim (resnet20, "
                                    "resnet32) or a checkpoint path")},
)
