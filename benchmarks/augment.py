"""The trainers' per-step augmentation before and after it lost its per-image Python loops (issue 27): seconds per
call of the old loop and of the vectorised function at each trainer's CPU-preset and paper-preset batch, whether
the two give identical tensors, and their share of one training step at the CPU preset. Prints JSON.

    OMP_NUM_THREADS=1 python benchmarks/augment.py --json augment.json
    python benchmarks/augment.py --quick   # smoke presets, a second or two (run by the test suite)

The functions: victim-at's random crops and flips, IRAD's inpainting squares (stage 1 with ``task=inpainting``) and
IDFR's convex pairs (the restorer's batches; still a loop, to keep its random stream, so its "old" and "new" are the
same draws and its figures give the loop's cost and share). Images and embeddings are random: the cost does not
depend on them. A training step is timed through the trainer itself (a few iterations of a fresh run, divided; the
run's last checkpoint write is included). The old loops below are the reference the vectorised functions are tested
against (``tests/test_augment.py``): same random draws in the same order, same tensors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from art_purifiers.evaluation.benchmark import machine
from art_purifiers.models import load_victim, split_victim
from art_purifiers.training import idfr, irad, victim_at
from art_purifiers.training.framework import RunContext

# --- the per-image loops the trainers ran before (kept as the reference) --------------------------------------------


def loop_crops_and_flips(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """victim-at's augmentation as a loop over images (the vectorised one is ``victim_at._augment``)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (4, 4, 4, 4))
    tops, lefts = torch.randint(0, 9, (n,), generator=generator), torch.randint(0, 9, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([padded[i, :, t : t + h, s : s + w] for i, (t, s) in enumerate(zip(tops.tolist(), lefts.tolist(),
                                                                                           strict=True))])
    return torch.where(flips.to(images.device)[:, None, None, None], out.flip(-1), out)


def loop_inpainting(clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """IRAD's stage-1 inpainting input as a loop over images (``irad.stage1_inputs("inpainting", ...)``)."""
    n, _, h, w = clean.shape
    side = max(1, h // 4)
    tops = torch.randint(0, h - side + 1, (n,), generator=generator)
    lefts = torch.randint(0, w - side + 1, (n,), generator=generator)
    mask = torch.ones(n, 1, h, w)
    for i in range(n):
        mask[i, :, tops[i] : tops[i] + side, lefts[i] : lefts[i] + side] = 0
    return clean * mask.to(clean.device)


def loop_pairs(pairs: idfr.ConvexPairs, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """IDFR's ``ConvexPairs.draw`` as it was before it became device-safe (it is still this loop)."""
    labels = torch.tensor(pairs.classes)[torch.randint(len(pairs.classes), (batch,), generator=generator)]
    first, second = [], []
    for label in labels.tolist():
        pool_a, pool_b = pairs.pools[label]
        first.append(pool_a[torch.randint(len(pool_a), (), generator=generator)])
        second.append(pool_b[torch.randint(len(pool_b), (), generator=generator)])
    alpha = torch.rand(batch, 1, generator=generator)
    return alpha * pairs.h[torch.stack(first)] + (1 - alpha) * pairs.h[torch.stack(second)], labels


# --- timing -----------------------------------------------------------------------------------------------------------


def per_call(function: Callable[[torch.Generator], object], repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` calls of ``function(generator)``, each with a fresh seeded generator, after one
    warm-up call (on a GPU each call is timed to the end of its queued work)."""
    generators = [torch.Generator().manual_seed(i) for i in range(repeats + 1)]
    function(generators[0])
    seconds = []
    for generator in generators[1:]:
        _synchronise(device)
        began = time.perf_counter()
        function(generator)
        _synchronise(device)
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _identical(old: Callable, new: Callable) -> bool:
    """Whether ``old`` and ``new`` give equal tensors from equal generators (seed 0)."""
    first, second = old(torch.Generator().manual_seed(0)), new(torch.Generator().manual_seed(0))
    first, second = (x if isinstance(x, tuple) else (x,) for x in (first, second))
    return all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def random_pairs(images: int, adversarial_per_image: int, head: torch.nn.Linear) -> idfr.ConvexPairs:
    """IDFR's pools over random embeddings of ``images`` clean and ``images * adversarial_per_image`` adversarial
    examples (labels uniform over 10 classes), split by ``head`` as the trainer splits them."""
    generator = torch.Generator().manual_seed(0)
    clean = torch.randn(images, head.in_features, generator=generator)
    adversarial = torch.randn(images * adversarial_per_image, head.in_features, generator=generator)
    labels = torch.randint(10, (images,), generator=generator)
    return idfr.ConvexPairs(clean, adversarial, labels, labels.repeat(adversarial_per_image), head, "paper")


def _old_and_new(name: str, batch: int, pool: tuple[int, int], device: torch.device,
                 head: torch.nn.Linear) -> tuple[Callable, Callable]:
    """The old and the new call of function ``name`` at ``batch`` images (or pairs; IDFR's pools sized ``pool``)."""
    if name == "idfr_convex_pairs":
        pairs = random_pairs(*pool, head)
        return lambda g: loop_pairs(pairs, batch, g), lambda g: pairs.draw(batch, g)
    images = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)
    if name == "irad_inpainting":
        return (lambda g: loop_inpainting(images, g),
                lambda g: irad.stage1_inputs("inpainting", images, None, 0.0, g))
    return lambda g: loop_crops_and_flips(images, g), lambda g: victim_at._augment(images, g)


def time_functions(plan: dict, repeats: int, device: torch.device, head: torch.nn.Linear) -> dict:
    """Old and new seconds per call of each function at each preset's batch (``plan``: preset -> ``{"batches":
    function -> batch, "pool": IDFR's (images, adversarial examples per image)}``)."""
    rows: dict[str, list] = {}
    for preset, settings in plan.items():
        for name, batch in settings["batches"].items():
            old, new = _old_and_new(name, batch, settings["pool"], device, head)
            old_seconds, new_seconds = per_call(old, repeats, device), per_call(new, repeats, device)
            rows.setdefault(name, []).append({"preset": preset, "batch": batch, "old_seconds": old_seconds,
                                              "new_seconds": new_seconds, "speedup": old_seconds / new_seconds,
                                              "identical": _identical(old, new)})
    return rows


def _plan(presets: tuple[str, ...], quick: bool) -> dict:
    """Per preset, each function's batch as that preset trains it and the size of IDFR's pools (the CPU preset's
    7568 training images with one adversarial example each; the paper's 50k with every setting)."""
    plan = {}
    for preset in presets:
        pairs = idfr.PRESETS[preset]
        images = 500 if quick else 7568 if pairs.examples_per_image else 50_000
        plan[preset] = {"batches": {"victim_at_crops_and_flips": victim_at.PRESETS[preset].batch,
                                    "irad_inpainting": irad.PRESETS[preset].stage1_batch,
                                    "idfr_convex_pairs": pairs.restorer_batch},
                        "pool": (images, pairs.examples_per_image or len(pairs.settings()))}
    return plan


# --- one training step at the CPU preset, through the trainers ------------------------------------------------------


def time_steps(preset: str, iterations: dict[str, int], folder: str, head: torch.nn.Linear) -> dict:
    """Seconds per step of each trainer's step that calls a function (victim-at; IRAD stage 1 with
    ``task=inpainting``; IDFR's restorer through ``head``), each a fresh run of ``iterations[function]`` steps on
    random data."""
    rng = np.random.default_rng(0)
    never = {"checkpoint_every": 10**9}
    config = victim_at.PRESETS[preset]
    config = dataclasses.replace(config, iterations=iterations["victim_at_crops_and_flips"], validation_images=0,
                                 validate_every=0, **never)
    x = rng.uniform(size=(2 * config.batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    seconds = {"victim_at_crops_and_flips": victim_at.train_victim_at(config, x, y, f"{folder}/victim")[1]["seconds"]}
    config = dataclasses.replace(irad.PRESETS[preset], task="inpainting",
                                 stage1_iterations=iterations["irad_inpainting"], stage2_iterations=0, **never)
    report = irad.train_irad(config, x, y, torch.nn.Identity(), f"{folder}/irad")[2]
    seconds["irad_inpainting"] = report["stage1_seconds"]
    config = dataclasses.replace(idfr.PRESETS[preset], restorer_iterations=iterations["idfr_convex_pairs"],
                                 validate_every=0, **never)
    report = {}
    idfr.train_restorer(config, RunContext.create(f"{folder}/idfr", "cpu", config.seed), random_pairs(
        500 if preset == "smoke" else 7568, config.examples_per_image or 1, head), head, report)
    seconds["idfr_convex_pairs"] = report["restorer_seconds"]
    return {name: {"preset": preset, "iterations": iterations[name],
                   "seconds_per_step": seconds[name] / iterations[name]} for name in seconds}


def shares(functions: dict, steps: dict) -> dict:
    """Each function's share of its trainer's step at the preset the steps were timed at, old and new (the old
    step is the measured one with the new function's time replaced by the old one's)."""
    result = {}
    for name, step in steps.items():
        row = next(r for r in functions[name] if r["preset"] == step["preset"])
        old_step = step["seconds_per_step"] - row["new_seconds"] + row["old_seconds"]
        result[name] = {**step, "old_share": row["old_seconds"] / old_step,
                        "new_share": row["new_seconds"] / step["seconds_per_step"]}
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke presets, few repeats and steps")
    parser.add_argument("--device", default="cpu", help="where victim-at's and IRAD's images are augmented (the "
                        "draws stay on the CPU; IDFR's pools are CPU tensors, as in its trainer)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per function and batch (median)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}.")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device {args.device!r} is not a device (cpu, cuda, cuda:K).")
    repeats = 3 if args.quick else args.repeats
    presets = ("smoke",) if args.quick else ("cpu", "paper")
    head = split_victim(load_victim("resnet20"))[1]
    functions = time_functions(_plan(presets, args.quick), repeats, device, head)
    iterations = dict.fromkeys(functions, 1) if args.quick else {"victim_at_crops_and_flips": 3,
                                                                  "irad_inpainting": 10, "idfr_convex_pairs": 200}
    with tempfile.TemporaryDirectory() as folder:
        steps = time_steps(presets[0], iterations, folder, head)
    result = {"mode": "quick" if args.quick else "full", "device": args.device, "repeats": repeats,
              "functions": functions, "steps": shares(functions, steps), "machine": machine()}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
