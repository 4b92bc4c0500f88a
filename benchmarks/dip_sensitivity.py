"""Sensitivity of the DIP defence to its DIP iterations and network size (the paper's Table 3), on CIFAR-10
*training* images, to choose the defaults without touching the test images.

    python benchmarks/dip_sensitivity.py --data-root ../shared/data/cifar10 --n 32 \\
        --json docs/results/dip_sensitivity.json --output docs/results/dip_sensitivity.md

For every network, one DIP trace per image is fitted to the largest iteration count and every smaller setting is
reconstructed from it (:meth:`~art_purifiers.defences.dip.DIPPreprocessor.reconstruct`; the fit does not depend on
its length, so this equals running each setting alone). Each cell is the defence's accuracy on the clean images
(SA) and on oblivious PGD adversarial examples crafted on the undefended victim (RA), and their mean (the paper's
Table 3 reports an average over attacks). Results are saved after every network, and a rerun with the same
settings skips the networks already in the JSON file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from art_purifiers.data.cifar10 import load_cifar10
from art_purifiers.defences.dip import DIPPreprocessor
from art_purifiers.evaluation.attacks import AttackSpec, parse_eps
from art_purifiers.evaluation.benchmark import machine
from art_purifiers.evaluation.runner import art_classifier
from art_purifiers.models import load_victim
from art_purifiers.nn.dip import dip_snapshots


def predict(victim: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([victim(chunk).argmax(1) for chunk in torch.split(images, 256)]).numpy()


def study_network(victim: torch.nn.Module, network: str, iteration_counts: list[int], inputs: torch.Tensor,
                  labels: np.ndarray, seed: int, chunk: int) -> list[dict]:
    """SA and RA of every iteration count for one network; ``inputs`` = clean images then adversarial ones."""
    defences = {t: DIPPreprocessor(victim, network=network, iterations=t, seed=seed) for t in iteration_counts}
    taken = {t: d.snapshot_iterations().astype(int) for t, d in defences.items()}
    wanted = np.unique(np.concatenate(list(taken.values())))
    first = defences[iteration_counts[0]]
    generator = torch.Generator().manual_seed(seed)
    seeds = torch.randint(0, 2**62, (len(inputs),), generator=generator).tolist()
    outputs: dict[int, list[torch.Tensor]] = {t: [] for t in iteration_counts}
    start = time.perf_counter()
    for lo in range(0, len(inputs), chunk):
        x = inputs[lo : lo + chunk]
        snaps = dip_snapshots(x, first.network_config, wanted, first._generators(seeds[lo : lo + chunk]),
                              first.lr, first.noise_scale)
        for t, defence in defences.items():
            mine = torch.from_numpy(np.isin(wanted, taken[t]))
            outputs[t].append(defence.reconstruct(x, snaps[mine], wanted[mine.numpy()]))
    seconds = time.perf_counter() - start
    n = len(labels)
    rows = []
    for t in iteration_counts:
        correct = predict(victim, torch.cat(outputs[t])) == np.concatenate([labels, labels])
        clean, robust = 100 * correct[:n].mean(), 100 * correct[n:].mean()
        rows.append({"network": network, "iterations": t, "clean": float(clean), "robust": float(robust),
                     "mean": float((clean + robust) / 2)})
    print(f"{network}: {seconds:.0f} s for {len(inputs)} traces of {max(iteration_counts)} iterations", flush=True)
    for row in rows:
        print(f"  T={row['iterations']}: SA {row['clean']:.1f} RA {row['robust']:.1f} mean {row['mean']:.1f}",
              flush=True)
    return [{**row, "trace_seconds": seconds, "images": len(inputs)} for row in rows]


def markdown(result: dict) -> str:
    counts = result["settings"]["iterations"]
    lines = ["| network | " + " | ".join(f"T = {t}" for t in counts) + " |",
             "|---|" + "---|" * len(counts)]
    for network in dict.fromkeys(row["network"] for row in result["rows"]):
        cells = {row["iterations"]: row for row in result["rows"] if row["network"] == network}
        lines.append(f"| {network} | " + " | ".join(
            f"{cells[t]['clean']:.1f} / {cells[t]['robust']:.1f} (**{cells[t]['mean']:.1f}**)" for t in counts) + " |")
    s = result["settings"]
    lines += ["", f"SA / RA (mean) in %, CIFAR-10 training images {s['images'][0]}..{s['images'][1]}, victim "
              f"{s['victim']} (undefended: SA {result['victim']['clean']:.1f}, RA {result['victim']['robust']:.1f}), "
              f"oblivious {s['attack']}, seed {s['seed']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="CIFAR-10 python-layout folder (training images used)")
    parser.add_argument("--n", type=int, default=32, help="training images 0..n-1")
    parser.add_argument("--networks", nargs="+", default=["small", "medium", "large"])
    parser.add_argument("--iterations", nargs="+", type=int, default=[500, 750, 1000, 1250, 1500])
    parser.add_argument("--eps", default="8/255")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-size", default="2/255")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=64, help="images fitted together")
    parser.add_argument("--json", required=True, help="results (read first: networks already there are skipped)")
    parser.add_argument("--output", default=None, help="also write the markdown table here")
    args = parser.parse_args()

    x, y = load_cifar10(args.data_root, "train", range(args.n))
    spec = AttackSpec("pgd", eps=parse_eps(args.eps), steps=args.steps, step_size=parse_eps(args.step_size))
    settings = {"split": "train", "images": [0, args.n - 1], "victim": "resnet20", "attack": spec.label(),
                "attack_settings": spec.settings(), "iterations": sorted(args.iterations), "seed": args.seed}
    path = Path(args.json)
    result = json.loads(path.read_text()) if path.is_file() else {}
    if result.get("settings") != settings:
        result = {"settings": settings, "rows": []}
    victim = load_victim("resnet20").eval()
    np.random.seed(args.seed)  # noqa: NPY002 (ART draws PGD's random start from numpy's global generator)
    torch.manual_seed(args.seed)
    x_adv = spec.build(art_classifier(victim), seed=args.seed).generate(x, y)
    inputs = torch.from_numpy(np.concatenate([x, x_adv]))
    undefended = predict(victim, inputs) == np.concatenate([y, y])
    result["victim"] = {"clean": 100 * float(undefended[: args.n].mean()),
                        "robust": 100 * float(undefended[args.n :].mean())}
    result["command"] = "python benchmarks/dip_sensitivity.py " + " ".join(sys.argv[1:])
    result["machine"] = machine()
    done = {row["network"] for row in result["rows"]}
    for network in args.networks:
        if network in done:
            print(f"{network}: already in {path}")
            continue
        result["rows"] += study_network(victim, network, sorted(args.iterations), inputs, y, args.seed, args.chunk)
        path.write_text(json.dumps(result, indent=2))
    table = markdown(result)
    print(table)
    if args.output:
        Path(args.output).write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
