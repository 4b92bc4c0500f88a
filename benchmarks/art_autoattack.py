"""What ART's default ``AutoAttack`` costs per image on the CPU, through each defence (docs/evaluating.md,
"Using ART's attacks directly").

    OMP_NUM_THREADS=1 python benchmarks/art_autoattack.py --defence none resampling --n 2
    OMP_NUM_THREADS=1 python benchmarks/art_autoattack.py --defence irad --n 1 --max-seconds 300
    OMP_NUM_THREADS=1 python benchmarks/art_autoattack.py --defence resampling irad --gradient bpda --n 1
    OMP_NUM_THREADS=1 python benchmarks/art_autoattack.py --defence resampling:sampler=variant --eot 8 --n 1

The attack is ``art.attacks.evasion.AutoAttack(classifier, eps=EPS, eps_step=EPS_STEP)`` with ART's own list
(APGD-CE and APGD-DLR with 5 restarts of 100 iterations, DeepFool, Square with 5 restarts of 5000 queries) on the
classifier of ``defence.deploy(victim)`` with exact gradients through the defence (``--gradient bpda``: identity
backward), what a user gets by handing a
defended ``PyTorchClassifier`` to ART's AutoAttack with no other settings (ART's default ``eps=0.3`` is replaced by
the usual CIFAR-10 budget). Images are the bundled CIFAR-10 sample, the victim the bundled ResNet-20.

The victim's forward passes are counted (ART's APGD wraps the same model and defences in a classifier of its own),
and one ``predict`` and one ``loss_gradient`` on the images are timed first. With ``--max-seconds``, a run that takes
longer is stopped (SIGALRM) and reported as ``stopped``, with the passes made so far; the full cost can then be
extrapolated from the unit costs (APGD alone makes up to 2 x 5 x 100 loss gradients per image that resists).
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import time

import art
import numpy as np
import torch
from art.attacks.evasion import AutoAttack
from art.estimators.classification import PyTorchClassifier
from torch import nn

from art_purifiers.data import load_sample
from art_purifiers.defences import make_defence
from art_purifiers.models import load_victim


class Stopped(Exception):
    """Raised by the alarm when ``--max-seconds`` has passed."""


def count_victim_calls(victim: nn.Module) -> dict:
    """Count the victim's forward passes and the images they hold. ART's APGD builds its own
    ``PyTorchClassifier`` around the same model and defences, so the model is where every query shows."""
    record = {"forward_calls": 0, "images": 0}

    def hook(_module, inputs):
        record["forward_calls"] += 1
        record["images"] += len(inputs[0])

    victim.register_forward_pre_hook(hook)
    return record


def step_seconds(classifier: PyTorchClassifier, x: np.ndarray, y: np.ndarray, repeats: int = 3) -> dict:
    """Best-of-``repeats`` seconds of one ``predict`` and one ``loss_gradient`` on ``x``: the unit costs from
    which a stopped run is extrapolated."""
    labels = np.eye(10, dtype=np.float32)[y]
    timings = {}
    for name, call in (("predict", lambda: classifier.predict(x)),
                       ("loss_gradient", lambda: classifier.loss_gradient(x, labels))):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
        timings[f"{name}_seconds"] = round(best, 4)
    return timings


def classifier_for(spec: str, victim: nn.Module, gradient: str, eot: int | None) -> PyTorchClassifier:
    """The bare victim (``spec == "none"``) or ``make_defence(spec).deploy(victim, eot=eot)`` with ``gradient``
    mode (unseeded when ``eot`` is given, so that every draw is fresh)."""
    if spec == "none":
        return PyTorchClassifier(victim.eval(), loss=nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
                                 clip_values=(0.0, 1.0), device_type="cpu")
    defence = make_defence(spec, victim, device_type="cpu").configured(gradient=gradient)
    if eot is not None:
        defence = defence.configured(seed=None)
    return defence.deploy(victim, eot=eot).classifier(device="cpu")


def measure(spec: str, gradient: str, eot: int | None, x: np.ndarray, y: np.ndarray, eps: float, eps_step: float,
            max_seconds: int) -> dict:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 (ART's attacks draw from numpy's global generator)
    victim = load_victim()
    classifier = classifier_for(spec, victim, gradient, eot)
    unit = step_seconds(classifier, x, y)
    attack = AutoAttack(classifier, eps=eps, eps_step=eps_step)  # ART's default list of attacks
    record = count_victim_calls(victim)
    status, start = "finished", time.perf_counter()
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(Stopped()))
    signal.alarm(max_seconds)
    try:
        adversarial = attack.generate(x, y=y)
    except Stopped:
        status, adversarial = "stopped", None
    finally:
        signal.alarm(0)
    seconds = time.perf_counter() - start
    result = {"defence": spec, "gradient": gradient if spec != "none" else "-", "eot": eot,
              "status": status, "n": len(x),
              "seconds": round(seconds, 1),
              "seconds_per_image": round(seconds / len(x), 1), "victim": record, "unit_costs_on_n": unit}
    if adversarial is not None:
        within = np.abs(adversarial - x).max() <= eps * (1 + 1e-4) + 1e-6
        result["robust_accuracy"] = float((classifier.predict(adversarial).argmax(1) == y).mean())
        result["within_eps"] = bool(within)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defence", nargs="+", default=["none", "resampling", "irad"],
                        help="'none' (the bare victim) or defence specs, as for art-purifiers evaluate")
    parser.add_argument("--gradient", choices=["exact", "bpda"], default="exact",
                        help="gradient mode of the defences: exact (adaptive) or bpda (identity backward)")
    parser.add_argument("--eot", type=int, help="attack deploy(victim, eot=K): the one-line EOT of random defences")
    parser.add_argument("--n", type=int, default=1, help="bundled test images 0..n-1")
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--eps-step", type=float, default=2 / 255)
    parser.add_argument("--max-seconds", type=int, default=600, help="stop a run after this long (per defence)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    x, y = load_sample(args.n)
    results = []
    for spec in args.defence:
        result = measure(spec, args.gradient, args.eot, x, y, args.eps, args.eps_step, args.max_seconds)
        print(json.dumps(result))
        results.append(result)
    meta = {"art": art.__version__, "torch": torch.__version__, "numpy": np.__version__, "threads":
            torch.get_num_threads(), "cpu": platform.processor() or platform.machine(), "eps": args.eps,
            "eps_step": args.eps_step}
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
