"""Train IRAD (Cao et al., ICLR 2024): the implicit representation (stage 1), then SampleNet (stage 2).

The paper releases no training code; this follows its Sec. 4.4, Sec. 6 and App. A.1:

* pairs: L-inf PGD (eps 8/255, step 2/255, 100 steps in the paper) crafted on a *source* classifier and stored
  with 8-bit quantisation (as DISCO stores them);
* stage 1: the representation learns one of the Table 7 tasks with an L1 loss (adversarial denoising by
  default); Adam, lr 1e-4, betas (0, 0.9), batch 128;
* stage 2: SampleNet with the representation frozen, cross-entropy of the source classifier on the resampled
  clean *and* adversarial images; Adam, lr 2e-4, betas (0, 0.9), batch 400.

Run with ``art-purifiers train irad``; every stage resumes from its checkpoint, and under ``torchrun`` the pairs
and the batches are split across ranks (DDP).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers.checks import check_choice, check_integer, check_number
from art_purifiers.models import load_victim
from art_purifiers.nn.implicit import ImplicitRepresentation
from art_purifiers.nn.samplenet import SampleNet
from art_purifiers.training.framework import Optimisation, RunContext, check_precision, run_stage, to_device
from art_purifiers.training.loops import (
    adversarial_pairs,
    augment_pairs,
    batch_for_iteration,
    iteration_generator,
    pairs_cache_path,
)
from art_purifiers.training.registry import Trainer, TrainingJob, provenance
from art_purifiers.weights import save_networks

logger = logging.getLogger(__name__)

#: Stage-1 tasks of the paper's Table 7.
TASKS = ("adversarial", "gaussian", "clean", "super-resolution", "inpainting")


@dataclass(frozen=True)
class IRADTrainingConfig:
    """Architecture and schedule of one IRAD training run."""

    blocks: int = 16
    features: int = 64
    hidden: tuple[int, ...] = (256, 256, 256, 256)
    samplenet_hidden: tuple[int, ...] = (256, 256, 256, 256)
    max_shift: float | None = None
    task: str = "adversarial"
    noise_std: float = 8 / 255
    pgd_iterations: int = 100
    pgd_eps: float = 8 / 255
    pgd_step_size: float = 2 / 255
    stage1_iterations: int = 300_000
    stage1_batch: int = 128
    stage1_lr: float = 1e-4
    stage2_iterations: int = 20_000
    stage2_batch: int = 400
    stage2_lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)
    seed: int = 0
    checkpoint_every: int = 200
    #: Use only the first ``images`` training images (``None``: all of them).
    images: int | None = None
    #: ``fp32``, ``tf32`` or ``bf16`` (:data:`~art_purifiers.training.framework.PRECISIONS`).
    precision: str = "fp32"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASKS)
        check_precision(self.precision)
        for name in ("blocks", "stage2_iterations", "seed"):
            check_integer(name, getattr(self, name), minimum=0)
        for name in ("features", "pgd_iterations", "stage1_iterations", "stage1_batch", "stage2_batch",
                     "checkpoint_every"):
            check_integer(name, getattr(self, name), minimum=1)
        for name in ("noise_std", "pgd_eps", "pgd_step_size", "stage1_lr", "stage2_lr"):
            check_number(name, getattr(self, name), minimum=0, open_minimum=True)
        if self.images is not None:
            check_integer("images", self.images, minimum=1)

    def architecture(self) -> dict:
        """The networks' sizes (the weight file records the networks' own specs)."""
        return {"method": "irad", "blocks": self.blocks, "features": self.features, "hidden": list(self.hidden),
                "samplenet_hidden": list(self.samplenet_hidden), "max_shift": self.max_shift}


#: ``cpu`` (default; called ``small`` before, a name still accepted): the CPU preset; the shipped ``irad_cifar10``
#: weights took 69 minutes of CPU time on one thread (docs/defences/irad.md). ``paper``: the paper's networks and
#: schedule (DISCO-length stage 1), sized for a GPU. ``smoke``: tiny networks on 256 images, a minute on a CPU core:
#: checks that a run works end to end.
PRESETS = {
    "cpu": IRADTrainingConfig(blocks=4, features=32, hidden=(128, 128), samplenet_hidden=(128, 128),
                              pgd_iterations=10, stage1_iterations=1500, stage1_batch=32, stage2_iterations=400,
                              stage2_batch=32, checkpoint_every=100),
    "paper": IRADTrainingConfig(),
    "smoke": IRADTrainingConfig(blocks=1, features=16, hidden=(32,), samplenet_hidden=(32,), pgd_iterations=2,
                                stage1_iterations=20, stage1_batch=16, stage2_iterations=10, stage2_batch=16,
                                checkpoint_every=10, images=256),
}


def stage1_inputs(task: str, clean: torch.Tensor, adversarial: torch.Tensor | None, noise_std: float,
                  generator: torch.Generator) -> torch.Tensor:
    """The representation's input for a Table 7 task; the target is always the clean image at full size."""
    if task == "adversarial":
        return adversarial
    if task == "clean":
        return clean
    if task == "gaussian":
        return (clean + to_device(torch.randn(clean.shape, generator=generator), clean.device) * noise_std).clamp(0, 1)
    if task == "super-resolution":
        return F.interpolate(clean, scale_factor=0.5, mode="area")
    # Inpainting: a random square of a quarter of the side is blanked in each image.
    n, _, h, w = clean.shape
    side = max(1, h // 4)
    tops = torch.randint(0, h - side + 1, (n,), generator=generator, device=generator.device)
    lefts = torch.randint(0, w - side + 1, (n,), generator=generator, device=generator.device)
    return clean * _square_mask(tops, lefts, side, (h, w), clean)


def _square_mask(tops: torch.Tensor, lefts: torch.Tensor, side: int, size: tuple[int, int],
                like: torch.Tensor) -> torch.Tensor:
    """Ones with one ``side`` x ``side`` square of zeros per image, its corner at ``(tops[i], lefts[i])``, built on
    ``like``'s device in its dtype (only the ``(N,)`` corners move there).

    :param tops: ``(N,)`` integer rows, ``0 <= top <= H - side``; ``lefts`` likewise for columns.
    :return: ``(N, 1, H, W)``.
    """
    rows = torch.arange(size[0], device=like.device) - to_device(tops, like.device)[:, None]
    columns = torch.arange(size[1], device=like.device) - to_device(lefts, like.device)[:, None]
    inside = ((rows >= 0) & (rows < side))[:, None, :, None] & ((columns >= 0) & (columns < side))[:, None, None, :]
    return (~inside).to(like.dtype)


class _IRAD(nn.Module):
    """Frozen representation + trainable SampleNet, as one module for DDP in stage 2."""

    def __init__(self, representation: ImplicitRepresentation, samplenet: SampleNet) -> None:
        super().__init__()
        self.representation = representation
        self.samplenet = samplenet

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        with torch.no_grad():
            codes = self.representation.encode(images)
        return self.representation.render(codes, h, w, self.samplenet(codes, h, w)).clamp(0, 1)


def train_irad(config: IRADTrainingConfig, x: np.ndarray, y: np.ndarray, source: nn.Module, out_dir: str | Path,
               device: str | None = "cpu") -> tuple[ImplicitRepresentation, SampleNet | None, dict]:
    """Run both stages (each resumes from ``out_dir``); returns the networks and a training report.

    :param x: Training images, float32 ``(N, 3, H, W)`` in ``[0, 1]`` (never test images).
    :param y: Their labels ``(N,)``.
    :param source: Classifier on ``[0, 1]`` images that the pairs are crafted on and SampleNet is trained through.
    :param out_dir: Folder for the pairs cache, checkpoints and the log.
    """
    context = RunContext.create(out_dir, device, config.seed, config.precision)
    with context.running():
        return _train_irad(config, context, x, y, source)


def _train_irad(config: IRADTrainingConfig, context: RunContext, x: np.ndarray, y: np.ndarray,
                source: nn.Module) -> tuple[ImplicitRepresentation, SampleNet | None, dict]:
    source = source.eval().to(context.device).requires_grad_(False)
    report: dict = {"config": dataclasses.asdict(config), **context.describe(), "images": len(x)}
    adversarial = None
    if config.task == "adversarial" or config.stage2_iterations > 0:
        began = time.perf_counter()
        recipe = {"eps": config.pgd_eps, "step": config.pgd_step_size, "steps": config.pgd_iterations,
                  "seed": config.seed}
        cache = pairs_cache_path(context.out_dir, source, x, y, recipe)
        adversarial = adversarial_pairs(source, x, y, cache, config.pgd_eps, config.pgd_step_size,
                                        config.pgd_iterations, seed=config.seed, device=str(context.device),
                                        distributed=context.distributed)
        report["pairs_seconds"] = time.perf_counter() - began
    # On a GPU the whole training set moves there once, so a batch is indexed where it is used.
    x_t = torch.from_numpy(x).to(context.device)
    adv_t = None if adversarial is None else torch.from_numpy(adversarial.astype(np.float32) / 255).to(context.device)
    representation = _train_representation(config, context, x_t, adv_t, report)
    samplenet = None
    if config.stage2_iterations > 0:
        y_t = torch.from_numpy(y).long().to(context.device)
        samplenet = _train_samplenet(config, context, representation, source, x_t, adv_t, y_t, report)
    # Stage times include the time before any resume; the pairs' time is that of this run (crafting, or reading
    # them from the cache).
    report["seconds"] = sum(report.get(f"{part}_seconds", 0.0) for part in ("pairs", "stage1", "stage2"))
    return representation.cpu(), None if samplenet is None else samplenet.cpu(), report


def _train_representation(config: IRADTrainingConfig, context: RunContext, x_t: torch.Tensor,
                          adv_t: torch.Tensor | None, report: dict) -> ImplicitRepresentation:
    torch.manual_seed(config.seed)
    representation = ImplicitRepresentation(config.blocks, config.features, config.hidden).to(context.device)
    model = context.wrap(representation)
    optimisation = Optimisation(representation.parameters(), torch.optim.Adam(
        representation.parameters(), lr=config.stage1_lr, betas=config.betas), mixed_precision=context.mixed_precision)
    rank, world = context.distributed.rank, context.distributed.world

    def step(i: int) -> torch.Tensor:
        idx = batch_for_iteration(i, len(x_t), config.stage1_batch, config.seed, rank, world)
        generator = iteration_generator(config.seed, i, rank)
        clean = x_t[idx]
        paired = adv_t[idx] if adv_t is not None else clean
        clean, paired = (t.to(context.device) for t in augment_pairs(generator, clean, paired))
        inputs = stage1_inputs(config.task, clean, paired, config.noise_std, generator)
        with optimisation.autocast(context.device):
            loss = F.l1_loss(model(inputs, size=clean.shape[-2:]), clean)
        return optimisation.step(loss, i)

    result = run_stage(context, "stage 1 (implicit representation)", "stage1", step,
                       {"representation": representation}, optimisation, config.stage1_iterations,
                       config.checkpoint_every)
    report["stage1_log"], report["stage1_seconds"] = result.log, result.seconds
    return representation.eval().requires_grad_(False)


def _train_samplenet(config: IRADTrainingConfig, context: RunContext, representation: ImplicitRepresentation,
                     source: nn.Module, x_t: torch.Tensor, adv_t: torch.Tensor, y_t: torch.Tensor,
                     report: dict) -> SampleNet:
    torch.manual_seed(config.seed + 1)
    samplenet = SampleNet(config.features, config.samplenet_hidden, config.max_shift).to(context.device)
    irad = context.wrap(_IRAD(representation, samplenet))
    optimisation = Optimisation(samplenet.parameters(), torch.optim.Adam(
        samplenet.parameters(), lr=config.stage2_lr, betas=config.betas), mixed_precision=context.mixed_precision)
    rank, world = context.distributed.rank, context.distributed.world

    def step(i: int) -> torch.Tensor:
        idx = batch_for_iteration(i, len(x_t), config.stage2_batch, config.seed + 1, rank, world)
        generator = iteration_generator(config.seed + 1, i, rank)
        clean, paired = (t.to(context.device) for t in augment_pairs(generator, x_t[idx], adv_t[idx]))
        labels = y_t[idx].to(context.device)
        with optimisation.autocast(context.device):
            loss = F.cross_entropy(source(irad(torch.cat([clean, paired]))), torch.cat([labels, labels]))
        return optimisation.step(loss, i)

    result = run_stage(context, "stage 2 (SampleNet)", "stage2", step, {"samplenet": samplenet}, optimisation,
                       config.stage2_iterations, config.checkpoint_every)
    report["stage2_log"], report["stage2_seconds"] = result.log, result.seconds
    return samplenet.eval().requires_grad_(False)


def export_weights(representation: ImplicitRepresentation, samplenet: SampleNet | None, config: IRADTrainingConfig,
                   path: str | Path, provenance: dict | None = None) -> str:
    """Write an IRAD weight file (safetensors; architecture and provenance in its metadata); return its sha256."""
    networks = {"representation": representation, **({"samplenet": samplenet} if samplenet is not None else {})}
    return save_networks(networks, path, metadata={"method": "irad", "provenance": provenance or {}})


def run(config: IRADTrainingConfig, job: TrainingJob) -> dict:
    """``art-purifiers train irad``: train on ``job``'s images through the source classifier, export if asked."""
    source_name = job.options.get("source", "resnet32")
    representation, samplenet, report = train_irad(config, job.x, job.y, load_victim(source_name), job.out_dir,
                                                   job.device)
    report.update(command=job.command, source=source_name)
    if job.export is not None:
        record = provenance(report, "source")
        report["sha256"] = export_weights(representation, samplenet, config, job.export, record)
    return report


TRAINER = Trainer(
    method="irad",
    summary="IRAD: implicit representation (stage 1), then SampleNet (stage 2)",
    presets=PRESETS,
    renamed_presets={"small": "cpu"},
    run=run,
    options={"source": ("resnet32", "classifier the pairs are crafted on and SampleNet is trained through: a bundled "
                                    "victim (resnet20, resnet32, resnet20-at) or a checkpoint path")},
)
