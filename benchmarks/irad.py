"""IRAD's throughput (images/s), peak memory and multiply-accumulates per image.

    python benchmarks/irad.py --device cpu --json docs/results/irad_benchmark_cpu.json
    python benchmarks/irad.py --device cuda

Images are the bundled CIFAR-10 sample (test images 0..199) repeated to fill the batches; the speed of IRAD
does not depend on the content. Run each device in its own process: on a CPU the peak memory is the
process's peak resident set (weights and interpreter included).
"""

from __future__ import annotations

import argparse

import torch

from art_purifiers import IRADPreprocessor
from art_purifiers.evaluation.benchmark import (
    multiply_accumulates,
    peak_memory_bytes,
    repeated_sample,
    report,
    time_purifier,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="cifar10")
    parser.add_argument("--sampler", default="samplenet")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=2, help="batches per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    device = torch.device(args.device)
    defence = IRADPreprocessor(weights=args.weights, sampler=args.sampler)
    x = repeated_sample(args.batch_size * args.batches, device)
    macs = multiply_accumulates(defence, x[:1])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timing = time_purifier(defence, x, args.batch_size, args.repeats)
    result = {"defence": f"irad:weights={args.weights},sampler={args.sampler}", **timing.to_dict(),
              "macs_per_image": macs, "peak_memory_bytes": peak_memory_bytes(device)}
    report(f"{result['defence']} on {device}: {timing.images_per_second:.1f} images/s at batch {args.batch_size} "
           f"({timing.threads} threads), {macs / 1e9:.3f} GMAC/image, "
           f"peak memory {result['peak_memory_bytes'] / 2**30:.2f} GiB", result, args.json)


if __name__ == "__main__":
    main()
