"""Seconds of the DIP defence's stages at its defaults on one call's batch (``B`` = 64 images by default): the fit,
the victim's decisions on the snapshots, the reconstruction (on-boundary searches, kept labels, average), and the
input jitter's draws per iteration; on the CPU, one thread unless ``--threads`` says otherwise.

    OMP_NUM_THREADS=1 python benchmarks/dip_stage_cost.py --trace runs/dip-stage-trace.pt \\
        --json docs/results/dip_cost_stages_cpu.json

The fit is saved to ``--trace`` and loaded by later runs, so that two versions of the code time their
reconstruction on the same trace (run this script from each version's tree). The jitter is timed both ways in one
process: one ``randn`` per generator and iteration stacked into a batch (the code before it was batched) and the
blocks of :class:`~art_purifiers.nn.dip._Jitter` (when this version has it). ``--interleave`` also times the
per-image reconstruction that the batched one replaced (the reference in ``tests/test_dip_speed.py``), alternating
with the batched one on the same trace, and records whether their outputs are equal to the bit. Every figure keeps
the 1-minute load average before and after it, since other jobs on the machine slow it down. The images are the
bundled CIFAR-10 sample (test images 0..``B``-1), seed 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from art_purifiers.data import load_sample
from art_purifiers.defences.dip import DIPPreprocessor
from art_purifiers.evaluation.benchmark import machine
from art_purifiers.models import load_victim
from art_purifiers.nn import dip as dip_module


def timed(function, repeat: int) -> dict:
    """Seconds of ``repeat`` calls of ``function``, and the load average before and after them."""
    load_before, seconds = os.getloadavg()[0], []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "best": min(seconds), "load_average_1min": [load_before, os.getloadavg()[0]]}


def fitted(defence: DIPPreprocessor, x: torch.Tensor, path: Path | None) -> tuple[torch.Tensor, dict | None]:
    """The trace of ``x`` at the defence's snapshot iterations (seeds from seed 0), loaded from ``path`` when it
    holds one of the same images, else fitted (and timed, and saved there)."""
    if path is not None and path.exists():
        saved = torch.load(path)
        if torch.equal(saved["inputs"], x):
            return saved["snaps"], None
    seeds = torch.randint(0, 2**62, (len(x),), generator=torch.Generator().manual_seed(0)).tolist()
    iterations = defence.snapshot_iterations().astype(int)
    kept = []
    timing = timed(lambda: kept.append(defence.trace(x, seeds, iterations)), 1)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"inputs": x, "snaps": kept[0]}, path)
    return kept[0], timing


def jitter_timings(n: int, shape: tuple[int, ...], iterations: int) -> dict:
    """Seconds per iteration of drawing ``n`` images' input jitter of ``shape``, per iteration and in blocks."""
    def per_iteration() -> None:
        generators = [torch.Generator().manual_seed(i) for i in range(n)]
        for _ in range(iterations):
            torch.stack([torch.randn(shape, generator=g) for g in generators])

    rows = {"per_iteration": timed(per_iteration, 3)}
    if hasattr(dip_module, "_Jitter"):
        def blocks() -> None:
            jitter = dip_module._Jitter([torch.Generator().manual_seed(i) for i in range(n)], shape,
                                        torch.device("cpu"), iterations)
            for _ in range(iterations):
                jitter.next()

        rows["blocks"] = timed(blocks, 3)
    for row in rows.values():
        row["best_per_iteration_ms"] = 1000 * row["best"] / iterations
    return rows


def interleaved(defence: DIPPreprocessor, x: torch.Tensor, snaps: torch.Tensor, iterations: np.ndarray, decisions,
                repeat: int) -> dict:
    """The batched reconstruction and the per-image reference of ``tests/test_dip_speed.py``, timed in turns."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_dip_speed import per_image_reconstruct

    outputs, rows = {}, {"batched": [], "per_image": [], "load_average_1min": [os.getloadavg()[0]]}
    for _ in range(repeat):
        for name, run in (("batched", lambda: defence.reconstruct(x, snaps, iterations, decisions, {})),
                          ("per_image", lambda: per_image_reconstruct(defence, x, snaps, iterations, decisions, {}))):
            start = time.perf_counter()
            outputs[name] = run()
            rows[name].append(time.perf_counter() - start)
    rows["load_average_1min"].append(os.getloadavg()[0])
    rows["equal_to_the_bit"] = bool(torch.equal(outputs["batched"], outputs["per_image"]))
    return rows


def pair_count(defence: DIPPreprocessor, decisions, iterations: np.ndarray) -> int:
    """On-boundary searches the reconstruction makes (cross-boundary pairs kept, over all images)."""
    labels = decisions.probs.argmax(-1)
    good = decisions.quality > defence.ssim_threshold
    late = torch.as_tensor(iterations)[:-1, None] > defence.warmup
    crossing = (labels[1:] != labels[:-1]) & good[1:] & good[:-1] & late
    return int(crossing.sum(0).clamp(max=defence.keep).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="images per call (default 64)")
    parser.add_argument("--trace", type=Path, help="where the fitted trace is saved and loaded from")
    parser.add_argument("--repeat", type=int, default=3, help="timed reconstructions (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--interleave", action="store_true",
                        help="also time the per-image reference reconstruction, in turns with the batched one")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if not 1 <= args.batch <= 200 or args.repeat < 1 or args.threads < 1:
        parser.error("--batch must be in 1..200 (the bundled sample), --repeat and --threads at least 1.")

    torch.set_num_threads(args.threads)
    defence = DIPPreprocessor(load_victim("resnet20").eval(), seed=0, device_type="cpu")
    x = torch.from_numpy(load_sample()[0][: args.batch])
    iterations = defence.snapshot_iterations().astype(int)
    snaps, fit = fitted(defence, x, args.trace)
    decisions = defence.decide(x, snaps)
    result = {"command": "python benchmarks/dip_stage_cost.py " + " ".join(sys.argv[1:]), "threads": args.threads,
              "date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(), "machine": machine(),
              "batch": args.batch, "settings": defence.describe(), "fit": fit,
              "on_boundary_searches": pair_count(defence, decisions, iterations),
              "decide": timed(lambda: defence.decide(x, snaps), args.repeat),
              "reconstruct": timed(lambda: defence.reconstruct(x, snaps, iterations, decisions), args.repeat),
              "jitter": jitter_timings(args.batch, (defence.network_config.input_depth, *x.shape[-2:]), 100)}
    if args.interleave:
        result["interleaved"] = interleaved(defence, x, snaps, iterations, decisions, args.repeat)
    print(json.dumps({key: result.get(key) for key in ("fit", "on_boundary_searches", "decide", "reconstruct", "jitter",
                                                       "interleaved")}, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, default=str)


if __name__ == "__main__":
    main()
