"""Sensitivity of the DIP defence to its settings, on CIFAR-10 *training* images, to choose the defaults without
touching the test images: DIP iterations x network size (the paper's Table 3), and with ``--vary`` the
reconstruction's parameters one at a time (the group of the paper's Fig. 6).

    python benchmarks/dip_sensitivity.py --data-root ../shared/data/cifar10 --n 32 --traces runs/dip-traces \
        --json docs/results/dip_sensitivity.json --output docs/results/dip_sensitivity.md
    python benchmarks/dip_sensitivity.py --data-root ../shared/data/cifar10 --n 32 --traces runs/dip-traces \
        --at small:1500 --vary step=0,0.1,0.25,1 keep=1,3,10 ssim_threshold=0.5,0.9 warmup=0,300 \
        --json docs/results/dip_reconstruction.json --output docs/results/dip_reconstruction.md

For every network, one DIP trace per image is fitted to the largest iteration count and every setting is
reconstructed from it (:meth:`~art_purifiers.defences.dip.DIPPreprocessor.reconstruct`; the fit does not depend on
its length, so this equals running each setting alone); ``--traces`` keeps the fitted traces for later runs.
Each cell is the defence's accuracy on the clean images (SA) and on oblivious PGD adversarial examples crafted on
the undefended victim (RA), and their mean (the paper's Table 3 reports an average over attacks). Table 3 results
are saved after every network, and a rerun with the same settings skips the networks already in the JSON file.
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


def predict(victim: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([victim(chunk).argmax(1) for chunk in torch.split(images, 256)]).numpy()


def fit_traces(victim: torch.nn.Module, network: str, wanted: np.ndarray, inputs: torch.Tensor, seed: int,
               chunk: int, cache: Path | None) -> tuple[torch.Tensor, float]:
    """Trace images ``(len(wanted), len(inputs), C, H, W)`` of every input at the iterations ``wanted``, and the
    seconds the fit took; with ``cache`` (named by the last iteration), read from there when it holds them all and
    saved there otherwise."""
    if cache is not None and cache.is_file():
        saved = torch.load(cache, weights_only=True)
        have = saved["iterations"].numpy()
        if np.isin(wanted, have).all() and torch.equal(saved["inputs"], inputs):
            return saved["snaps"][torch.from_numpy(np.isin(have, wanted))], float(saved["seconds"])
    defence = DIPPreprocessor(victim, network=network, iterations=int(wanted[-1]))
    generator = torch.Generator().manual_seed(seed)
    seeds = torch.randint(0, 2**62, (len(inputs),), generator=generator).tolist()
    start = time.perf_counter()
    snaps = torch.cat([defence.trace(inputs[lo : lo + chunk], seeds[lo : lo + chunk], wanted)
                       for lo in range(0, len(inputs), chunk)], dim=1)
    seconds = time.perf_counter() - start
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"iterations": torch.from_numpy(wanted), "inputs": inputs, "snaps": snaps, "seconds": seconds},
                   cache)
    return snaps, seconds


def score(defence: DIPPreprocessor, inputs: torch.Tensor, snaps: torch.Tensor, wanted: np.ndarray,
          labels: np.ndarray) -> dict:
    """SA and RA (%) of ``defence`` reconstructing from its snapshots among ``snaps``; ``inputs`` = clean images
    then their adversarial examples."""
    mine = np.isin(wanted, defence.snapshot_iterations())
    outputs = torch.cat([defence.reconstruct(inputs[lo : lo + 64], snaps[torch.from_numpy(mine), lo : lo + 64],
                                             wanted[mine]) for lo in range(0, len(inputs), 64)])
    correct = predict(defence.classifier, outputs) == np.concatenate([labels, labels])
    n = len(labels)
    clean, robust = 100 * float(correct[:n].mean()), 100 * float(correct[n:].mean())
    return {"clean": clean, "robust": robust, "mean": (clean + robust) / 2}


def union_of_snapshots(defences: list[DIPPreprocessor]) -> np.ndarray:
    return np.unique(np.concatenate([d.snapshot_iterations() for d in defences])).astype(int)


def study_network(victim: torch.nn.Module, network: str, iteration_counts: list[int], inputs: torch.Tensor,
                  labels: np.ndarray, seed: int, chunk: int, cache: Path | None) -> list[dict]:
    """Table 3's row for one network: SA and RA of every iteration count."""
    defences = {t: DIPPreprocessor(victim, network=network, iterations=t, seed=seed) for t in iteration_counts}
    wanted = union_of_snapshots(list(defences.values()))
    snaps, seconds = fit_traces(victim, network, wanted, inputs, seed, chunk, cache)
    print(f"{network}: {seconds:.0f} s for {len(inputs)} traces of {max(iteration_counts)} iterations", flush=True)
    rows = []
    for t, defence in defences.items():
        rows.append({"network": network, "iterations": t, **score(defence, inputs, snaps, wanted, labels),
                     "trace_seconds": seconds, "images": len(inputs)})
        print(f"  T={t}: SA {rows[-1]['clean']:.1f} RA {rows[-1]['robust']:.1f} mean {rows[-1]['mean']:.1f}",
              flush=True)
    return rows


