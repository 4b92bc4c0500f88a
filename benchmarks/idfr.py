"""IDFR's cost against the bare victim: seconds per image, throughput and multiply-accumulates per image of the
bundled ResNet-20 alone, with IDFR's input denoiser, and with the denoiser and the feature restorer.

    python benchmarks/idfr.py --device cpu --json docs/results/idfr_benchmark_cpu.json
    python benchmarks/idfr.py --device cuda

Images are the bundled CIFAR-10 sample repeated to fill the batches (the cost does not depend on the content).
"""

from __future__ import annotations

import argparse

import torch

from art_purifiers import IDFRDefence
from art_purifiers.deploy import Deployment
from art_purifiers.evaluation.benchmark import multiply_accumulates, repeated_sample, report, time_deployment
from art_purifiers.models import load_victim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="cifar10")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=2, help="batches per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    device = torch.device(args.device)
    victim = load_victim("resnet20").to(device)
    device_type = "cpu" if device.type == "cpu" else "gpu"
    deployments = {
        "victim": Deployment(victim),
        "denoiser": IDFRDefence(args.weights, restorer=False, device_type=device_type).deploy(victim),
        "denoiser + restorer": IDFRDefence(args.weights, device_type=device_type).deploy(victim),
    }
    x = repeated_sample(args.batch_size * args.batches, device)
    rows = {}
    for name, deployment in deployments.items():
        timing = time_deployment(deployment, x, args.batch_size, args.repeats)
        rows[name] = {**timing.to_dict(), "macs_per_image": multiply_accumulates(deployment, x[:1])}
    base = rows["victim"]["seconds_per_image"]
    lines = [f"{name}: {1e3 * row['seconds_per_image']:.3f} ms/image ({row['seconds_per_image'] / base:.2f}x the "
             f"victim), {row['macs_per_image'] / 1e9:.3f} GMAC/image" for name, row in rows.items()]
    report(f"on {device}, batch {args.batch_size}, {torch.get_num_threads()} threads\n" + "\n".join(lines),
           {"weights": args.weights, "rows": rows}, args.json)


if __name__ == "__main__":
    main()
