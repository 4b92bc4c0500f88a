"""Full-gradient PGD+EOT against the DIP defences, beside BPDA+EOT on the same images, seeds and settings.

For each defence (``dip``, ``dipdefend``) and gradient mode (``bpda``, ``full``), ART's PGD (L-inf, random start)
attacks the bundled ResNet-20 behind the defence averaged over ``--draws`` fresh draws of its seeds
(``defence.deploy(victim, eot=draws)``, the defence's ``seed`` left ``None`` so every call draws afresh); each
adversarial image is then judged by the defence at every deployment seed (``--deployment-seeds``), as the
evaluation harness does. Both modes start from the same numpy/torch seed (``--seed``), so they share the random
start. Shortened fits (``--iterations``) keep the DIP defence's warm-up and snapshots in proportion (700 and 200 of
1500), as ``examples/dip.py`` and ``benchmarks/dip_cost.py`` do.

Resumable: every shard of ``--shard`` images is written to ``OUT/<defence>_<mode>_<first>.json`` (and its
adversarial images to ``.npz``) when it is done, clean decisions to ``OUT/<defence>_clean_<first>.json``; a rerun
skips what exists. ``--summary`` writes the table (JSON) from whatever shards exist, without attacking::

    OMP_NUM_THREADS=1 nohup python benchmarks/dip_full_gradient.py --out runs/dip_full_gradient \\
        --summary docs/results/dip_full_gradient.json > runs/dip_full_gradient.log 2>&1 &

The images are CIFAR-10 test images ``--first`` .. ``--first + --images - 1`` (the bundled sample holds 0..199;
``--data-root`` or ``$ART_PURIFIERS_CIFAR10`` for more). ``benchmarks/dip_full_gradient_gpu.sh`` runs it at the
defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from art_purifiers.data import load_sample
from art_purifiers.data.cifar10 import ROOT_ENV, load_cifar10, resolve_cifar10_root
from art_purifiers.defences.dip import DIPDefendPreprocessor, DIPPreprocessor
from art_purifiers.evaluation.attacks import AttackSpec
from art_purifiers.models import load_victim

MODES = ("bpda", "full")


def fraction(text: str) -> float:
    """A number, or a fraction such as ``8/255``."""
    value = float(Fraction(text))
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def make_defence(name: str, args: argparse.Namespace, victim: torch.nn.Module, **options):
    """The defence ``name`` at the run's iterations (``0``: its defaults)."""
    settings = {"checkpoint_every": args.checkpoint_every, "device_type": "cpu" if args.device == "cpu" else "gpu",
                "batch_size": args.shard * args.draws, **options}
    if args.iterations:
        settings["iterations"] = args.iterations
        if name == "dip":
            settings["warmup"] = round(args.iterations * 700 / 1500)
            settings["snapshots"] = min(200, max(2, round(args.iterations * 200 / 1500)))
    return DIPPreprocessor(victim, **settings) if name == "dip" else DIPDefendPreprocessor(**settings)


