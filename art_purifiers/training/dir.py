"""Train DIR's masked-ViT denoiser (Zhou et al., ICML 2023) for a frozen target classifier.

* Stage 1, MSE: the denoiser restores clean images from masked adversarial ones (PGD crafted once on the target,
  cached as pairs), fresh complementary masks every step; AdamW with warm-up and cosine decay (the MAE recipe the
  public code follows, which suits a ViT).
* Stage 2, ``L_adv + alpha * L_rep``: every step crafts PGD examples through denoiser and target (fresh masks at
  every attack step, as at deployment); ``L_adv`` is the target's cross-entropy on their restorations; ``L_rep`` is
  the KL divergence between the target's outputs on a restoration and on a KL-maximising perturbation of it, found
  by PGD on the target alone, *projected* to its eps-ball and clipped to ``[0, 1]`` (the public code's projection is
  a no-op; ``representation`` picks the paper's form or the code's, see ``_representation_loss``). An optional
  ``clip_norm`` clips stage 2's gradient norm. ``clean_weight`` adds the
  cross-entropy on restored clean images, a guard against the collapse short adversarial training causes. A
  constant rate: SGD at the public code's 5e-5 (paper preset) or AdamW (cpu preset). The target stays frozen.
* The last ``validation_images`` training images are held out: the hook reports clean accuracy and PGD-10 accuracy
  through denoiser and target on them (one mask draw per step: a check, not an evaluation).

Run with ``art-purifiers train dir``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers.checks import check_choice, check_integer, check_number
from art_purifiers.models import load_victim
from art_purifiers.nn.masked_vit import MaskedViTDenoiser, complementary_masks
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


@dataclass(frozen=True)
class DIRTrainingConfig(RunSettings):
    """Network, masks, attacks and schedules of one DIR training run."""

    patch_size: int = 2
    width: int = 192
    heads: int = 3
    encoder_depth: int = 8
    decoder_depth: int = 2
    masks: int = 2
    ratio: float = 0.5
    eps: float = 8 / 255
    step_size: float = 2 / 255
    pair_iterations: int = 20
    attack_iterations: int = 5
    stage1_iterations: int = 200_000
    stage1_batch: int = 250
    stage1_lr: float = 1.5e-4
    stage1_warmup: int = 40_000
    stage2_iterations: int = 35_000
    stage2_batch: int = 128
    stage2_lr: float = 5e-5
    stage2_optimizer: str = "sgd"
    alpha: float = 2.0
    representation: str = "paper"
    clean_weight: float = 0.0
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        self._check_run_settings()
        for name in ("patch_size", "width", "heads", "encoder_depth", "decoder_depth", "pair_iterations",
                     "attack_iterations", "stage1_batch", "stage2_batch"):
            check_integer(name, getattr(self, name), minimum=1)
        for name in ("stage1_iterations", "stage2_iterations", "stage1_warmup"):
            check_integer(name, getattr(self, name), minimum=0)
        check_integer("masks", self.masks, minimum=2)
        check_number("ratio", self.ratio, minimum=0, maximum=1, open_minimum=True, open_maximum=True)
        for name in ("eps", "step_size", "stage1_lr", "stage2_lr"):
            check_number(name, getattr(self, name), minimum=0, open_minimum=True)
        check_number("alpha", self.alpha, minimum=0)
        check_number("clean_weight", self.clean_weight, minimum=0)
        check_choice("stage2_optimizer", self.stage2_optimizer, ("sgd", "adamw"))
        check_choice("representation", self.representation, ("paper", "code"))
        if self.clip_norm is not None:
            check_number("clip_norm", self.clip_norm, minimum=0, open_minimum=True)

    def architecture(self, image_size: int = 32, channels: int = 3) -> dict:
        """The arguments of :class:`~art_purifiers.nn.masked_vit.MaskedViTDenoiser`."""
        return {"image_size": image_size, "patch_size": self.patch_size, "width": self.width, "heads": self.heads,
                "encoder_depth": self.encoder_depth, "decoder_depth": self.decoder_depth, "channels": channels}


#: ``cpu`` (default): a smaller ViT (patch 4, width 96, 4 + 1 blocks), PGD-3 in stage 2, AdamW at 1e-4 in stage 2 and
#: the clean term on; about 45 minutes of one CPU thread. Stage 2 suits a robust target (``--target resnet20-at``);
#: through the natural ResNet-20 it collapses the denoiser at every rate tried, so its shipped weights stop after
#: stage 1 (``--set stage2_iterations=0``). ``paper``: the paper's ViT and the public code's schedules (for a GPU).
#: ``smoke``: seconds.
PRESETS = {
    "cpu": DIRTrainingConfig(patch_size=4, width=96, heads=3, encoder_depth=4, decoder_depth=1, pair_iterations=10,
                             attack_iterations=3, stage1_iterations=3000, stage1_batch=64, stage1_lr=1e-3,
                             stage1_warmup=150, stage2_iterations=1000, stage2_batch=32, stage2_optimizer="adamw",
                             stage2_lr=1e-4, clean_weight=0.5, validate_every=500, checkpoint_every=50),
    "paper": DIRTrainingConfig(),
    "smoke": DIRTrainingConfig(patch_size=8, width=24, heads=2, encoder_depth=1, decoder_depth=1, pair_iterations=1,
                               attack_iterations=1, stage1_iterations=10, stage1_batch=16, stage1_warmup=2,
                               stage2_iterations=6, stage2_batch=8, clean_weight=0.5, validation_images=16,
                               validate_every=5, checkpoint_every=5, images=96),
}


class Restorer(nn.Module):
    """Denoiser with fresh complementary masks per call, drawn from a generator the caller owns."""

    def __init__(self, denoiser: MaskedViTDenoiser, masks: int, ratio: float) -> None:
        super().__init__()
        self.denoiser, self.masks, self.ratio = denoiser, masks, ratio
        self.generator = torch.Generator()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = complementary_masks(len(x), self.denoiser.tokens, self.masks, self.ratio, self.generator)
        return self.denoiser(x, views).clamp(0, 1)


def kl_perturbation(target: nn.Module, restored: torch.Tensor, eps: float, step_size: float, iterations: int,
                    generator: torch.Generator) -> torch.Tensor:
    """PGD on the target alone that maximises ``KL(target(restored) || target(perturbed))`` from ``restored + 0.001
    N(0, 1)``, projected to the L-inf ball of ``eps`` around ``restored`` and clipped to ``[0, 1]``."""
    restored = restored.detach()
    with torch.no_grad():
        reference = F.softmax(target(restored), dim=1)
    noise = to_device(torch.randn(restored.shape, generator=generator), restored.device)
    perturbed = (restored + 0.001 * noise).clamp(0, 1)
    for _ in range(iterations):
        perturbed.requires_grad_(True)
        divergence = F.kl_div(F.log_softmax(target(perturbed), dim=1), reference, reduction="sum")
        (grad,) = torch.autograd.grad(divergence, perturbed)
        perturbed = perturbed.detach() + step_size * grad.sign()
        perturbed = torch.min(torch.max(perturbed, restored - eps), restored + eps).clamp(0, 1)
    return perturbed.detach()


def _representation_loss(config: DIRTrainingConfig, restorer: Restorer, target: nn.Module, adversarial: torch.Tensor,
                         restored: torch.Tensor, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``L_rep``, the mean over the batch of ``KL(target(restored) || target(restored + delta))``, ``delta`` the
    KL-maximising perturbation of :func:`kl_perturbation`.

    ``"paper"`` (Eq. 5): ``delta`` is found for ``restored`` itself and the divergence is differentiated through
    both restorations, so the denoiser learns to restore where the target is locally stable. ``"code"`` (the public
    code): ``delta`` is found for another restoration (fresh masks), that perturbed image is a constant, and the
    gradient reaches the denoiser only through ``logits``, pulling them toward the target's output on the perturbed
    image.
    """
    if config.representation == "paper":
        perturbed = restored + (kl_perturbation(target, restored, config.eps, config.step_size,
                                                config.attack_iterations, generator) - restored.detach())
    else:
        with torch.no_grad():
            other = restorer(adversarial)
        perturbed = kl_perturbation(target, other, config.eps, config.step_size, config.attack_iterations, generator)
    return F.kl_div(F.log_softmax(target(perturbed), dim=1), F.softmax(logits, dim=1), reduction="sum") / len(logits)


