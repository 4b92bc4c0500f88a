"""What a user pays per image for the DIP defences at their defaults: seconds per image of one call purifying
``B`` images (``B`` = 1, 8, 64 by default), on the CPU, one thread unless ``--threads`` says otherwise.

    OMP_NUM_THREADS=1 python benchmarks/dip_cost.py --json docs/results/dip_cost_cpu.json
    python benchmarks/dip_cost.py --defence dipdefend --batch 64 --iterations 200   # short run, multiplied out

Every figure is one timed call (after a 3-iteration warm-up call on one image); the JSON keeps the 1-minute load
average before and after it, since other jobs on the machine slow it down, and the process's CPU seconds beside the
wall time. With ``--iterations`` below the
defence's default the fit is shortened (for the DIP defence the snapshots and the warm-up keep their proportion
to the iterations, as in ``examples/dip.py``) and the JSON also holds ``projected_seconds_per_image``: the measured
time multiplied by default / measured iterations, a projection, not a measurement (the DIP defence's on-boundary
searches do not grow with the iterations, so for it the projection is an upper bound of that part).
``--preset quick`` measures the defences' quick-look settings (``DIPPreprocessor.QUICK``,
``DIPDefendPreprocessor.QUICK``). The images are the bundled CIFAR-10 sample. ``--outputs`` saves the purified
images, so that two versions of the code (run from each one's tree) can be compared to the bit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from art_purifiers.data import load_sample
from art_purifiers.defences.dip import DIPDefendPreprocessor, DIPPreprocessor
from art_purifiers.evaluation.benchmark import machine
from art_purifiers.models import load_victim

CLASSES = {"dip": DIPPreprocessor, "dipdefend": DIPDefendPreprocessor}


def build(name: str, preset: str, iterations: int | None, victim: torch.nn.Module) -> DIPPreprocessor:
    cls = CLASSES[name]
    options = {**(cls.QUICK if preset == "quick" else {}), "seed": 0, "device_type": "cpu"}
    if iterations is not None:
        options["iterations"] = iterations
        if name == "dip":  # the example's shortening: warm-up and snapshots in proportion (700 and 200 of 1500)
            options["warmup"] = round(iterations * 700 / 1500)
            options["snapshots"] = min(200, max(2, round(iterations * 200 / 1500)))
    return cls(victim, **options) if name == "dip" else cls(**options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defence", nargs="+", default=["dip", "dipdefend"], choices=sorted(CLASSES))
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8, 64], help="images per call")
    parser.add_argument("--iterations", type=int, default=None,
                        help="shorten the fit to this many iterations and project to the default (default: none)")
    parser.add_argument("--preset", default="default", choices=["default", "quick"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", help="write the figures here (rewritten after every measurement)")
    parser.add_argument("--outputs", help="save the purified images here ({(defence, batch): array}, torch.save), to "
                                          "compare two versions of the code")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    victim = load_victim("resnet20").eval()
    sample = torch.from_numpy(load_sample()[0])
    rows, outputs = [], {}
    for name in args.defence:
        defence = build(name, args.preset, args.iterations, victim)
        default_iterations = build(name, args.preset, None, victim).iterations
        defence.configured(iterations=3, **({"snapshots": 2, "warmup": 0} if name == "dip" else {}))(
            sample[:1].numpy())  # warm-up: thread pools, first allocations
        for batch in args.batch:
            load_before = os.getloadavg()[0]
            start, cpu = time.perf_counter(), time.process_time()
            outputs[name, batch] = defence(sample[:batch].numpy())[0]
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
            row = {"defence": name, "preset": args.preset, "batch": batch, "iterations": defence.iterations,
                   "seconds": seconds, "seconds_per_image": seconds / batch,
                   "cpu_seconds": cpu_seconds,  # this process's CPU time: less sensitive to other jobs than seconds
                   "fit_iterations_per_second": defence.iterations * batch / seconds,
                   "load_average_1min": [load_before, os.getloadavg()[0]],  # before and after: other jobs' share
                   "settings": defence.describe()}
            if defence.iterations != default_iterations:
                row["projected_seconds_per_image"] = seconds / batch * default_iterations / defence.iterations
                row["projected_to_iterations"] = default_iterations
            rows.append(row)
            projected = (f" (projected to {default_iterations} iterations: {row['projected_seconds_per_image']:.2f})"
                         if "projected_seconds_per_image" in row else "")
            print(f"{name} {args.preset}, {defence.iterations} iterations, batch {batch}: {seconds:.1f} s "
                  f"({cpu_seconds:.1f} s CPU), {seconds / batch:.2f} s/image{projected}", flush=True)
            if args.json:
                result = {"command": "python benchmarks/dip_cost.py " + " ".join(sys.argv[1:]), "threads": args.threads,
                          "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
                          "machine": machine(), "rows": rows}
                with open(args.json, "w") as handle:
                    json.dump(result, handle, indent=2, default=str)
            if args.outputs:
                torch.save(outputs, args.outputs)


if __name__ == "__main__":
    main()
