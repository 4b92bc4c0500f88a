"""Where a DIP defence's time goes: one call of ``B`` images (64 by default) under ``torch.profiler``, on the CPU, one
thread unless ``--threads`` says otherwise, with the fit shortened so that a profile takes about a minute.

    OMP_NUM_THREADS=1 python benchmarks/dip_profile.py --defence dip --iterations 150 --json dip_profile.json
    OMP_NUM_THREADS=1 python benchmarks/dip_profile.py --defence dipdefend --iterations 500

The call is labelled by stage (labels nest: a stage's CPU time includes those of the labels inside it): the fit (its
networks' forward passes, the backward pass and Adam step, the input jitter's draws) and the reconstruction, which
starts with the decisions (the victim and SSIM on the snapshots); every victim call (on the snapshots, the
on-boundary searches and the kept images) is also labelled. The script prints each label's CPU time, the operators
with the most self CPU time, and the unprofiled seconds of the same call (the profiler adds a few microseconds per
operator, so small operators weigh more in the profile than in a plain run). With ``--iterations`` below the
default, the DIP defence keeps its warm-up and snapshots in proportion (as ``benchmarks/dip_cost.py`` does); the
on-boundary searches (one per kept pair of snapshots) need not shrink with them. The images are the bundled
CIFAR-10 sample, seed 0.

``--victim-chunks 32 256`` also times the bundled ResNet-20 victim alone on ``50 x B`` noisy copies of the images in
chunks of each size (CPU seconds per image, best of two rounds taken in turns) and checks that every size gives the
logits of the first to the bit (:attr:`~art_purifiers.defences.dip.DIPPreprocessor.CPU_VICTIM_IMAGES`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import ExitStack
from unittest import mock

import torch
from dip_cost import build
from torch.profiler import ProfilerActivity, profile, record_function

from art_purifiers.data import load_sample
from art_purifiers.defences import dip as dip_defences
from art_purifiers.evaluation.benchmark import machine
from art_purifiers.models import load_victim
from art_purifiers.nn import dip as dip_networks

#: Stage labels: (label, object, attribute) of the function each one wraps.
STAGES = [("fit", "defence", "trace"), ("fit", "defence", "purify_with_seeds"),
          ("fit: forward", dip_networks.BatchedSkipNet, "forward"),
          ("fit: backward and Adam", dip_networks._FitOptimiser, "step"),
          ("fit: jitter", dip_networks._Jitter, "next"),
          ("reconstruction (with the decisions)", "defence", "reconstruct"),
          ("decisions (victim and SSIM on the snapshots)", "defence", "decide"),
          ("victim (every call)", "defence", "_probabilities"), ("SSIM", dip_defences, "ssim")]

#: The profiler's label of ``torch.optim.Adam.step``.
ADAM = "Optimizer.step#Adam.step"


def labelled(label: str, function):
    def wrapper(*args, **kwargs):
        with record_function(label):
            return function(*args, **kwargs)
    return wrapper


def label_stages(defence, stack: ExitStack) -> list[str]:
    """Wrap every stage function that this defence has in a profiler label; returns the labels used."""
    used = []
    for label, owner, attribute in STAGES:
        target = defence if owner == "defence" else owner
        if label == "fit" and attribute == "purify_with_seeds" and hasattr(defence, "trace"):
            continue  # the DIP defence's fit is its trace; DIPDefend's is its whole purification
        function = getattr(target, attribute, None)
        if function is None:
            continue
        if owner == "defence":
            setattr(defence, attribute, labelled(label, function))
        else:
            stack.enter_context(mock.patch.object(target, attribute, labelled(label, function)))
        used.append(label)
    return used


def profiled(defence, x: torch.Tensor, rows: int) -> dict:
    """One labelled call of ``defence`` on ``x`` under the profiler: CPU seconds per label and the top operators."""
    with ExitStack() as stack:
        labels = label_stages(defence, stack)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            defence(x.numpy())
            seconds = time.perf_counter() - start
    events = prof.key_averages()
    labels.append(ADAM)  # torch's own label of Adam's steps
    stages = {e.key: {"cpu_seconds": e.cpu_time_total / 1e6, "calls": e.count} for e in events if e.key in labels}
    self_total = sum(e.self_cpu_time_total for e in events)
    operators = sorted((e for e in events if e.key not in labels), key=lambda e: -e.self_cpu_time_total)[:rows]
    return {"seconds_profiled": seconds, "self_cpu_seconds": self_total / 1e6, "stages": stages,
            "operators": [{"name": e.key, "self_cpu_seconds": e.self_cpu_time_total / 1e6,
                           "share": e.self_cpu_time_total / self_total, "calls": e.count} for e in operators]}


def victim_chunks(victim: torch.nn.Module, x: torch.Tensor, sizes: list[int]) -> list[dict]:
    """CPU milliseconds per image of ``victim`` on ``50 x len(x)`` noisy copies of ``x`` in chunks of each size (best of
    two rounds in turns), and whether its logits equal those of the first size to the bit."""
    noise = torch.randn((50, *x.shape), generator=torch.Generator().manual_seed(0))
    images = (x + 0.1 * noise).clamp(0, 1).flatten(0, 1)
    logits, best = {}, {size: float("inf") for size in sizes}
    with torch.no_grad():
        for _ in range(2):
            for size in sizes:
                start = time.process_time()
                logits[size] = torch.cat([victim(chunk) for chunk in torch.split(images, size)])
                best[size] = min(best[size], time.process_time() - start)
    return [{"chunk": size, "cpu_ms_per_image": 1000 * best[size] / len(images), "images": len(images),
             "equal_to_the_bit": bool(torch.equal(logits[size], logits[sizes[0]]))} for size in sizes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defence", nargs="+", default=["dip", "dipdefend"], choices=["dip", "dipdefend"])
    parser.add_argument("--batch", type=int, default=64, help="images per call (default 64)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="shorten the fit to this many iterations (default: the defence's default)")
    parser.add_argument("--rows", type=int, default=20, help="operators listed (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--victim-chunks", type=int, nargs="*", default=[],
                        help="also time the victim alone in chunks of these sizes (default: not)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if not 1 <= args.batch <= 200 or args.rows < 1 or args.threads < 1 or (args.iterations or 2) < 2 \
            or any(size < 2 for size in args.victim_chunks):
        parser.error("--batch must be in 1..200 (the bundled sample), --rows and --threads at least 1, "
                     "--iterations and --victim-chunks at least 2.")

    torch.set_num_threads(args.threads)
    victim = load_victim("resnet20").eval()
    x = torch.from_numpy(load_sample()[0][: args.batch])
    result = {"command": "python benchmarks/dip_profile.py " + " ".join(sys.argv[1:]), "threads": args.threads,
              "date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(), "batch": args.batch, "rows": []}
    if args.victim_chunks:
        load_before = os.getloadavg()[0]
        result["victim_chunks"] = victim_chunks(victim, x, args.victim_chunks)
        result["victim_chunks_load_average_1min"] = [load_before, os.getloadavg()[0]]
        for row in result["victim_chunks"]:
            print(f"victim in chunks of {row['chunk']}: {row['cpu_ms_per_image']:.3f} ms CPU per image, logits equal "
                  f"to chunks of {args.victim_chunks[0]}: {row['equal_to_the_bit']}")
    for name in args.defence:
        defence = build(name, "default", args.iterations, victim)
        defence.configured(iterations=3, **({"snapshots": 2, "warmup": 0} if name == "dip" else {}))(
            x[:1].numpy())  # warm-up: thread pools, first allocations
        load_before, start, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
        defence(x.numpy())
        plain = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                 "load_average_1min": [load_before, os.getloadavg()[0]]}
        row = {"defence": name, "iterations": defence.iterations, "unprofiled": plain,
               **profiled(defence, x, args.rows), "settings": defence.describe()}
        result["rows"].append(row)
        print(f"\n{name}, {defence.iterations} iterations, batch {args.batch}: {plain['seconds']:.1f} s unprofiled "
              f"({plain['cpu_seconds']:.1f} s CPU, load {plain['load_average_1min'][0]:.1f} -> "
              f"{plain['load_average_1min'][1]:.1f}), {row['self_cpu_seconds']:.1f} s CPU profiled")
        for label, stage in row["stages"].items():
            print(f"  {label:44s} {stage['cpu_seconds']:8.2f} s  {stage['cpu_seconds'] / row['self_cpu_seconds']:6.1%}"
                  f"  ({stage['calls']} calls)")
        for op in row["operators"]:
            print(f"    {op['name'][:44]:44s} {op['self_cpu_seconds']:8.2f} s  {op['share']:6.1%}  "
                  f"({op['calls']} calls)")
        if args.json:
            result["machine"] = machine()
            with open(args.json, "w") as handle:
                json.dump(result, handle, indent=2, default=str)


if __name__ == "__main__":
    main()