def load_images(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    stop = args.first + args.images
    if args.data_root is None and not os.environ.get(ROOT_ENV):
        x, y = load_sample(stop)
        return x[args.first :], y[args.first :]
    return load_cifar10(resolve_cifar10_root(args.data_root), "test", range(args.first, stop))


def seed_everything(seed: int) -> None:
    np.random.seed(seed)  # noqa: NPY002 (ART's PGD draws its random start from the legacy global generator)
    torch.manual_seed(seed)


def correct(defence, victim, x: np.ndarray, y: np.ndarray, device: str) -> list[bool]:
    """Whether the deployed defence (its own seed) classifies each image correctly."""
    classifier = defence.deploy(victim).classifier(device=device)
    return (classifier.predict(x, batch_size=len(x)).argmax(1) == y).tolist()


def clean_shard(name: str, args, victim, x, y, first: int) -> dict:
    path = args.out / f"{name}_clean_{first}.json"
    if path.exists():
        return json.loads(path.read_text())
    record = {"indices": list(range(first, first + len(x))), "labels": y.tolist(),
              "clean": {str(s): correct(make_defence(name, args, victim, seed=s), victim, x, y, args.device)
                        for s in args.deployment_seeds}}
    path.write_text(json.dumps(record))
    return record


def attack_shard(name: str, mode: str, args, victim, x, y, first: int) -> None:
    path = args.out / f"{name}_{mode}_{first}.json"
    if path.exists():
        return
    attacker = make_defence(name, args, victim, gradient=mode, seed=None)
    classifier = attacker.deploy(victim, eot=args.draws).classifier(device=args.device)
    spec = AttackSpec("pgd", eps=args.eps, steps=args.steps, step_size=args.step_size)
    seed_everything(args.seed)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    x_adv = spec.build(classifier, batch_size=len(x)).generate(x, y).astype(np.float32)
    seconds = time.perf_counter() - start
    adversarial = {str(s): correct(make_defence(name, args, victim, seed=s), victim, x_adv, y, args.device)
                   for s in args.deployment_seeds}
    np.savez_compressed(path.with_suffix(".npz"), x_adv=x_adv)
    record = {"settings": repr(attacker), "mode": mode, "indices": list(range(first, first + len(x))),
              "attack": spec.settings(), "draws": args.draws, "seed": args.seed, "attack_seconds": seconds,
              "load_average_1min": [load, os.getloadavg()[0]], "adversarial": adversarial}
    path.write_text(json.dumps(record))
    print(f"{name} {mode} images {first}..{first + len(x) - 1}: {seconds:.0f} s, correct {adversarial}", flush=True)


def shards_done(args: argparse.Namespace, name: str) -> tuple[dict, dict, list[int]]:
    """``(clean, modes, done)`` of defence ``name``: clean decisions ``{image: {seed: correct}}``; per mode
    ``(adversarial decisions, attack seconds, settings)``; the images that every mode has attacked, in order (the
    modes are compared on the same images only)."""
    clean = {}
    for path in sorted(args.out.glob(f"{name}_clean_*.json")):
        record = json.loads(path.read_text())
        for i, index in enumerate(record["indices"]):
            clean[index] = {s: record["clean"][s][i] for s in record["clean"]}
    shards = {mode: [json.loads(path.read_text()) for path in sorted(args.out.glob(f"{name}_{mode}_*.json"))]
              for mode in args.modes}
    done = set(clean)
    for records in shards.values():
        done &= {index for record in records for index in record["indices"]}
    modes = {}
    for mode, records in shards.items():
        adversarial, seconds, settings = {}, 0.0, {}
        for record in (r for r in records if set(r["indices"]) <= done):
            seconds += record["attack_seconds"]
            settings = {k: record[k] for k in ("settings", "attack", "draws", "seed")}
            for i, index in enumerate(record["indices"]):
                adversarial[index] = {s: record["adversarial"][s][i] for s in record["adversarial"]}
        modes[mode] = (adversarial, seconds, settings)
    return clean, modes, sorted(done)


def summary(args: argparse.Namespace) -> dict:
    """The table from the shards present: per defence and mode, SA and RA per deployment seed (RA counts images
    the defence classifies correctly both clean and attacked at that seed) and attack seconds per image; per
    defence, the (image, seed) pairs robust under both modes, under one only, under neither."""
    rows, paired = [], {}
    for name in args.defence:
        clean, modes, done = shards_done(args, name)
        if not done:
            continue
        robust = {}
        for mode, (adversarial, seconds, settings) in modes.items():
            seeds = sorted(adversarial[done[0]])
            robust[mode] = {(i, s): clean[i][s] and adversarial[i][s] for i in done for s in seeds}
            sa = {s: 100 * float(np.mean([clean[i][s] for i in done])) for s in seeds}
            ra = {s: 100 * float(np.mean([robust[mode][i, s] for i in done])) for s in seeds}
            rows.append({"defence": name, "mode": mode, "n": len(done), "images": [done[0], done[-1]],
                         "SA": sa, "RA": ra, "RA_mean": float(np.mean(list(ra.values()))),
                         "SA_mean": float(np.mean(list(sa.values()))),
                         "attack_seconds_per_image": seconds / len(done), **settings})
        if set(robust) == set(MODES):
            pairs = [(robust["bpda"][k], robust["full"][k]) for k in robust["bpda"]]
            paired[name] = {"both": sum(b and f for b, f in pairs), "bpda_only": sum(b and not f for b, f in pairs),
                            "full_only": sum(f and not b for b, f in pairs),
                            "neither": sum(not b and not f for b, f in pairs)}
    return {"iterations": args.iterations, "steps": args.steps, "eps": args.eps, "step_size": args.step_size,
            "draws": args.draws, "deployment_seeds": args.deployment_seeds, "device": args.device, "rows": rows,
            "robust_image_seed_pairs": paired}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defence", nargs="+", default=["dipdefend", "dip"], choices=["dip", "dipdefend"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--first", type=int, default=0, help="first test image (default 0)")
    parser.add_argument("--images", type=positive, default=16, help="test images (default 16)")
    parser.add_argument("--shard", type=positive, default=8, help="images per shard (default 8)")
    parser.add_argument("--iterations", type=int, default=200, help="DIP fit iterations (0: the defaults)")
    parser.add_argument("--steps", type=positive, default=5, help="PGD steps (default 5)")
    parser.add_argument("--eps", type=fraction, default=8 / 255, help="L-inf budget (default 8/255)")
    parser.add_argument("--step-size", type=fraction, default=2 / 255, help="PGD step (default 2/255)")
    parser.add_argument("--draws", type=positive, default=2, help="EOT draws per gradient (default 2)")
    parser.add_argument("--deployment-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seed", type=int, default=0, help="numpy/torch seed before each attack (default 0)")
    parser.add_argument("--checkpoint-every", type=positive, default=10, help="full gradient's k (default 10)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=positive, default=1, help="torch threads (default 1)")
    parser.add_argument("--data-root", default=None,
                        help=f"CIFAR-10 folder (default: ${ROOT_ENV}, else the bundled sample)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the shards")
    parser.add_argument("--summary", type=Path, help="write the table (JSON) here")
    parser.add_argument("--summary-only", action="store_true", help="only write the table from existing shards")
    args = parser.parse_args()
    if args.iterations < 0 or args.first < 0 or min(args.deployment_seeds) < 0:
        parser.error("--iterations, --first and --deployment-seeds must be >= 0")
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        victim = load_victim("resnet20").eval().to(args.device)
        x, y = load_images(args)
        # Shard by shard, each defence in turn: an interrupted run has results for every defence.
        for start in range(0, len(x), args.shard):
            shard = slice(start, start + args.shard)
            for name in args.defence:
                clean_shard(name, args, victim, x[shard], y[shard], args.first + start)
                for mode in args.modes:
                    attack_shard(name, mode, args, victim, x[shard], y[shard], args.first + start)
    table = summary(args)
    if args.summary:
        args.summary.write_text(json.dumps(table, indent=1) + "\n")
    for row in table["rows"]:
        print(f"{row['defence']:10s} {row['mode']:5s} n={row['n']:3d} SA {row['SA_mean']:5.1f} "
              f"RA {row['RA_mean']:5.1f} per seed {row['RA']} attack {row['attack_seconds_per_image']:.0f} s/image")
    for name, counts in table["robust_image_seed_pairs"].items():
        print(f"{name}: (image, seed) pairs robust under {counts}")


if __name__ == "__main__":
    main()