def _optimisation(config: DIRTrainingConfig, context: RunContext, denoiser: nn.Module, stage: int) -> Optimisation:
    parameters = list(denoiser.parameters())
    if stage == 1:
        lr = config.stage1_lr * config.stage1_batch / 256  # the MAE recipe's scaling with the batch
        optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
        return Optimisation(parameters, optimizer, Schedule(max(1, config.stage1_iterations),
                                                            min(config.stage1_warmup, config.stage1_iterations)),
                            mixed_precision=context.mixed_precision)
    if config.stage2_optimizer == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=config.stage2_lr, momentum=0.9, weight_decay=2e-4)
    else:
        optimizer = torch.optim.AdamW(parameters, lr=config.stage2_lr, weight_decay=0.05)
    # Stage 2 calls the denoiser several times per step (PGD, the restoration, L_rep, the clean term), so it is not
    # wrapped in DDP; the optimiser averages the gradients over the ranks instead.
    return Optimisation(parameters, optimizer, None, config.clip_norm, mixed_precision=context.mixed_precision,
                        distributed=context.distributed)


def _stage1(config: DIRTrainingConfig, context: RunContext, denoiser: MaskedViTDenoiser, x: torch.Tensor,
            pairs: torch.Tensor, report: dict, validate) -> None:
    """MSE from masked adversarial images to the clean ones."""
    optimisation = _optimisation(config, context, denoiser, 1)
    model = context.wrap(denoiser)
    rank, world = context.distributed.rank, context.distributed.world

    def step(i: int) -> torch.Tensor:
        denoiser.train()
        generator = iteration_generator(config.seed, i, rank)
        idx = batch_for_iteration(i, len(x), config.stage1_batch, config.seed, rank, world)
        views = complementary_masks(len(idx), denoiser.tokens, config.masks, config.ratio, generator)
        with optimisation.autocast(context.device):
            loss = F.mse_loss(model(pairs[idx].to(context.device), views), x[idx].to(context.device))
        return optimisation.step(loss, i)

    result = run_stage(context, "stage 1 (MSE)", "stage1", step, {"denoiser": denoiser}, optimisation,
                       config.stage1_iterations, config.checkpoint_every, validate=validate,
                       validate_every=config.validate_every)
    report.update(stage1_log=result.log, stage1_seconds=result.seconds, stage1_validation=result.validations)


