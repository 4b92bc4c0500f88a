"""One prepared GPU benchmark: every figure issue #27 asks of a GPU, in one run meant to take under 8 minutes on an
H100 (not yet run on one), written to one JSON file.

    python benchmarks/gpu.py --out gpu.json                    # on a GPU machine (see docs/gpu.md)
    python benchmarks/gpu.py --dry-run --out /tmp/gpu.json     # every section on the CPU at tiny sizes (seconds)

Sections, each with its own time budget (what did not fit is recorded as skipped, with the reason; a section or an
item that fails records its error and the run goes on):

* ``throughput``: images/s of ``predict`` and ``loss_gradient`` of every defence through ART's
  ``PyTorchClassifier(device_type="gpu")`` (the defence deployed onto the bundled ResNet-20), one batch per call;
* ``agreement``: on 8 images, the largest absolute difference between the CPU's and the GPU's purified images and
  logits of every defence, with TF32 off and on (fixed seeds, so random defences draw the same numbers);
* ``pgd``: wall time of ART's PGD-10 (L-inf 8/255, step 2/255, one random start) on 64 images through the main
  defences and the bare victim;
* ``evaluate``: wall time of ``art-purifiers evaluate --device cuda`` (the main job) on 8 images, in a subprocess;
* ``training``: each trainer's steady iterations/s per stage on its paper preset under fp32, TF32 and bf16;

and peak GPU memory (``torch.cuda.max_memory_allocated``) per item and per section. Times are medians of repeats
after a warm-up call, with the device synchronised around each. ``--dry-run`` runs the same code on the CPU with
the sizes of :data:`DRY_RUN` (the test suite runs it). Evaluation images: CIFAR-10 test images from ``--data-root``
(default ``$ART_PURIFIERS_CIFAR10``), else the bundled test sample; trainers step on training images from the data
root, else on random images (their speed does not depend on the content). The JSON says which.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import art_purifiers
from art_purifiers.checks import check_number
from art_purifiers.evaluation.benchmark import machine, peak_memory_bytes

#: In the order they run: the training section, whose items share whatever time is left, comes last.
SECTIONS = ("throughput", "agreement", "pgd", "evaluate", "training")
PRECISIONS = ("fp32", "tf32", "bf16")
#: Values a trainer's own ``precision`` setting may spell each precision with (tried in turn).
PRECISION_VALUES = {"fp32": ("fp32", "float32"), "tf32": ("tf32",), "bf16": ("bf16", "bfloat16")}
#: Stages of each trainer: (stage, its iterations setting, the report key of its seconds).
STAGES = {
    "irad": (("stage1", "stage1_iterations", "stage1_seconds"), ("stage2", "stage2_iterations", "stage2_seconds")),
    "idfr": (("denoiser", "denoiser_iterations", "denoiser_seconds"),
             ("restorer", "restorer_iterations", "restorer_seconds")),
    "dir": (("stage1", "stage1_iterations", "stage1_seconds"), ("stage2", "stage2_iterations", "stage2_seconds")),
    "victim-at": (("training", "iterations", "seconds"),),
}


@dataclass(frozen=True)
class Sizes:
    """What each section measures and how long it may take (seconds).

    :param throughput: ``(defence spec, images per predict call, images per loss_gradient call)``.
    :param repeats: Timed calls per figure (their median is reported), fewer if the section's time runs out.
    :param agreement: Defence specs compared between the CPU and the device (seeded).
    :param pgd: Deployments attacked (``"none"``: the bare victim).
    :param trainer_preset: Preset each trainer's speed is measured on.
    :param trainer_warmup: Iterations of the first run of each stage (warm-up; not reported).
    :param trainer_seconds: Aimed-for length of each stage's timed iterations.
    :param trainer_iterations: Least and most timed iterations per stage.
    :param evaluate: Arguments of ``art-purifiers evaluate`` after ``--device``.
    :param budgets: Seconds per section.
    """

    throughput: tuple[tuple[str, int, int], ...]
    repeats: int
    agreement: tuple[str, ...]
    agreement_images: int
    pgd: tuple[str, ...]
    pgd_images: int
    pgd_iterations: int
    trainer_preset: str
    trainer_warmup: int
    trainer_seconds: float
    trainer_iterations: tuple[int, int]
    evaluate: tuple[str, ...]
    budgets: dict = field(default_factory=dict)


#: DIP at its quick-look settings (DIPPreprocessor.QUICK, DIPDefendPreprocessor.QUICK): fewer iterations than the
#: defaults (1500 and 4000), so a figure fits the budget; seconds per image scale about with the iterations.
DIP_QUICK = "dip:iterations=400,warmup=187,snapshots=53"
DIPDEFEND_QUICK = "dipdefend:iterations=500"

#: The GPU run: under 8 minutes on one H100. The budgets sum to 440 s; ``--budget`` (420 s) caps the whole run, and
#: an item that starts before its section's deadline may overrun it by its own length (a DIP call: seconds).
GPU = Sizes(
    throughput=(("resampling", 1024, 1024), ("irad", 512, 256), ("idfr", 1024, 512), ("dir", 512, 256),
                (DIP_QUICK, 64, 64), (DIPDEFEND_QUICK, 64, 64)),
    repeats=5, agreement=("resampling:seed=0", "irad:seed=0", "idfr:seed=0", "dir:seed=0", f"{DIP_QUICK},seed=0",
                          f"{DIPDEFEND_QUICK},seed=0"),
    agreement_images=8, pgd=("none", "resampling", "irad", "idfr", "dir"), pgd_images=64, pgd_iterations=10,
    trainer_preset="paper", trainer_warmup=3, trainer_seconds=3.0, trainer_iterations=(5, 300),
    evaluate=("--n", "8"),
    budgets={"throughput": 100, "agreement": 60, "pgd": 50, "evaluate": 60, "training": 170},
)
#: The dry run: the same sections on the CPU at sizes that take seconds.
DRY_RUN = Sizes(
    throughput=(("resampling", 4, 4), ("irad", 2, 2), ("idfr", 2, 2), ("dir", 2, 2),
                ("dip:iterations=3,warmup=1,snapshots=2", 2, 2), ("dipdefend:iterations=3", 2, 2)),
    repeats=1, agreement=("resampling:seed=0", "irad:seed=0", "dir:seed=0", "dipdefend:iterations=3,seed=0"),
    agreement_images=2, pgd=("none", "irad"), pgd_images=2, pgd_iterations=2,
    trainer_preset="smoke", trainer_warmup=1, trainer_seconds=0.0, trainer_iterations=(1, 1),
    evaluate=("--n", "2", "--iterations", "1"),
    budgets={name: 120 for name in SECTIONS},
)


class Unsupported(Exception):
    """An item that cannot be measured here (recorded as skipped, with the reason)."""


@dataclass
class Bench:
    """What every section shares: device, sizes, victim, images and the run's deadline."""

    device: torch.device
    sizes: Sizes
    victim: torch.nn.Module
    x: np.ndarray
    y: np.ndarray
    data: dict
    data_root: str | None
    deadline: float

    @property
    def device_type(self) -> str:
        """ART's name of the device."""
        return "cpu" if self.device.type == "cpu" else "gpu"

    def images(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` evaluation images ``(n, 3, 32, 32)`` and their one-hot labels ``(n, 10)`` (what ART's gradients
        take), repeated as often as needed."""
        repeat = math.ceil(n / len(self.x))
        return np.tile(self.x, (repeat, 1, 1, 1))[:n], np.eye(10, dtype=np.float32)[np.tile(self.y, repeat)[:n]]


class Items:
    """The items of one section: their figures, errors and skips, each under the section's deadline."""

    def __init__(self, bench: Bench, deadline: float) -> None:
        self.bench, self.deadline = bench, deadline
        self.results: list[dict] = []
        self.skipped: list[dict] = []

    def left(self) -> float:
        """Seconds left to the section."""
        return self.deadline - time.perf_counter()

    def run(self, name: str, call: Callable[[], dict], **about) -> dict | None:
        """Measure one item: ``call() -> figures``; its peak memory is added. Returns the figures, or ``None`` when
        the item was skipped or failed (both recorded)."""
        if self.left() <= 0:
            self.skipped.append({"item": name, **about, "reason": "the section's time budget was spent"})
            return None
        reset_peak_memory(self.bench.device)
        try:
            figures = call()
        except Unsupported as reason:
            self.skipped.append({"item": name, **about, "reason": str(reason)})
            return None
        except Exception as error:  # noqa: BLE001 (any failure is recorded; the benchmark goes on)
            self.results.append({"item": name, **about, "error": f"{type(error).__name__}: {error}",
                                 "traceback": traceback.format_exc(limit=4)[-1500:]})
            free_memory(self.bench.device)
            return None
        self.results.append({"item": name, **about, **figures, "peak_memory_bytes": peak_memory(self.bench.device)})
        return figures

    def record(self) -> dict:
        return {"results": self.results, "skipped": self.skipped}


# -------------------------------------------------------------------------------------------------------------------
# Timing and memory
# -------------------------------------------------------------------------------------------------------------------
def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(call: Callable[[], object], device: torch.device, repeats: int, deadline: float) -> dict:
    """Median wall time of ``call`` over up to ``repeats`` calls after one warm-up call, the device synchronised
    around each; at least one timed call, no further ones after ``deadline``."""
    call()
    times: list[float] = []
    while len(times) < repeats and (not times or time.perf_counter() < deadline):
        synchronise(device)
        start = time.perf_counter()
        call()
        synchronise(device)
        times.append(time.perf_counter() - start)
    return {"median_seconds": statistics.median(times), "repeats": len(times), "seconds": times}


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int:
    """On a GPU, the largest memory torch allocated since the last reset; on the CPU, the process's peak resident
    set so far (it never resets)."""
    return peak_memory_bytes(device)


def free_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def tf32_state() -> dict:
    """Whether TF32 is allowed now in float32 matrix products and in cuDNN convolutions."""
    return {"matmul": torch.backends.cuda.matmul.allow_tf32, "convolution": torch.backends.cudnn.allow_tf32}


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 matrix products and convolutions on (or off) inside the block; restored afterwards. Through the
    ``allow_tf32`` flags, as the trainers switch it: since torch 2.9, reading them after the newer
    ``fp32_precision`` settings asked for TF32 is an error."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# -------------------------------------------------------------------------------------------------------------------
# Sections
# -------------------------------------------------------------------------------------------------------------------
def deployment_of(bench: Bench, spec: str):
    """The deployment of a defence spec onto the victim (``"none"``: the bare victim)."""
    from art_purifiers.defences import make_defence
    from art_purifiers.deploy import Deployment

    if spec == "none":
        return Deployment(bench.victim)
    return make_defence(spec, victim=bench.victim, device_type=bench.device_type).deploy(bench.victim)


def with_batch(spec: str, batch: int) -> str:
    """``spec`` with the defence's own chunking set to ``batch`` (one purification call per ART call)."""
    return f"{spec}{',' if ':' in spec else ':'}batch_size={batch}"


def throughput(bench: Bench, items: Items) -> None:
    """predict and loss_gradient images/s of each defence through ART's PyTorchClassifier on the device."""
    for spec, predict_batch, gradient_batch in bench.sizes.throughput:
        for kind, batch in (("predict", predict_batch), ("loss_gradient", gradient_batch)):
            items.run(f"{spec} {kind}", lambda s=spec, k=kind, b=batch: _throughput(bench, items, s, k, b),
                      defence=spec, method=kind, batch=batch)


def _throughput(bench: Bench, items: Items, spec: str, kind: str, batch: int) -> dict:
    deployment = deployment_of(bench, with_batch(spec, batch))
    classifier = deployment.classifier(device=str(bench.device))
    x, y = bench.images(batch)
    if kind == "predict":
        def call():
            return classifier.predict(x, batch_size=batch)
    else:
        def call():
            return classifier.loss_gradient(x, y)
    timing = median_time(call, bench.device, bench.sizes.repeats, items.deadline)
    return {**timing, "images_per_second": batch / timing["median_seconds"],
            "gradient": getattr(deployment.preprocessors[0], "gradient", None) if deployment.preprocessors else None}


def agreement(bench: Bench, items: Items) -> None:
    """Largest absolute CPU-device differences of purified images and logits, TF32 off and on."""
    x, _ = bench.images(bench.sizes.agreement_images)
    for spec in bench.sizes.agreement:
        items.run(spec, lambda s=spec: _agreement(bench, s, torch.from_numpy(x)), defence=spec,
                  images=len(x))
    bench.victim.to(bench.device)


@torch.no_grad()
def _outputs(deployment, x: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Purified images (every preprocessor in turn) and logits of ``deployment`` on ``device``, back on the CPU."""
    deployment.model.to(device)
    purified = x.to(device)
    for preprocessor in deployment.preprocessors:
        purified, _ = preprocessor.forward(purified)
    return purified.cpu(), deployment.model(purified).cpu()


def _agreement(bench: Bench, spec: str, x: torch.Tensor) -> dict:
    deployment = deployment_of(bench, spec)
    reference = _outputs(deployment, x, torch.device("cpu"))
    figures = {}
    for name, enabled in (("tf32_off", False), ("tf32_on", True)):
        with tf32(enabled):
            purified, logits = _outputs(deployment, x, bench.device)
        figures[name] = {"purified_max_abs_difference": float((purified - reference[0]).abs().max()),
                         "logits_max_abs_difference": float((logits - reference[1]).abs().max()),
                         "same_decisions": int((logits.argmax(1) == reference[1].argmax(1)).sum())}
    return figures


def pgd(bench: Bench, items: Items) -> None:
    """Wall time of ART's PGD on the device through each deployment (every call seeded alike)."""
    x, y = bench.images(bench.sizes.pgd_images)
    for spec in bench.sizes.pgd:
        items.run(spec, lambda s=spec: _pgd(bench, items, s, x, y), defence=spec, images=len(x),
                  iterations=bench.sizes.pgd_iterations)


def _pgd(bench: Bench, items: Items, spec: str, x: np.ndarray, y: np.ndarray) -> dict:
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    classifier = deployment_of(bench, spec).classifier(device=str(bench.device))
    attack = ProjectedGradientDescentPyTorch(classifier, norm=np.inf, eps=8 / 255, eps_step=2 / 255,
                                             max_iter=bench.sizes.pgd_iterations, num_random_init=1,
                                             batch_size=len(x), verbose=False)
    adversarial = []

    def call() -> None:
        np.random.seed(0)  # noqa: NPY002 (ART's PGD draws its random start from numpy's global generator)
        torch.manual_seed(0)
        adversarial[:] = [attack.generate(x, y=y)]

    timing = median_time(call, bench.device, bench.sizes.repeats, items.deadline)
    accuracy = float((classifier.predict(adversarial[0]).argmax(1) == y.argmax(1)).mean() * 100)
    return {**timing, "images_per_second": len(x) / timing["median_seconds"], "robust_accuracy_percent": accuracy}


def evaluate(bench: Bench, items: Items) -> None:
    """Wall time of ``art-purifiers evaluate`` on the device, in a subprocess (start-up included)."""
    items.run("evaluate", lambda: _evaluate(bench, items), device=bench.device.type)


def _evaluate(bench: Bench, items: Items) -> dict:
    root = str(Path(art_purifiers.__file__).resolve().parents[1])  # the package this benchmark imported
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    arguments = ["evaluate", "--device", bench.device.type, *bench.sizes.evaluate, "--no-cache", "--quiet",
                 *(["--data-root", bench.data_root] if bench.data_root else [])]
    with tempfile.TemporaryDirectory() as folder:
        table = Path(folder) / "table.json"
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", "art_purifiers.cli", *arguments, "--json", str(table)],
                                  capture_output=True, text=True, env=env, timeout=max(1.0, items.left()))
        except subprocess.TimeoutExpired as error:
            raise Unsupported(f"did not finish within the section's remaining {error.timeout:.0f} s") from error
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"exit status {done.returncode}: {done.stderr.strip()[-1000:]}")
        rows = len(json.loads(table.read_text()).get("rows", []))
    return {"command": "art-purifiers " + " ".join(arguments), "wall_seconds": seconds, "rows": rows,
            "table": done.stdout.strip().splitlines()[:20],
            "peak_memory_note": "the subprocess's memory is not measured (peak_memory_bytes is this process's)"}


# -------------------------------------------------------------------------------------------------------------------
# Training
# -------------------------------------------------------------------------------------------------------------------
def training(bench: Bench, items: Items) -> None:
    """Steady iterations/s of each trainer's stages on its preset, under each precision."""
    from art_purifiers.training import TRAINERS

    with tempfile.TemporaryDirectory() as folder:
        for method, trainer in TRAINERS.items():
            if method not in STAGES:
                items.skipped.append({"item": method, "reason": "no stage table in benchmarks/gpu.py"})
                continue
            for index, precision in enumerate(PRECISIONS):
                out = Path(folder) / f"{method}-{precision}"
                if index:  # the pairs cache is keyed by its inputs: the next precision reuses it
                    _copy_pairs(Path(folder) / f"{method}-{PRECISIONS[index - 1]}", out)
                # An equal share of the section's time left for each item left.
                share = items.left() / ((_methods_left(method) - 1) * len(PRECISIONS) + len(PRECISIONS) - index)
                items.run(f"{method} {precision}", lambda t=trainer, p=precision, o=out, s=share:
                          _train(bench, t, p, o, s), trainer=method, precision=precision,
                          preset=bench.sizes.trainer_preset)


def _methods_left(method: str) -> int:
    names = list(STAGES)
    return len(names) - names.index(method)


def _copy_pairs(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("pairs_*.npz"):
        shutil.copy2(path, target / path.name)


def precision_settings(config, precision: str) -> tuple[list[str], str]:
    """``--set`` assignments that select ``precision`` through the trainer's own setting, and how it is selected.
    Without such a setting TF32 is switched by the process's flags (:func:`tf32`), and bf16 cannot be measured.

    :raises Unsupported: bf16 and the trainer has no precision setting that accepts it.
    """
    from art_purifiers.training import apply_overrides
    from art_purifiers.training.registry import configurable_fields

    fields = configurable_fields(config)
    if "precision" in fields:
        for value in PRECISION_VALUES[precision]:
            with contextlib.suppress(ValueError):
                apply_overrides(config, [f"precision={value}"])
                return [f"precision={value}"], f"trainer setting precision={value}"
    if isinstance(fields.get("mixed_precision"), bool):
        return [f"mixed_precision={precision == 'bf16'}"], f"trainer setting mixed_precision={precision == 'bf16'}"
    if precision == "bf16":
        raise Unsupported("not supported: the trainer's configuration has no precision setting that accepts bf16")
    return [], "TF32 flags of the process only (the trainer has no precision setting)"


def _train(bench: Bench, trainer, precision: str, out: Path, seconds: float) -> dict:
    from art_purifiers.training import apply_overrides

    sizes, stages = bench.sizes, STAGES[trainer.method]
    if precision == "tf32" and bench.device.type != "cuda":
        raise Unsupported("TF32 is a CUDA setting: it changes nothing on the CPU")
    preset = trainer.presets[sizes.trainer_preset]
    assignments, selected = precision_settings(preset, precision)
    fields = dataclasses.asdict(preset)
    # No held-out validation (paper presets never run its hook) and one checkpoint per stage, at its end.
    quiet = [f"{key}={value}" for key, value in (("validation_images", 0), ("checkpoint_every", 10**9))
             if key in fields]
    config = apply_overrides(preset, [*assignments, *quiet])
    x, y = training_images(bench, _images_needed(config))
    started = time.perf_counter()
    # A trainer with its own precision setting switches TF32 itself; else the process's flags do.
    with contextlib.nullcontext() if assignments else tf32(precision == "tf32"):
        first = _run_trainer(trainer, config, stages, {s: sizes.trainer_warmup for _, s, _ in stages}, x, y, out,
                             bench.device)
        counts = _timed_iterations(sizes, stages, first, seconds - (time.perf_counter() - started))
        second = _run_trainer(trainer, config, stages, {s: sizes.trainer_warmup + counts[s] for _, s, _ in stages},
                              x, y, out, bench.device)
    rates = {name: {"iterations": counts[setting], "seconds": second[key] - first[key],
                    "iterations_per_second": counts[setting] / (second[key] - first[key])}
             for name, setting, key in stages}
    return {"stages": rates, "precision_selected_by": selected, "overrides": [*assignments, *quiet],
            "training_images": len(x), "warmup_iterations": sizes.trainer_warmup,
            "first_run_seconds": {name: first[key] for name, _, key in stages}}


def _images_needed(config) -> int:
    """Enough training images for two of the largest batch, plus the held-out ones."""
    batches = [value for key, value in dataclasses.asdict(config).items() if "batch" in key and isinstance(value, int)]
    return 2 * max(batches) + getattr(config, "validation_images", 0)


def _timed_iterations(sizes: Sizes, stages, first: dict, seconds: float) -> dict:
    """Iterations per stage for the timed run: about ``trainer_seconds`` each, within ``trainer_iterations`` and the
    item's remaining ``seconds`` (estimated from the warm-up run, an over-estimate per iteration)."""
    least, most = sizes.trainer_iterations
    aim = min(sizes.trainer_seconds, max(0.0, seconds) / (2 * len(stages)))
    counts = {}
    for _, setting, key in stages:
        per_iteration = max(first[key], 1e-9) / sizes.trainer_warmup
        counts[setting] = int(min(most, max(least, aim / per_iteration)))
    return counts


def _run_trainer(trainer, config, stages, iterations: dict, x, y, out: Path, device: torch.device) -> dict:
    """Run ``trainer`` with each stage's iterations set to ``iterations[setting]`` (resuming in ``out``); return
    its report. Undoes what the run does to the root logger (a log-file handler, the INFO level)."""
    from art_purifiers.training import TrainingJob, apply_overrides

    config = apply_overrides(config, [f"{setting}={count}" for setting, count in iterations.items()])
    job = TrainingJob(x, y, out, device.type, command="benchmarks/gpu.py",
                      options={name: default for name, (default, _) in trainer.options.items()})
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return trainer.run(config, job)
    finally:
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


def training_images(bench: Bench, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Training images 0..n-1 of the data root, else ``n`` random images and labels (seed 0)."""
    if bench.data_root is not None:
        from art_purifiers.data import load_cifar10

        return load_cifar10(bench.data_root, "train", range(n))
    generator = np.random.default_rng(0)
    return (generator.random((n, 3, 32, 32), dtype=np.float32), generator.integers(0, 10, n).astype(np.int64))


# -------------------------------------------------------------------------------------------------------------------
# The run
# -------------------------------------------------------------------------------------------------------------------
RUNNERS: dict[str, Callable[[Bench, Items], None]] = {"throughput": throughput, "agreement": agreement, "pgd": pgd,
                                                      "training": training, "evaluate": evaluate}


def run_section(name: str, bench: Bench) -> dict:
    """One section under its budget (and the run's): its items, time, peak memory, or its error."""
    start = time.perf_counter()
    budget = bench.sizes.budgets[name]
    deadline = min(start + budget, bench.deadline)
    record: dict = {"budget_seconds": budget, "tf32": tf32_state()}  # what the section runs under, unless it says
    if deadline <= start:
        return {**record, "status": "skipped", "reason": "the run's time budget (--budget) was spent"}
    reset_peak_memory(bench.device)
    items = Items(bench, deadline)
    try:
        RUNNERS[name](bench, items)
        record["status"] = "ok"
    except Exception as error:  # noqa: BLE001 (a failed section is recorded; the next one runs)
        record.update(status="error", error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc(limit=4)[-1500:])
    record.update(items.record(), seconds=time.perf_counter() - start, peak_memory_bytes=peak_memory(bench.device))
    return record


def commit(root: Path) -> str:
    """The checkout's git commit (``+dirty`` when it has uncommitted changes), or ``"unknown"``."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def describe_machine(device: torch.device, given_commit: str | None) -> dict:
    """GPU, driver, library versions, package version and commit."""
    import art

    root = Path(art_purifiers.__file__).resolve().parents[1]
    info = {**machine(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()), "numpy": np.__version__, "art": art.__version__,
            "art_purifiers": art_purifiers.__version__, "commit": given_commit or commit(root),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "tf32_defaults": tf32_state()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_bytes=properties.total_memory,
                    multiprocessors=properties.multi_processor_count, driver=_driver())
    return info


def _driver() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Arguments, every one checked before any work."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON file to write (rewritten after every section)")
    parser.add_argument("--dry-run", action="store_true", help="every section on the CPU at tiny sizes")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds for the whole run after start-up; sections left are skipped (default: 420)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    parser.add_argument("--data-root", default=os.environ.get("ART_PURIFIERS_CIFAR10") or None,
                        help="CIFAR-10 python-layout folder (default: $ART_PURIFIERS_CIFAR10, else the bundled test "
                        "sample and random training images)")
    parser.add_argument("--commit", default=None, help="git commit to record (default: read from the checkout)")
    args = parser.parse_args(argv)
    try:
        check_number("--budget", args.budget, minimum=0, open_minimum=True)
        out = Path(args.out)
        if out.is_dir() or not (out.parent if str(out.parent) else Path(".")).is_dir():
            raise ValueError(f"--out {args.out}: give a file name in an existing folder.")
        if args.data_root is not None and not Path(args.data_root).is_dir():
            raise ValueError(f"--data-root {args.data_root} is not a folder.")
        if not args.dry_run and not torch.cuda.is_available():
            raise ValueError("torch sees no CUDA device here; run on a GPU machine, or use --dry-run.")
    except ValueError as error:
        parser.error(str(error))
    return args


def make_bench(args: argparse.Namespace, started: float) -> Bench:
    """Device, sizes, victim and evaluation images of this run."""
    from art_purifiers.data import load_test_images
    from art_purifiers.models import load_victim

    device = torch.device("cpu" if args.dry_run else "cuda")
    sizes = DRY_RUN if args.dry_run else GPU
    x, y = load_test_images(args.data_root)
    source = "the data root" if args.data_root else "the bundled sample"
    data = {"evaluation": f"CIFAR-10 test images 0..{len(x) - 1} from {source}, repeated to fill larger batches",
            "training": "CIFAR-10 training images 0..n-1 from the data root" if args.data_root
            else "random images in [0, 1] with random labels (seed 0)"}
    return Bench(device, sizes, load_victim("resnet20").to(device), x, y, data, args.data_root,
                 started + args.budget)


def write(path: str, result: dict) -> None:
    """Write ``result`` to ``path`` atomically."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


def summary(result: dict) -> str:
    """One line per section for the terminal."""
    lines = []
    for name, section in result["sections"].items():
        failed = sum("error" in item for item in section.get("results", []))
        lines.append(f"{name:<11} {section['status']:<8} {section.get('seconds', 0):7.1f} s  "
                     f"{len(section.get('results', [])) - failed} measured, {failed} failed, "
                     f"{len(section.get('skipped', []))} skipped")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    bench = make_bench(args, started)
    result = {"benchmark": "benchmarks/gpu.py", "command": "python benchmarks/gpu.py " + " ".join(
        sys.argv[1:] if argv is None else argv), "mode": "dry-run" if args.dry_run else "gpu",
        "device": str(bench.device), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": describe_machine(bench.device, args.commit), "data": bench.data,
        "peak_memory": "torch.cuda.max_memory_allocated per item and section" if bench.device.type == "cuda"
        else "the process's peak resident set so far (CPU; it never resets)",
        "budget_seconds": args.budget, "sections": {}}
    for name in args.sections:
        result["sections"][name] = run_section(name, bench)
        write(args.out, result)
    result["total_seconds"] = time.perf_counter() - started
    result["load_average_after"] = list(os.getloadavg())
    write(args.out, result)
    print(summary(result))
    return result


if __name__ == "__main__":
    main()
