"""The training framework every trainer runs on: a run context (device, DDP, output folder, log, checkpoints),
an optimisation step (learning-rate schedule, gradient clipping, mixed precision, EMA of weights) and stages that
resume exactly from their checkpoints, with progress bars and a validation hook.

A trainer builds its networks, then runs one :func:`run_stage` per stage::

    context = RunContext.create(out_dir, device="cpu", seed=0)
    with context.running():
        optimisation = Optimisation(model.parameters(), torch.optim.AdamW(...), Schedule(total=1000, warmup=50))
        log, seconds = run_stage(context, "stage 1", step, {"model": model}, optimisation, iterations=1000)

``step(i)`` computes the loss of iteration ``i`` (drawing its batch and random numbers from ``i`` alone, see
:func:`~art_purifiers.training.loops.iteration_generator`) and returns ``optimisation.step(loss, i)``, so a resumed
run draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from art_purifiers.checks import check_choice, check_integer, check_number
from art_purifiers.devices import resolve_device

logger = logging.getLogger(__name__)

#: Numeric precisions of a training run (docs/training.md, "Devices, DDP and precision"): ``fp32``, float32 throughout
#: (TF32 off for CUDA matrix products and cuDNN convolutions); ``tf32``, float32 tensors with TF32 tensor-core
#: products (CUDA only); ``bf16``, each step's forward pass and loss under bfloat16 autocast (CUDA, or the CPU's
#: autocast), with TF32 for the products autocast keeps in float32.
PRECISIONS = ("fp32", "tf32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`."""
    return check_choice("precision", precision, PRECISIONS)


def _launch() -> tuple[int, int]:
    """``(world size, local rank)`` of this process as ``torchrun`` sets them (``(1, 0)`` without it)."""
    return (check_integer("WORLD_SIZE", int(os.environ.get("WORLD_SIZE", "1")), minimum=1),
            check_integer("LOCAL_RANK", int(os.environ.get("LOCAL_RANK", "0")), minimum=0))


def run_device(name: str | None, precision: str = "fp32") -> torch.device:
    """This process's training device for the requested ``name``, checked against the run's ``precision`` (one of
    :data:`PRECISIONS`; ``tf32`` needs a CUDA device).

    ``None`` is CUDA when available, else the CPU. Under ``torchrun`` with several ranks a bare ``"cuda"`` is each
    rank's own GPU, ``cuda:LOCAL_RANK``; ``"cuda:K"`` names one GPU, which several ranks cannot share, so it is
    refused there (choose the GPUs with ``CUDA_VISIBLE_DEVICES``).

    :raises ValueError: An unknown device or precision, CUDA asked for where torch sees none, a GPU index past the
        visible ones, ``cuda:K`` with several ranks, or ``tf32`` on the CPU.
    """
    check_precision(precision)
    world, local_rank = _launch()
    device = resolve_device(_rank_device(name, world, local_rank) if world > 1 else name)
    if device.type == "cpu" and precision == "tf32":
        raise ValueError("precision 'tf32' changes CUDA matrix products only; on the CPU use fp32 or bf16.")
    return device


def _rank_device(name: str | None, world: int, local_rank: int) -> str | None:
    """Under ``torchrun``: a bare ``"cuda"`` (or no name where CUDA exists) is the rank's own GPU."""
    if name == "cuda" or (name is None and torch.cuda.is_available()):
        return f"cuda:{local_rank}"
    if isinstance(name, str) and name.startswith("cuda:"):
        raise ValueError(f"device {name!r} names one GPU, but torchrun started {world} ranks, one GPU each: use "
                         "device 'cuda' (rank r trains on cuda:LOCAL_RANK) and CUDA_VISIBLE_DEVICES to choose them.")
    return name