def _stage2(config: DIRTrainingConfig, context: RunContext, restorer: Restorer, target: nn.Module, x: torch.Tensor,
            y: torch.Tensor, report: dict, validate) -> None:
    """``L_adv + alpha * L_rep (+ clean_weight * L_clean)`` on PGD examples crafted through denoiser and target."""
    optimisation = _optimisation(config, context, restorer.denoiser, 2)
    defended = nn.Sequential(restorer, target)
    rank, world = context.distributed.rank, context.distributed.world

    def step(i: int) -> torch.Tensor:
        generator = iteration_generator(config.seed + 1, i, rank)
        restorer.generator.manual_seed(int(torch.randint(2**62, (), generator=generator)))
        idx = batch_for_iteration(i, len(x), config.stage2_batch, config.seed + 1, rank, world)
        clean, labels = x[idx].to(context.device), y[idx].to(context.device)
        with optimisation.autocast(context.device):  # the attacks too: they are most of the step's work
            restorer.eval()
            adversarial = pgd_linf(defended, clean, labels, config.eps, config.step_size, config.attack_iterations,
                                   generator)
            restorer.train()
            restored = restorer(adversarial)
            logits = target(restored)
            loss = F.cross_entropy(logits, labels)
            if config.alpha:
                loss = loss + config.alpha * _representation_loss(config, restorer, target, adversarial, restored,
                                                                  logits, generator)
            if config.clean_weight:
                loss = loss + config.clean_weight * F.cross_entropy(target(restorer(clean)), labels)
        return optimisation.step(loss, i)

    result = run_stage(context, "stage 2 (L_adv + alpha L_rep)", "stage2", step, {"denoiser": restorer.denoiser},
                       optimisation, config.stage2_iterations, config.checkpoint_every, validate=validate,
                       validate_every=config.validate_every)
    report.update(stage2_log=result.log, stage2_seconds=result.seconds, stage2_validation=result.validations)


def _validation(config: DIRTrainingConfig, restorer: Restorer, target: nn.Module, x: np.ndarray, y: np.ndarray,
                device: torch.device):
    """The hook: clean and PGD-10 accuracy (%) through denoiser and target on the held-out images."""
    x_val, y_val = torch.from_numpy(x).to(device), torch.from_numpy(y).long().to(device)
    defended = nn.Sequential(restorer, target)

    def validate(_: int) -> dict:
        restorer.eval()
        restorer.generator.manual_seed(config.seed)
        adversarial = pgd_linf(defended, x_val, y_val, config.eps, config.eps / 4, 10,
                               torch.Generator().manual_seed(config.seed))
        return accuracies(defended, y_val, clean=x_val, pgd10=adversarial)

    return validate