def study_reconstruction(victim: torch.nn.Module, network: str, iterations: int, vary: dict[str, list[float]],
                         inputs: torch.Tensor, labels: np.ndarray, seed: int, chunk: int,
                         cache: Path | None) -> list[dict]:
    """The reconstruction's parameters one at a time around the defaults (the paper's Fig. 6 group), on one
    network and iteration count."""
    base = DIPPreprocessor(victim, network=network, iterations=iterations, seed=seed)
    variants = [("default", None, base)] + [
        (name, value, DIPPreprocessor(victim, network=network, iterations=iterations, seed=seed, **{name: value}))
        for name, values in vary.items() for value in values]
    wanted = union_of_snapshots([d for _, _, d in variants])
    snaps, _ = fit_traces(victim, network, wanted, inputs, seed, chunk, cache)
    rows = []
    for name, value, defence in variants:
        rows.append({"parameter": name, "value": value, **score(defence, inputs, snaps, wanted, labels)})
        print(f"  {name}={value}: SA {rows[-1]['clean']:.1f} RA {rows[-1]['robust']:.1f} "
              f"mean {rows[-1]['mean']:.1f}", flush=True)
    return rows


def markdown(result: dict) -> str:
    s = result["settings"]
    if "vary" in s:
        lines = [f"| parameter ({s['network']}, T = {s['at_iterations']}) | value | SA | RA | mean |",
                 "|---|---|---|---|---|"]
        lines += [f"| {row['parameter']} | {'' if row['value'] is None else row['value']} | {row['clean']:.1f} | "
                  f"{row['robust']:.1f} | **{row['mean']:.1f}** |" for row in result["rows"]]
    else:
        counts = s["iterations"]
        lines = ["| network | " + " | ".join(f"T = {t}" for t in counts) + " |", "|---|" + "---|" * len(counts)]
        for network in dict.fromkeys(row["network"] for row in result["rows"]):
            cells = {row["iterations"]: row for row in result["rows"] if row["network"] == network}
            lines.append(f"| {network} | " + " | ".join(
                f"{cells[t]['clean']:.1f} / {cells[t]['robust']:.1f} (**{cells[t]['mean']:.1f}**)" for t in counts)
                + " |")
    lines += ["", f"SA / RA (mean) in %, CIFAR-10 training images {s['images'][0]}..{s['images'][1]}, victim "
              f"{s['victim']} (undefended: SA {result['victim']['clean']:.1f}, RA {result['victim']['robust']:.1f}), "
              f"oblivious {s['attack']}, seed {s['seed']}."]
    return "\n".join(lines) + "\n"


def parse_vary(items: list[str]) -> dict[str, list[float]]:
    """``["step=0,0.25", "keep=1,3"]`` -> ``{"step": [0.0, 0.25], "keep": [1, 3]}`` (integers stay integers)."""
    vary = {}
    for item in items:
        name, _, values = item.partition("=")
        vary[name] = [int(v) if v.lstrip("-").isdigit() else float(v) for v in values.split(",")]
    return vary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="CIFAR-10 python-layout folder (training images used)")
    parser.add_argument("--n", type=int, default=32, help="training images 0..n-1")
    parser.add_argument("--networks", nargs="+", default=["small", "medium", "large"])
    parser.add_argument("--iterations", nargs="+", type=int, default=[500, 750, 1000, 1250, 1500])
    parser.add_argument("--vary", nargs="+", default=None, metavar="NAME=V1,V2",
                        help="instead of Table 3: vary these reconstruction parameters one at a time (with --at)")
    parser.add_argument("--at", default="medium:1000", metavar="NETWORK:T", help="network and iterations for --vary")
    parser.add_argument("--eps", default="8/255")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-size", default="2/255")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=64, help="images fitted together")
    parser.add_argument("--traces", default=None, help="folder caching the fitted traces (reused by later runs)")
    parser.add_argument("--json", required=True, help="results (read first: networks already there are skipped)")
    parser.add_argument("--output", default=None, help="also write the markdown table here")
    args = parser.parse_args()

    x, y = load_cifar10(args.data_root, "train", range(args.n))
    spec = AttackSpec("pgd", eps=parse_eps(args.eps), steps=args.steps, step_size=parse_eps(args.step_size))
    settings = {"split": "train", "images": [0, args.n - 1], "victim": "resnet20", "attack": spec.label(),
                "attack_settings": spec.settings(), "seed": args.seed}
    if args.vary:
        network, _, at_iterations = args.at.partition(":")
        settings.update(vary=parse_vary(args.vary), network=network, at_iterations=int(at_iterations))
    else:
        settings["iterations"] = sorted(args.iterations)
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

    def cache(network: str, last: int) -> Path | None:
        return None if args.traces is None else Path(args.traces) / f"{network}-n{args.n}-seed{args.seed}-T{last}.pt"

    if args.vary:
        iterations = settings["at_iterations"]
        result["rows"] = study_reconstruction(victim, settings["network"], iterations, settings["vary"], inputs, y,
                                              args.seed, args.chunk, cache(settings["network"], iterations))
        path.write_text(json.dumps(result, indent=2))
    else:
        done = {row["network"] for row in result["rows"]}
        for network in args.networks:
            if network in done:
                print(f"{network}: already in {path}")
                continue
            result["rows"] += study_network(victim, network, settings["iterations"], inputs, y, args.seed,
                                            args.chunk, cache(network, max(settings["iterations"])))
            path.write_text(json.dumps(result, indent=2))
    table = markdown(result)
    print(table)
    if args.output:
        Path(args.output).write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
