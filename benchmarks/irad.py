"""IRAD's throughput (images/s) as a share of the machine's SGEMM, peak memory and multiply-accumulates per image.

    python benchmarks/irad.py --device cpu --json docs/results/irad_benchmark_cpu.json
    python benchmarks/irad.py --device cuda

In one process, with the same threads: a large float32 matrix product (SGEMM, the machine's reference), then
IRAD without gradients (forward) and with the exact gradient back to the input (forward+backward, what each
step of the adaptive attack runs). Each IRAD figure is also given in FLOP/s (two per multiply-accumulate, as
counted by torch's FLOP counter for the computation that runs) and as a share of the SGEMM figure.

Images are the bundled CIFAR-10 sample (test images 0..199) repeated to fill the batches; the speed of IRAD
does not depend on the content. Run each device in its own process: on a CPU the peak memory is the
process's peak resident set (weights and interpreter included).
"""

from __future__ import annotations

import argparse

import torch

from art_purifiers import IRADPreprocessor
from art_purifiers.checks import check_integer
from art_purifiers.evaluation.benchmark import (
    matmul_flops_per_second,
    multiply_accumulates,
    peak_memory_bytes,
    repeated_sample,
    report,
    time_purifier,
)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="cifar10")
    parser.add_argument("--sampler", default="samplenet")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default: torch's own)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=2, help="batches per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    parser.add_argument("--sgemm-size", type=int, default=2048, help="side of the SGEMM's square matrices")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    for name in ("threads", "batch_size", "batches", "repeats", "sgemm_size"):
        if getattr(args, name) is not None:
            check_integer(f"--{name.replace('_', '-')}", getattr(args, name), minimum=1)
    return args


def _measured(defence: IRADPreprocessor, x: torch.Tensor, args: argparse.Namespace, sgemm: float,
              backward: bool) -> dict:
    """Throughput, multiply-accumulates and the share of SGEMM of one pass kind."""
    macs = multiply_accumulates(defence, x[:1], backward=backward)
    timing = time_purifier(defence, x, args.batch_size, args.repeats, backward=backward)
    flops = 2 * macs * timing.images_per_second
    return {**timing.to_dict(), "macs_per_image": macs, "flops_per_second": flops, "share_of_sgemm": flops / sgemm}


def main() -> None:
    args = _arguments()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    defence = IRADPreprocessor(weights=args.weights, sampler=args.sampler)
    x = repeated_sample(args.batch_size * args.batches, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sgemm = matmul_flops_per_second(device, args.sgemm_size)
    passes = {kind: _measured(defence, x, args, sgemm, kind == "forward_backward")
              for kind in ("forward", "forward_backward")}
    result = {"defence": f"irad:weights={args.weights},sampler={args.sampler}", "device": str(device),
              "threads": torch.get_num_threads(), "batch_size": args.batch_size,
              "sgemm_size": args.sgemm_size, "sgemm_flops_per_second": sgemm, **passes,
              "peak_memory_bytes": peak_memory_bytes(device)}
    lines = [f"{result['defence']} on {device} ({result['threads']} threads), batch {args.batch_size}: "
             f"SGEMM {sgemm / 1e9:.1f} GFLOP/s ({args.sgemm_size}x{args.sgemm_size} float32)"]
    lines += [f"  {kind.replace('_', '+')}: {p['images_per_second']:.1f} images/s x {p['macs_per_image'] / 1e9:.3f} "
              f"GMAC/image = {p['flops_per_second'] / 1e9:.1f} GFLOP/s = {100 * p['share_of_sgemm']:.1f}% of SGEMM"
              for kind, p in passes.items()]
    lines.append(f"  peak memory {result['peak_memory_bytes'] / 2**30:.2f} GiB")
    report("\n".join(lines), result, args.json)


if __name__ == "__main__":
    main()