def _tf32_switches(allowed: bool) -> tuple[list[tuple[object, str]], list]:
    """Where to switch TF32 for CUDA matrix products and cuDNN convolutions, ``(switches, values)``: the
    ``allow_tf32`` flags, unless this process already set torch's newer ``fp32_precision`` settings (torch 2.9 and
    later), whose mix with the flags torch refuses; then those settings."""
    legacy = [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")]
    try:
        for owner, name in legacy:
            getattr(owner, name)  # raises once the newer settings asked for TF32
    except RuntimeError:
        newer = [(torch.backends.cuda.matmul, "fp32_precision"), (torch.backends.cudnn.conv, "fp32_precision")]
        return newer, ["tf32" if allowed else "ieee"] * 2
    return legacy, [allowed, allowed]


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``. A CPU tensor bound for a GPU (a batch's random draws, which come from CPU generators)
    goes through pinned memory without blocking, so the copy does not wait for the work already queued."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@dataclass
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def setup(cls, device: torch.device) -> Distributed:
        """Join the ``torchrun`` job (nothing to join without one) on ``device``, this rank's device: a CUDA rank
        makes its GPU current first (NCCL's barriers and collectives run on the current device), and the backend
        follows the device, NCCL for CUDA and gloo for the CPU, whether or not the machine has a GPU."""
        world, local_rank = _launch()
        if world == 1:
            return cls()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world, local_rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        if self.world == 1:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast_buffers(self, modules: Iterable[nn.Module]) -> None:
        """Give every rank rank 0's buffers (batch-norm running statistics). DDP broadcasts them before each forward
        pass, but each rank's last forward pass updates them from its own batch, so the ranks end a stage with
        different statistics and rank 0's are the ones it saves and exports."""
        if self.world == 1:
            return
        for module in modules:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def share(self, n: int) -> np.ndarray:
        """This rank's contiguous share of ``range(n)`` (for work split across ranks, e.g. crafting pairs)."""
        return np.array_split(np.arange(n), self.world)[self.rank]


@dataclass
class RunContext:
    """Where and how one training run happens: output folder, device, this process's rank, seed."""

    out_dir: Path
    device: torch.device
    distributed: Distributed
    seed: int = 0
    precision: str = "fp32"

    @classmethod
    def create(cls, out_dir: str | Path, device: str | None = None, seed: int = 0,
               precision: str = "fp32") -> RunContext:
        """Set up DDP under ``torchrun`` (see :func:`run_device`) and the output folder; the trainer runs inside
        :meth:`running`.

        :param device: ``"cpu"``, ``"cuda"``, ``"cuda:K"`` (one process only) or ``None`` (CUDA when available).
        :param precision: One of :data:`PRECISIONS`; ``tf32`` needs a CUDA device. The trainer enters
            :meth:`running` (log file and :meth:`precision_flags`) for the run and autocasts each step through
            :class:`Optimisation`.
        """
        seed = check_integer("seed", seed, minimum=0)
        torch_device = run_device(device, precision)
        distributed = Distributed.setup(torch_device)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return cls(out_dir, torch_device, distributed, seed, precision)

    @property
    def mixed_precision(self) -> bool:
        """Whether steps autocast to bfloat16 (``Optimisation(..., mixed_precision=context.mixed_precision)``)."""
        return self.precision == "bf16"

    @contextlib.contextmanager
    def precision_flags(self):
        """TF32 for CUDA float32 matrix products and cuDNN convolutions off (``fp32``) or on (``tf32``, ``bf16``)
        inside the block; the previous settings come back after it."""
        switches, values = _tf32_switches(self.precision != "fp32")
        saved = [getattr(owner, name) for owner, name in switches]
        for (owner, name), value in zip(switches, values, strict=True):
            setattr(owner, name, value)
        try:
            yield self
        finally:
            for (owner, name), value in zip(switches, saved, strict=True):
                setattr(owner, name, value)

    @contextlib.contextmanager
    def running(self):
        """The run: its ``train.log`` on the root logger (INFO and up) and its :meth:`precision_flags`, inside the
        block; the handler is removed and the root level restored after it, so that a process that trains several
        times keeps nothing of a finished run."""
        root, level = logging.getLogger(), logging.getLogger().level
        handler = logging.FileHandler((self.out_dir / "train.log").resolve())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logger.info("device %s, world %d, precision %s", self.device, self.distributed.world, self.precision)
        try:
            with self.precision_flags():
                yield self
        finally:
            root.removeHandler(handler)
            handler.close()
            root.setLevel(level)

    def checkpoint(self, name: str) -> Checkpoint:
        return Checkpoint(self.out_dir / f"{name}.pt")

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` on this run's device, wrapped in DDP under ``torchrun``."""
        return self.distributed.wrap(module.to(self.device), self.device)

    def describe(self) -> dict:
        """Machine, device, world size and precision, for reports and weight provenance."""
        return {"machine": platform.node(), "device": str(self.device), "world": self.distributed.world,
                "precision": self.precision}


@dataclass(frozen=True)
class Schedule:
    """Learning-rate factor per iteration: linear warm-up over ``warmup`` iterations, then constant or a cosine
    decay to ``minimum`` times the base rate at ``total``."""

    total: int
    warmup: int = 0
    kind: str = "cosine"
    minimum: float = 0.0

    def __post_init__(self) -> None:
        check_integer("total", self.total, minimum=1)
        check_integer("warmup", self.warmup, minimum=0, maximum=self.total)
        check_choice("kind", self.kind, ("constant", "cosine"))
        check_number("minimum", self.minimum, minimum=0, maximum=1)

    def factor(self, iteration: int) -> float:
        if iteration < self.warmup:
            return (iteration + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (iteration - self.warmup) / max(1, self.total - self.warmup))
        return self.minimum + (1 - self.minimum) * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a module's weights (buffers copied): ``average = decay * average + (1 - decay)
    * current`` after every step. :attr:`module` is the averaged copy, for validation and export."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = check_number("ema decay", decay, minimum=0, maximum=1, open_maximum=True)
        self.source = module
        self.module = copy.deepcopy(module).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        averaged = self.module.state_dict()
        for key, value in self.source.state_dict().items():
            if value.is_floating_point():
                averaged[key].lerp_(value.detach(), 1 - self.decay)
            else:
                averaged[key].copy_(value)


class Optimisation:
    """One optimiser step with the shared options: a learning-rate :class:`Schedule`, gradient-norm clipping,
    mixed precision (bfloat16 autocast of the forward pass, on CUDA or the CPU) and an :class:`EMA`.

    :param parameters: The trained parameters (for clipping).
    :param optimizer: A torch optimiser over them; its learning rates are the base rates of the schedule.
    :param schedule: ``None``: constant learning rate.
    :param clip_norm: Maximum global gradient norm, or ``None``.
    :param mixed_precision: :meth:`autocast` is bfloat16 autocast (the run's ``bf16`` precision).
    :param ema: An :class:`EMA` updated after each step, or ``None``.
    :param distributed: Average the gradients over its ranks after each backward pass. For a model that is not
        wrapped in DDP because one step calls it several times (DDP would sync after the first backward only);
        ``None``, or one rank: nothing to average.
    """

    def __init__(self, parameters: Iterable[torch.Tensor], optimizer: torch.optim.Optimizer,
                 schedule: Schedule | None = None, clip_norm: float | None = None, mixed_precision: bool = False,
                 ema: EMA | None = None, distributed: Distributed | None = None) -> None:
        self.parameters = [p for p in parameters if p.requires_grad]
        self.optimizer, self.schedule, self.ema = optimizer, schedule, ema
        self.distributed = distributed
        self.clip_norm = None if clip_norm is None else check_number("clip_norm", clip_norm, 0, open_minimum=True)
        self.mixed_precision = mixed_precision
        self.base_rates = [group["lr"] for group in optimizer.param_groups]

    def _average_gradients(self) -> None:
        if self.distributed is None or self.distributed.world == 1:
            return
        for parameter in self.parameters:
            if parameter.grad is None:  # unused this step on this rank; the others must agree on zeros
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad)
            parameter.grad /= self.distributed.world

    def autocast(self, device: torch.device):
        """The precision context of a step's forward pass and loss on ``device`` (the backward pass, in
        :meth:`step`, runs outside it): bfloat16 autocast with ``mixed_precision``, else nothing."""
        if self.mixed_precision:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, loss: torch.Tensor, iteration: int) -> torch.Tensor:
        """Back-propagate ``loss`` and update; returns the detached loss.

        A non-finite loss on the CPU is refused before the update. On a GPU, reading the loss would make the host
        wait for the step every iteration, so :func:`run_stage` refuses it when it reads the losses (at each log
        line and before each checkpoint)."""
        value = loss.detach()
        if value.device.type == "cpu":
            _check_losses([value], iteration)
        factor = 1.0 if self.schedule is None else self.schedule.factor(iteration)
        for group, base in zip(self.optimizer.param_groups, self.base_rates, strict=True):
            group["lr"] = base * factor
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._average_gradients()
        if self.clip_norm is not None:
            nn.utils.clip_grad_norm_(self.parameters, self.clip_norm)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        return value

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and "ema" in state:
            self.ema.module.load_state_dict(state["ema"])


class Checkpoint:
    """Training state in one file, written atomically; loaded with ``weights_only=True`` (no pickled code)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated files and refused pickles raise many types
            raise ValueError(f"Checkpoint {self.path} cannot be read ({error}); delete it to restart the stage.") \
                from error

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)


def _check_losses(losses: list[torch.Tensor | float], first: int) -> list[float]:
    """The losses of iterations ``first, first + 1, ...`` as floats (one device-to-host copy for all of them).

    :raises FloatingPointError: One of them is not finite (the message names its iteration).
    """
    if losses and all(isinstance(value, torch.Tensor) for value in losses):
        values = torch.stack([value.reshape(()).float() for value in losses]).tolist()
    else:
        values = [float(value) for value in losses]
    for offset, value in enumerate(values):
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite training loss {value} at iteration {first + offset}.")
    return values


#: A validation hook: ``validate(iteration) -> {metric: value}``, run on rank 0.
Validation = Callable[[int], dict]


@torch.no_grad()
def accuracies(classify: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor,
               **images: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy (%) of ``classify(images) -> logits`` on each named set of images (what validation hooks
    report), e.g. ``accuracies(model, y, clean=x, pgd10=x_adv)``."""
    return {name: 100.0 * float((classify(batch).argmax(1) == labels).float().mean()) for name, batch in images.items()}


@dataclass
class StageResult:
    """What a stage did: the loss log ``[(iteration, mean loss)]``, its wall time in seconds up to its last checkpoint
    (including the time before any resume) and the validation log ``[(iteration, metrics)]`` of this run."""

    log: list[tuple[int, float]]
    seconds: float
    validations: list[tuple[int, dict]]


def run_stage(context: RunContext, name: str, checkpoint: str, step: Callable[[int], torch.Tensor | float],
              modules: dict[str, nn.Module], optimisation: Optimisation, iterations: int, every: int = 100,
              log_every: int = 50, validate: Validation | None = None, validate_every: int = 0) -> StageResult:
    """Run ``step(i) -> loss`` for ``i`` in ``[start, iterations)``, resuming from the stage's checkpoint. The losses
    are read (and refused when not finite) at each log line and before each checkpoint, not every iteration.

    The checkpoint (``<out_dir>/<checkpoint>.pt``) holds the modules, the optimisation state (optimiser, EMA), the
    iteration, the loss log and the seconds spent so far; rank 0 writes it every ``every`` iterations and at the end.
    ``validate`` runs on rank 0 every ``validate_every`` iterations (0: never).
    """
    checkpoint = context.checkpoint(checkpoint)
    state = checkpoint.load()
    start, log, before, validations = 0, [], 0.0, []
    if state is not None:
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        optimisation.load_state_dict(state.get("optimisation", {"optimizer": state.get("optimizer")}))
        start, log = int(state["iteration"]), [tuple(item) for item in state["log"].tolist()]
        before = float(state.get("seconds", 0.0))
        logger.info("%s: resumed at iteration %d", name, start)
    began = time.perf_counter()
    is_main = context.distributed.is_main

    def elapsed() -> float:
        return before + time.perf_counter() - began

    recorded = [before]  # the seconds the last checkpoint holds: what the stage reports, so that a resumed run's
    # seconds minus the interrupted run's are the resumed iterations' time (not less the interrupted run's last write)

    def save(iteration: int) -> None:
        recorded[0] = elapsed()
        if is_main:
            checkpoint.save({"modules": {k: m.state_dict() for k, m in modules.items()},
                             "optimisation": optimisation.state_dict(), "iteration": iteration,
                             "log": torch.tensor(log if log else np.zeros((0, 2)), dtype=torch.float64),
                             "seconds": recorded[0]})

    losses: list[float] = []  # read, since the last log line
    pending: list[torch.Tensor | float] = []  # not read yet
    progress = tqdm(range(start, iterations), desc=name, initial=start, total=iterations, disable=None if is_main
                    else True)
    for i in progress:
        pending.append(step(i))
        logs, saves = (i + 1) % log_every == 0 or i + 1 == iterations, (i + 1) % every == 0 or i + 1 == iterations
        if logs or saves:
            losses += _check_losses(pending, i + 1 - len(pending))
            pending = []
        if logs:
            log.append((i + 1, float(np.mean(losses))))
            progress.set_postfix(loss=f"{log[-1][1]:.4f}")
            logger.info("%s it %d loss %.5f (%.1f s)", name, i + 1, log[-1][1], elapsed())
            losses = []
        if validate is not None and is_main and validate_every and (i + 1) % validate_every == 0:
            metrics = validate(i + 1)
            validations.append((i + 1, metrics))
            logger.info("%s it %d validation %s", name, i + 1, metrics)
        if saves:
            save(i + 1)
    averaged = [] if optimisation.ema is None else [optimisation.ema.module]
    context.distributed.broadcast_buffers([*modules.values(), *averaged])
    return StageResult(log, recorded[0], validations)
