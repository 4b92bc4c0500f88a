"""Train an adversarially robust CIFAR ResNet victim with PGD adversarial training (Madry et al., 2018): every step
minimises the cross-entropy on L-inf PGD examples crafted against the current network.

DIR's main setting (its Tables 1-3) defends such a victim. Run with ``art-purifiers train victim-at``; the exported
file loads with :func:`~art_purifiers.models.load_victim` (a ``.safetensors`` path, or its registry name once
shipped).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from art_purifiers.checks import check_choice, check_integer, check_number
from art_purifiers.models import NormalizedClassifier, cifar_resnet, load_victim
from art_purifiers.models.normalized import IMAGENET_MEAN, IMAGENET_STD
from art_purifiers.training.framework import Optimisation, RunContext, Schedule, accuracies, run_stage, to_device
from art_purifiers.training.loops import batch_for_iteration, iteration_generator, pgd_linf
from art_purifiers.training.registry import RunSettings, Trainer, TrainingJob, provenance
from art_purifiers.weights import save_networks

#: Starting points: a bundled (naturally trained) victim to fine-tune, or random weights.
INITS = ("resnet20", "resnet32", "scratch")


@dataclass(frozen=True)
class VictimATConfig(RunSettings):
    """Network, attack and schedule of one PGD adversarial-training run."""

    depth: int = 20
    init: str = "scratch"
    eps: float = 8 / 255
    step_size: float = 2 / 255
    attack_iterations: int = 10
    iterations: int = 78_000
    batch: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: int = 0

    def __post_init__(self) -> None:
        self._check_run_settings()
        check_choice("depth", self.depth, (20, 32, 44, 56, 110))
        check_choice("init", self.init, INITS)
        check_number("eps", self.eps, minimum=0, maximum=1, open_minimum=True)
        check_number("step_size", self.step_size, minimum=0, maximum=1, open_minimum=True)
        for name in ("attack_iterations", "iterations", "batch"):
            check_integer(name, getattr(self, name), minimum=1)
        check_integer("warmup", self.warmup, minimum=0)
        check_number("lr", self.lr, minimum=0, open_minimum=True)
        check_number("momentum", self.momentum, minimum=0, maximum=1, open_maximum=True)
        check_number("weight_decay", self.weight_decay, minimum=0)


#: ``cpu`` (default): fine-tunes the bundled ResNet-20 with PGD-5 for 1500 steps of 128 (about 25 epochs of the
#: 7568 training images), about 70 minutes of one CPU thread.
#: ``paper``: PGD-10 from scratch, 200 epochs of 50k images at batch 128 (for a GPU). ``smoke``: seconds.
PRESETS = {
    "cpu": VictimATConfig(init="resnet20", attack_iterations=5, step_size=2.5 / 255, iterations=1500, lr=0.05,
                          warmup=100, validate_every=250, checkpoint_every=100),
    "paper": VictimATConfig(),
    "smoke": VictimATConfig(attack_iterations=1, iterations=10, batch=16, validation_images=32, validate_every=5,
                            checkpoint_every=5, images=160),
}


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crops (4 pixels of zero padding) and horizontal flips, one draw per image.

    The draws come from ``generator`` on its own device; only the ``(N,)`` offsets and flips move to the images'
    device, where crop and flip are one gather (a flip reads the crop's columns right to left).

    :param images: ``(N, C, H, W)``, any device and floating dtype.
    :return: ``(N, C, H, W)``, the same dtype and device.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (4, 4, 4, 4)).flatten(2)
    tops = torch.randint(0, 9, (n,), generator=generator, device=generator.device)
    lefts = torch.randint(0, 9, (n,), generator=generator, device=generator.device)
    flips = torch.rand(n, generator=generator, device=generator.device) < 0.5
    tops, lefts, flips = (to_device(t, images.device) for t in (tops, lefts, flips))
    rows = tops[:, None] + torch.arange(h, device=images.device)
    columns = torch.arange(w, device=images.device)
    columns = lefts[:, None] + torch.where(flips[:, None], w - 1 - columns, columns)
    index = (rows[:, :, None] * (w + 8) + columns[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.gather(2, index).view(n, c, h, w)


def _initial_network(config: VictimATConfig) -> NormalizedClassifier:
    if config.init != "scratch":
        victim = load_victim(config.init)
        if victim.network.depth != config.depth:
            raise ValueError(f"init {config.init!r} is a ResNet-{victim.network.depth}, not depth {config.depth}.")
        return victim
    torch.manual_seed(config.seed)
    return NormalizedClassifier(cifar_resnet(config.depth), IMAGENET_MEAN, IMAGENET_STD)


def train_victim_at(config: VictimATConfig, x: np.ndarray, y: np.ndarray, out_dir: str | Path,
                    device: str | None = "cpu") -> tuple[NormalizedClassifier, dict]:
    """PGD adversarial training (resumes from ``out_dir``); returns the network and a report. The last
    ``config.validation_images`` training images are held out: the validation hook reports their clean and
    PGD-10 accuracy."""
    context = RunContext.create(out_dir, device, config.seed, config.precision)
    with context.running():
        return _train_victim_at(config, context, x, y)


def _train_victim_at(config: VictimATConfig, context: RunContext, x: np.ndarray,
                     y: np.ndarray) -> tuple[NormalizedClassifier, dict]:
    held = len(x) - config.validation_images
    if held < config.batch:
        raise ValueError(f"{len(x)} images leave {held} to train on, fewer than a batch of {config.batch}.")
    victim = _initial_network(config).to(context.device)
    model = context.wrap(victim)
    parameters = list(victim.parameters())
    optimisation = Optimisation(parameters, torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                                                            weight_decay=config.weight_decay),
                                Schedule(config.iterations, min(config.warmup, config.iterations)),
                                mixed_precision=context.mixed_precision)
    # On a GPU the whole training set moves there once, so a batch is indexed and augmented where it is used.
    x_t, y_t = torch.from_numpy(x[:held]).to(context.device), torch.from_numpy(y[:held]).long().to(context.device)
    rank, world = context.distributed.rank, context.distributed.world

    def step(i: int) -> torch.Tensor:
        generator = iteration_generator(config.seed, i, rank)
        idx = batch_for_iteration(i, held, config.batch, config.seed, rank, world)
        images, labels = _augment(x_t[idx], generator), y_t[idx]
        with optimisation.autocast(context.device):
            victim.eval()  # craft against fixed batch-norm statistics, then train on the examples
            adversarial = pgd_linf(victim, images, labels, config.eps, config.step_size, config.attack_iterations,
                                   generator)
            victim.train()
            loss = F.cross_entropy(model(adversarial), labels)
        return optimisation.step(loss, i)

    validate = None
    if config.validation_images:
        x_val = torch.from_numpy(x[held:]).to(context.device)
        y_val = torch.from_numpy(y[held:]).long().to(context.device)

        def validate(_: int) -> dict:
            victim.eval()
            adversarial = pgd_linf(victim, x_val, y_val, config.eps, config.eps / 4, 10,
                                   torch.Generator().manual_seed(config.seed))
            return accuracies(victim, y_val, clean=x_val, pgd10=adversarial)

    result = run_stage(context, "PGD adversarial training", "victim_at", step, {"victim": victim}, optimisation,
                       config.iterations, config.checkpoint_every, validate=validate,
                       validate_every=config.validate_every)
    report = {"config": dataclasses.asdict(config), **context.describe(), "images": held, "log": result.log,
              "validation": result.validations, "seconds": result.seconds}
    return victim.eval().cpu(), report


def export_victim(victim: NormalizedClassifier, path: str | Path, provenance: dict | None = None) -> str:
    """Write the network as a victim weight file (safetensors: the bare network under the key ``""``, its spec and
    input normalisation in the metadata, as ``convert-victim`` writes them); return its sha256."""
    spec = victim.network.network_spec
    arguments = ", ".join(f"{key}={value}" for key, value in spec["args"].items())
    normalization = {"mean": victim.mean.flatten().tolist(), "std": victim.std.flatten().tolist()}
    metadata = {"method": "victim", "architecture": f"{spec['name']}({arguments})", "normalization": normalization,
                "training": "PGD adversarial training", "provenance": provenance or {}}
    return save_networks({"": victim.network}, path, metadata)


def run(config: VictimATConfig, job: TrainingJob) -> dict:
    """``art-purifiers train victim-at``: PGD adversarial training on ``job``'s images, export if asked."""
    victim, report = train_victim_at(config, job.x, job.y, job.out_dir, job.device)
    report["command"] = job.command
    if job.export is not None:
        report["sha256"] = export_victim(victim, job.export, provenance(report))
    return report


TRAINER = Trainer(method="victim-at", summary="an adversarially trained CIFAR ResNet victim (PGD adversarial training)",
                  presets=PRESETS, run=run)
