"""What one full-gradient step costs beside one purification, for the DIP defences at their defaults (or at
``--iterations``), on the CPU, one thread unless ``--threads`` says otherwise.

    OMP_NUM_THREADS=1 python benchmarks/dip_full_gradient_cost.py --batch 1 4 \
        --json docs/results/dip_full_gradient_cost_cpu.json

For each defence and batch size ``B`` (images of the bundled CIFAR-10 sample), two timed calls: a purification
(``forward`` under ``torch.no_grad()``, the defence in BPDA mode) and a full-gradient step (``gradient="full"``:
``forward`` with gradients, then ``backward`` of the outputs' sum). Peak memory is the process's peak resident set
size (``VmHWM`` of ``/proc/self/status``, reset through ``/proc/self/clear_refs`` before the call; Linux only),
each call in a fresh process (memory freed by an earlier call would stay resident and hide a later call's peak);
``rss_before_mib`` is the resident size when the call starts (the interpreter, torch, the victim, the images), so
the call's own peak is about the difference. The JSON keeps the 1-minute load average before and after each call,
since other jobs on the machine slow it down. Shortened fits (``--iterations``) keep the DIP defence's warm-up and
snapshots in proportion to the iterations, as ``benchmarks/dip_cost.py`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from art_purifiers.data import load_sample
from art_purifiers.defences.dip import DIPDefendPreprocessor, DIPPreprocessor
from art_purifiers.evaluation.benchmark import machine
from art_purifiers.models import load_victim


def rss_mib(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} is not in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size to the current one


def build(name: str, iterations: int | None, victim: torch.nn.Module, **options):
    options = {"seed": 0, "device_type": "cpu", **options}
    if iterations is not None:
        options["iterations"] = iterations
        if name == "dip":
            options["warmup"] = round(iterations * 700 / 1500)
            options["snapshots"] = min(200, max(2, round(iterations * 200 / 1500)))
    return DIPPreprocessor(victim, **options) if name == "dip" else DIPDefendPreprocessor(**options)


def measure(call) -> dict:
    """Seconds and peak resident memory of ``call()``."""
    reset_peak()
    before, load = rss_mib("VmRSS"), os.getloadavg()[0]
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mib": rss_mib("VmHWM"), "rss_before_mib": before,
            "load_average_1min": [load, os.getloadavg()[0]]}


def full_step(defence, x: torch.Tensor) -> None:
    xg = x.clone().requires_grad_()
    defence.forward(xg)[0].sum().backward()


def in_fresh_process(args: argparse.Namespace, name: str, batch: int, kind: str) -> dict:
    """One measurement (``kind``: ``purification`` or ``full_gradient_step``) in a new interpreter."""
    command = [sys.executable, __file__, "--only", name, str(batch), kind, "--threads", str(args.threads),
               "--checkpoint-every", str(args.checkpoint_every)]
    if args.iterations is not None:
        command += ["--iterations", str(args.iterations)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defence", nargs="+", default=["dipdefend", "dip"], choices=["dip", "dipdefend"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 4], help="images per call (default 1 4)")
    parser.add_argument("--iterations", type=int, default=None, help="shorten the fit (default: the defaults)")
    parser.add_argument("--checkpoint-every", type=int, default=50, help="the full gradient's k (default 50)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, help="write the figures here (rewritten after every measurement)")
    parser.add_argument("--only", nargs=3, metavar=("DEFENCE", "BATCH", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.batch) < 1 or args.threads < 1 or args.checkpoint_every < 1 or (args.iterations or 2) < 2:
        parser.error("--batch, --threads and --checkpoint-every must be >= 1, --iterations >= 2")
    torch.set_num_threads(args.threads)
    if args.only:
        name, batch, kind = args.only[0], int(args.only[1]), args.only[2]
        victim = load_victim("resnet20").eval()
        x = torch.from_numpy(load_sample(batch)[0])
        if kind == "purification":
            purifier = build(name, args.iterations, victim)
            with torch.no_grad():
                result = measure(lambda: purifier.forward(x))
        else:
            attacked = build(name, args.iterations, victim, gradient="full", checkpoint_every=args.checkpoint_every)
            result = {**measure(lambda: full_step(attacked, x)), "defence": repr(attacked)}
        print(json.dumps(result))
        return
    rows = []
    for name in args.defence:
        for batch in args.batch:
            purification, gradient = (in_fresh_process(args, name, batch, kind)
                                      for kind in ("purification", "full_gradient_step"))
            attacked = build(name, args.iterations, None if name == "dipdefend" else load_victim("resnet20"))
            rows.append({"defence": gradient.pop("defence"), "name": name, "batch": batch,
                         "iterations": attacked.iterations,
                         "checkpoint_every": args.checkpoint_every, "purification": purification,
                         "full_gradient_step": gradient,
                         "step_over_purification": gradient["seconds"] / purification["seconds"],
                         "seconds_per_image": {"purification": purification["seconds"] / batch,
                                               "full_gradient_step": gradient["seconds"] / batch}})
            print(f"{name} B={batch}: purification {purification['seconds']:.1f} s "
                  f"(peak {purification['peak_rss_mib']:.0f} MiB), full-gradient step {gradient['seconds']:.1f} s "
                  f"(peak {gradient['peak_rss_mib']:.0f} MiB), from {gradient['rss_before_mib']:.0f} MiB", flush=True)
            if args.json:
                args.json.write_text(json.dumps({"machine": machine(), "threads": args.threads, "rows": rows},
                                                indent=1) + "\n")


if __name__ == "__main__":
    main()
