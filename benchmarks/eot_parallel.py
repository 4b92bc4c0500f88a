"""EOT draws in one forward against one draw per forward: wall time of the EOT classifier's ``predict`` and
``loss_gradient`` (docs/evaluating.md, "EOT draws in one forward").

    OMP_NUM_THREADS=1 python benchmarks/eot_parallel.py --defence resampling:sampler=variant --draws 8

Victim: the bundled ResNet-20; images: bundled CIFAR-10 test images 0..n-1; the defence unseeded, as the EOT
attack runs it. For each ``draws_per_forward`` (all draws, and one), ``--repeats`` timings of ``predict`` and of
``loss_gradient`` on the same images (after one untimed warm-up call); prints the median of each, the speed-up and
the load average, and writes them as JSON with ``--json``. The two variants alternate within each repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

from art_purifiers.checks import check_integer
from art_purifiers.data import load_sample
from art_purifiers.defences import make_defence
from art_purifiers.models import load_victim


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def timings(spec: str, x: np.ndarray, y: np.ndarray, draws: int, repeats: int) -> dict:
    """Median seconds of ``predict`` and ``loss_gradient`` through ``spec`` averaged over ``draws`` draws, all draws
    in one forward and one draw per forward. The variants alternate within each repeat, so a change in the
    machine's load falls on both alike; each has one untimed warm-up call first."""
    victim = load_victim()
    defence = make_defence(spec, victim=victim, device_type="cpu").configured(seed=None)
    calls = {}
    for label, per_forward in (("all", None), ("1", 1)):
        classifier = defence.deploy(victim).with_eot(draws, per_forward).classifier()
        calls[(label, "predict")] = lambda c=classifier: c.predict(x, batch_size=len(x))
        calls[(label, "loss_gradient")] = lambda c=classifier: c.loss_gradient(x, y)
    for run in calls.values():
        run()
    times = {key: [] for key in calls}
    for _ in range(repeats):
        for key, run in calls.items():
            times[key].append(seconds(run))
    return {f"draws_per_forward={label}": {call: statistics.median(times[(label, call)])
                                           for call in ("predict", "loss_gradient")} for label in ("all", "1")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--defence", default="resampling:sampler=variant", help="a random defence's spec")
    parser.add_argument("--draws", type=int, default=8, help="EOT draws")
    parser.add_argument("--n", type=int, default=32, help="images (bundled test images 0..n-1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    for option in ("draws", "n", "repeats"):
        check_integer(f"--{option}", getattr(args, option), minimum=1)
    x, labels = load_sample(args.n)
    y = np.eye(10, dtype=np.float32)[labels]  # ART's loss_gradient takes one-hot labels
    figures = timings(args.defence, x, y, args.draws, args.repeats)
    parallel, sequential = figures["draws_per_forward=all"], figures["draws_per_forward=1"]
    report = {"command": "python benchmarks/eot_parallel.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "defence": args.defence, "draws": args.draws, "images": [0, args.n - 1], "repeats": args.repeats,
              "seconds_median": figures,
              "speed_up": {call: sequential[call] / parallel[call] for call in parallel},
              "threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
              "load_average_after": os.getloadavg(), "torch": torch.__version__}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            file.write(text + "\n")
    return report


if __name__ == "__main__":
    main()