def train_dir(config: DIRTrainingConfig, x: np.ndarray, y: np.ndarray, target: nn.Module, out_dir: str | Path,
              device: str | None = "cpu") -> tuple[MaskedViTDenoiser, dict]:
    """Both stages (each resumes from ``out_dir``); returns the denoiser and a training report.

    :param x: Training images, float32 ``(N, 3, H, W)`` in ``[0, 1]`` (never test images); the last
        ``config.validation_images`` are held out.
    :param y: Their labels ``(N,)``.
    :param target: The frozen classifier (images in ``[0, 1]`` to logits) the denoiser is trained for.
    """
    context = RunContext.create(out_dir, device, config.seed, config.precision)
    with context.running():
        return _train_dir(config, context, x, y, target)


def _train_dir(config: DIRTrainingConfig, context: RunContext, x: np.ndarray, y: np.ndarray,
               target: nn.Module) -> tuple[MaskedViTDenoiser, dict]:
    target = target.eval().to(context.device).requires_grad_(False)
    held = len(x) - config.validation_images
    if held < max(config.stage1_batch, config.stage2_batch):
        raise ValueError(f"{len(x)} images leave {held} to train on, fewer than a batch.")
    report: dict = {"config": dataclasses.asdict(config), **context.describe(), "images": held}
    began = time.perf_counter()
    recipe = {"eps": config.eps, "step": config.step_size, "steps": config.pair_iterations, "seed": config.seed}
    pairs = adversarial_pairs(target, x[:held], y[:held], pairs_cache_path(context.out_dir, target, x[:held],
                                                                           y[:held], recipe),
                              config.eps, config.step_size, config.pair_iterations, seed=config.seed,
                              device=str(context.device), distributed=context.distributed)
    report["pairs_seconds"] = time.perf_counter() - began
    torch.manual_seed(config.seed)
    denoiser = MaskedViTDenoiser(**config.architecture(x.shape[-1], x.shape[1])).to(context.device)
    restorer = Restorer(denoiser, config.masks, config.ratio)
    validate = _validation(config, restorer, target, x[held:], y[held:], context.device) \
        if config.validation_images else None
    # On a GPU the whole training set moves there once, so a batch is indexed where it is used.
    x_t, y_t = torch.from_numpy(x[:held]).to(context.device), torch.from_numpy(y[:held]).long().to(context.device)
    pairs_t = torch.from_numpy(pairs.astype(np.float32) / 255).to(context.device)
    _stage1(config, context, denoiser, x_t, pairs_t, report, validate)
    _stage2(config, context, restorer, target, x_t, y_t, report, validate)
    report["seconds"] = sum(report.get(f"{part}_seconds", 0.0) for part in ("pairs", "stage1", "stage2"))
    return denoiser.eval().cpu(), report


def export_weights(denoiser: MaskedViTDenoiser, config: DIRTrainingConfig, path: str | Path, target: str,
                   provenance: dict | None = None) -> str:
    """Write a DIR weight file (safetensors; architecture, masks, target and provenance in its metadata); return
    its sha256."""
    adversarial = config.stage2_iterations > 0  # without stage 2 the file is the MSE-trained denoiser alone
    metadata = {"method": "dir", "masks": config.masks, "ratio": config.ratio,
                "stage2_iterations": config.stage2_iterations, "alpha": config.alpha if adversarial else None,
                "target": target, "provenance": provenance or {}}
    return save_networks({"denoiser": denoiser}, path, metadata=metadata)


def run(config: DIRTrainingConfig, job: TrainingJob) -> dict:
    """``art-purifiers train dir``: train for the target on ``job``'s images, export if asked."""
    target_name = job.options.get("target", "resnet20")
    denoiser, report = train_dir(config, job.x, job.y, load_victim(target_name), job.out_dir, job.device)
    report.update(command=job.command, target=target_name)
    if job.export is not None:
        report["sha256"] = export_weights(denoiser, config, job.export, target_name, provenance(report, "target"))
    return report


TRAINER = Trainer(
    method="dir",
    summary="DIR: masked-ViT denoiser, MSE pre-training then L_adv + alpha L_rep through the frozen target",
    presets=PRESETS,
    run=run,
    options={"target": ("resnet20", "classifier the denoiser is trained for: a bundled victim (resnet20, resnet32, "
                                    "resnet20-at) or a checkpoint path")},
)
