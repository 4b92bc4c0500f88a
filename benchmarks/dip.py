"""Seconds per image of the DIP defences, one image at a time (batch 1) against batched (batch 64), with equal
iterations: the speed-up that batching the per-image networks buys.

    python benchmarks/dip.py --json docs/results/dip_benchmark_cpu.json
    python benchmarks/dip.py --device cuda --iterations 200

Images are the bundled CIFAR-10 sample (test images 0..199); the cost of a DIP fit does not depend on the content.
The batch-1 figure purifies ``--single`` images one by one; the batched figure purifies ``--batch`` images in one
call. Run alone on the machine: other load distorts the comparison.
"""

from __future__ import annotations

import argparse

import torch

from art_purifiers.data import load_sample
from art_purifiers.defences.dip import DIPDefendPreprocessor, DIPPreprocessor
from art_purifiers.evaluation.benchmark import peak_memory_bytes, report, time_purifier
from art_purifiers.models import load_victim


def build(name: str, network: str | None, iterations: int, victim: torch.nn.Module, device: torch.device):
    options = {"iterations": iterations, "seed": 0, "device_type": "cpu" if device.type == "cpu" else "gpu"}
    if network is not None:
        options["network"] = network
    if name == "dip":
        return DIPPreprocessor(victim, snapshots=min(200, iterations), warmup=0, **options)
    return DIPDefendPreprocessor(**options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defence", default="dip", choices=["dip", "dipdefend"])
    parser.add_argument("--network", default=None, help="small, medium or large (default: the defence's)")
    parser.add_argument("--iterations", type=int, default=100, help="DIP iterations per image (both settings)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64, help="images per call in the batched setting")
    parser.add_argument("--single", type=int, default=8, help="images timed one by one")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    device = torch.device(args.device)
    victim = load_victim("resnet20").to(device)
    defence = build(args.defence, args.network, args.iterations, victim, device)
    sample, _ = load_sample()
    x = torch.from_numpy(sample[: max(args.batch, args.single)]).to(device)
    # One warm-up image serves both settings; a batched warm-up would double the cost of the run.
    one = time_purifier(defence, x[: args.single], batch_size=1, repeats=1)
    batched = time_purifier(defence, x[: args.batch], batch_size=args.batch, repeats=1, warmup=False)
    network = defence.network if isinstance(defence.network, str) else str(defence.network)
    result = {
        "defence": args.defence, "network": network,
        "iterations": args.iterations, "batch_1": one.to_dict(), "batched": batched.to_dict(),
        "speedup": one.seconds_per_image / batched.seconds_per_image,
        "peak_memory_bytes": peak_memory_bytes(device),
    }
    report(f"{args.defence} ({result['network']}, {args.iterations} iterations) on {device}, {one.threads} threads: "
           f"{one.seconds_per_image:.3f} s/image at batch 1, {batched.seconds_per_image:.3f} s/image at batch "
           f"{args.batch}: {result['speedup']:.2f}x", result, args.json)


if __name__ == "__main__":
    main()
