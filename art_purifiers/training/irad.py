"""Train IRAD (Cao et al., ICLR 2024): the implicit representation (stage 1), then SampleNet (stage 2).

The paper releases no training code; this follows its Sec. 4.4, Sec. 6 and App. A.1:

* pairs: L-inf PGD (eps 8/255, step 2/255, 100 steps in the paper) crafted on a *source* classifier and stored
  with 8-bit quantisation (as DISCO stores them);
* stage 1: the representation learns one of the Table 7 tasks with an L1 loss (adversarial denoising by
  default); Adam, lr 1e-4, betas (0, 0.9), batch 128;
* stage 2: SampleNet with the representation frozen, cross-entropy of the source classifier on the resampled
  clean *and* adversarial images; Adam, lr 2e-4, betas (0, 0.9), batch 400.

Run with ``art-purifiers train irad``; every stage resumes from its checkpoint, and under ``torchrun`` the batches
are split across ranks (DDP).
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers.nn.implicit import ImplicitRepresentation
from art_purifiers.nn.samplenet import SampleNet
from art_purifiers.training.loops import (
    Checkpoint,
    Distributed,
    adversarial_pairs,
    augment_pairs,
    batch_for_iteration,
    descend,
    iteration_generator,
    run_iterations,
)
from art_purifiers.weights import save_safetensors

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
    pgd_steps: int = 100
    pgd_eps: float = 8 / 255
    pgd_step: float = 2 / 255
    stage1_iterations: int = 300_000
    stage1_batch: int = 128
    stage1_lr: float = 1e-4
    stage2_iterations: int = 20_000
    stage2_batch: int = 400
    stage2_lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)
    seed: int = 0
    checkpoint_every: int = 200
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}.")
        for name in ("blocks", "pgd_steps", "stage1_iterations", "stage2_iterations", "stage1_batch", "stage2_batch"):
            if getattr(self, name) < (0 if name in ("blocks", "stage2_iterations") else 1):
                raise ValueError(f"{name} is out of range: {getattr(self, name)!r}.")

    def architecture(self) -> dict:
        """What :func:`~art_purifiers.defences.irad.load_irad_networks` needs to rebuild the networks."""
        return {"method": "irad", "blocks": self.blocks, "features": self.features, "hidden": list(self.hidden),
                "samplenet_hidden": list(self.samplenet_hidden), "max_shift": self.max_shift}


#: ``paper``: the paper's networks and schedule (DISCO-length stage 1), sized for a GPU. ``small``: a CPU preset;
#: the shipped ``irad_cifar10`` weights took 69 minutes of CPU time on one thread (pairs 6, stage 1 50, stage 2 52
#: minutes of wall time with other jobs sharing the 2 cores; docs/defences/irad.md).
PRESETS = {
    "paper": IRADTrainingConfig(),
    "small": IRADTrainingConfig(blocks=4, features=32, hidden=(128, 128), samplenet_hidden=(128, 128), pgd_steps=10,
                                stage1_iterations=1500, stage1_batch=32, stage2_iterations=400, stage2_batch=32,
                                checkpoint_every=100),
}


def stage1_inputs(task: str, clean: torch.Tensor, adversarial: torch.Tensor | None, noise_std: float,
                  generator: torch.Generator) -> torch.Tensor:
    """The representation's input for a Table 7 task; the target is always the clean image at full size."""
    if task == "adversarial":
        return adversarial
    if task == "clean":
        return clean
    if task == "gaussian":
        return (clean + torch.randn(clean.shape, generator=generator).to(clean.device) * noise_std).clamp(0, 1)
    if task == "super-resolution":
        return F.interpolate(clean, scale_factor=0.5, mode="area")
    # Inpainting: a random square of a quarter of the side is blanked in each image.
    n, _, h, w = clean.shape
    side = max(1, h // 4)
    tops = torch.randint(0, h - side + 1, (n,), generator=generator)
    lefts = torch.randint(0, w - side + 1, (n,), generator=generator)
    mask = torch.ones(n, 1, h, w)
    for i in range(n):
        mask[i, :, tops[i] : tops[i] + side, lefts[i] : lefts[i] + side] = 0
    return clean * mask.to(clean.device)


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
               device: str = "cpu") -> tuple[ImplicitRepresentation, SampleNet | None, dict]:
    """Run both stages (each resumes from ``out_dir``); returns the networks and a training report.

    :param x: Training images, float32 ``(N, 3, H, W)`` in ``[0, 1]`` (never test images).
    :param y: Their labels ``(N,)``.
    :param source: Classifier on ``[0, 1]`` images that the pairs are crafted on and SampleNet is trained through.
    :param out_dir: Folder for the pairs cache, checkpoints and the log.
    """
    out_dir = Path(out_dir)
    distributed = Distributed.setup()
    torch_device = torch.device(f"cuda:{distributed.local_rank}" if device == "cuda" and distributed.world > 1
                                else device)
    source = source.eval().to(torch_device).requires_grad_(False)
    report: dict = {"config": dataclasses.asdict(config), "machine": platform.node(), "device": str(torch_device),
                    "world": distributed.world, "images": len(x)}
    began = time.perf_counter()
    needs_pairs = config.task == "adversarial" or config.stage2_iterations > 0
    adversarial = None
    if needs_pairs:
        cache = out_dir / f"pairs_pgd{config.pgd_steps}_seed{config.seed}.npz"
        if distributed.is_main:
            adversarial = adversarial_pairs(source, x, y, cache, config.pgd_eps, config.pgd_step, config.pgd_steps,
                                            seed=config.seed, device=str(torch_device))
        distributed.barrier()
        if adversarial is None:
            with np.load(cache) as archive:
                adversarial = archive["x_adv"]
        report["pairs_seconds"] = time.perf_counter() - began
    x_t = torch.from_numpy(x)
    adv_t = None if adversarial is None else torch.from_numpy(adversarial.astype(np.float32) / 255)
    y_t = torch.from_numpy(y).long()

    torch.manual_seed(config.seed)
    representation = ImplicitRepresentation(config.blocks, config.features, config.hidden).to(torch_device)
    model = distributed.wrap(representation, torch_device)
    optimizer = torch.optim.Adam(representation.parameters(), lr=config.stage1_lr, betas=config.betas)

    def stage1_step(i: int) -> float:
        idx = batch_for_iteration(i, len(x), config.stage1_batch, config.seed, distributed.rank, distributed.world)
        generator = iteration_generator(config.seed, i, distributed.rank)
        clean = x_t[idx]
        paired = adv_t[idx] if adv_t is not None else clean
        clean, paired = (t.to(torch_device) for t in augment_pairs(generator, clean, paired))
        inputs = stage1_inputs(config.task, clean, paired, config.noise_std, generator)
        return descend(optimizer, F.l1_loss(model(inputs, size=clean.shape[-2:]), clean))

    report["stage1_log"], report["stage1_seconds"] = run_iterations(
        "stage 1 (implicit representation)", stage1_step, {"representation": representation}, optimizer,
        config.stage1_iterations, Checkpoint(out_dir / "stage1.pt"), config.checkpoint_every, distributed)
    representation.eval().requires_grad_(False)

    samplenet = None
    if config.stage2_iterations > 0:
        torch.manual_seed(config.seed + 1)
        samplenet = SampleNet(config.features, config.samplenet_hidden, config.max_shift).to(torch_device)
        irad = distributed.wrap(_IRAD(representation, samplenet), torch_device)
        optimizer = torch.optim.Adam(samplenet.parameters(), lr=config.stage2_lr, betas=config.betas)

        def stage2_step(i: int) -> float:
            idx = batch_for_iteration(i, len(x), config.stage2_batch, config.seed + 1, distributed.rank,
                                      distributed.world)
            generator = iteration_generator(config.seed + 1, i, distributed.rank)
            clean, paired = (t.to(torch_device) for t in augment_pairs(generator, x_t[idx], adv_t[idx]))
            labels = y_t[idx].to(torch_device)
            both = irad(torch.cat([clean, paired]))
            return descend(optimizer, F.cross_entropy(source(both), torch.cat([labels, labels])))

        report["stage2_log"], report["stage2_seconds"] = run_iterations(
            "stage 2 (SampleNet)", stage2_step, {"samplenet": samplenet}, optimizer, config.stage2_iterations,
            Checkpoint(out_dir / "stage2.pt"), config.checkpoint_every, distributed)
        samplenet.eval().requires_grad_(False)
    # Stage times include the time before any resume; the pairs' time is that of this run (crafting, or reading
    # them from the cache).
    report["seconds"] = sum(report.get(f"{part}_seconds", 0.0) for part in ("pairs", "stage1", "stage2"))
    return representation.cpu(), None if samplenet is None else samplenet.cpu(), report


def export_weights(representation: ImplicitRepresentation, samplenet: SampleNet | None, config: IRADTrainingConfig,
                   path: str | Path, provenance: dict | None = None) -> str:
    """Write an IRAD weight file (safetensors; architecture and provenance in its metadata); return its sha256."""
    state = {f"representation.{k}": v for k, v in representation.state_dict().items()}
    if samplenet is not None:
        state.update({f"samplenet.{k}": v for k, v in samplenet.state_dict().items()})
    return save_safetensors(state, path, metadata={**config.architecture(), "provenance": provenance or {}})
