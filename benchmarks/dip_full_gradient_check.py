"""Checks of the DIP defences' full gradient (``gradient="full"``), with the figures ``docs/defences/dip.md`` quotes.

    OMP_NUM_THREADS=1 python benchmarks/dip_full_gradient_check.py --json docs/results/dip_full_gradient_check.json

1. **Finite differences, float64.** On a tiny configuration (the two-scale network ``channels=(4, 8)``, 12
   iterations, two 12x12 images, fixed seeds; the DIP defence with 6 snapshots, no warm-up and no SSIM gate and a
   steep float64 victim, so that its trace crosses boundaries), the gradient of ``<w, defence(x)>`` for a random
   ``w`` against central differences (``h`` = 1e-6, 1e-7, 1e-8) of the whole defence along random directions and
   single pixels: the relative error ``|numeric - analytic| / |numeric|`` of each (it falls as ``h**2`` where the
   differences' truncation dominates). ``tests/test_dip_full_gradient.py`` keeps it below 5% at ``h = 1e-7``.
2. **Not BPDA.** The relative distance of the full gradient from BPDA's (``w`` itself) on the same images.
3. **Checkpoint spacing in float32.** At ``--iterations`` (default 200) on two bundled test images at 32x32 with
   each defence's network, the cosine between the gradients of the snapshots at three iterations computed with
   ``checkpoint_every`` 1 and with 10 and 50: a segment's recomputation may round differently from the forward
   pass, and DIP's fit amplifies such differences (:mod:`art_purifiers.nn.dip_gradient`).
4. **Sensitivity.** After 5, 20 and 60 iterations of each defence's network on two bundled test images, the
   largest pixel difference between the float32 and the float64 fits from the same draws, and the norm of the
   float64 gradient of a random projection of the trace image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from art_purifiers.data import load_sample
from art_purifiers.defences.dip import DIPDEFEND_NETWORK, DIPDefendPreprocessor, DIPPreprocessor
from art_purifiers.nn.dip import DIP_PRESETS, SkipNetConfig
from art_purifiers.nn.dip_gradient import differentiable_dip_snapshots

TINY = SkipNetConfig(channels=(4, 8), skip=(2, 2))
SIDE = 12


def steep_victim() -> nn.Module:
    torch.manual_seed(1)
    victim = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25, 10))
    with torch.no_grad():
        for parameter in victim.parameters():
            parameter.mul_(20)
    return victim.double().eval()


def tiny_defences() -> dict:
    return {"dip": DIPPreprocessor(steep_victim(), TINY, iterations=12, snapshots=6, warmup=0, ssim_threshold=-1,
                                   grid=8, keep=2, gradient="full", checkpoint_every=5),
            "dipdefend": DIPDefendPreprocessor(TINY, iterations=12, smoothing=0.5, input_jitter=0.03, gradient="full",
                                               checkpoint_every=5)}


def objective(defence, x: torch.Tensor, seeds: list[int], weights: torch.Tensor, boundary: dict) -> torch.Tensor:
    if isinstance(defence, DIPPreprocessor):
        iterations = defence.snapshot_iterations().astype(int)
        snaps = defence.trace(x, seeds, iterations)
        out = defence.reconstruct(x, snaps, iterations, defence.decide(x.detach(), snaps.detach()), boundary)
    else:
        out = defence.purify_with_seeds(x, seeds)
    return (out * weights).sum()


def finite_differences(name: str, defence, steps: tuple[float, ...]) -> dict:
    rng = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, SIDE, SIDE, generator=rng, dtype=torch.float64) * 0.8 + 0.1
    weights = torch.randn(x.shape, generator=rng, dtype=torch.float64)
    seeds, boundary = [5, 6], {}
    xg = x.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(objective(defence, xg, seeds, weights, boundary), xg)
    directions = {f"random {i}": torch.randn(x.shape, generator=rng, dtype=torch.float64) for i in range(4)}
    for pixel in [(0, 0, 3, 4), (1, 2, 7, 1), (0, 1, 11, 11)]:
        directions[f"pixel {pixel}"] = torch.zeros_like(x)
        directions[f"pixel {pixel}"][pixel] = 1.0
    checks, worst = {}, {}
    with torch.no_grad():
        for label, direction in directions.items():
            analytic = float((gradient * direction).sum())
            checks[label] = {"analytic": analytic}
            for h in steps:
                numeric = float((objective(defence, x + h * direction, seeds, weights, {})
                                 - objective(defence, x - h * direction, seeds, weights, {})) / (2 * h))
                error = abs(numeric - analytic) / abs(numeric)
                checks[label][f"h={h:g}"] = {"numeric": numeric, "relative_error": error}
                worst[f"h={h:g}"] = max(worst.get(f"h={h:g}", 0.0), error)
    distance = float((gradient - weights).norm() / weights.norm())
    print(f"{name}: worst relative error {worst}, distance from BPDA {distance:.2f}, boundary pairs {len(boundary)}",
          flush=True)
    return {"checks": checks, "worst_relative_error": worst, "distance_from_bpda": distance,
            "boundary_pairs": len(boundary)}


def spacing(iterations: int) -> dict:
    x = torch.from_numpy(load_sample(2)[0])
    snapshots = [iterations // 2, 3 * iterations // 4, iterations]
    weights = torch.randn(len(snapshots), *x.shape, generator=torch.Generator().manual_seed(0))
    result = {}
    for name, config, jitter in (("dip (small)", DIP_PRESETS["small"], 0.0333), ("dipdefend", DIPDEFEND_NETWORK, 0.0)):
        gradients = {}
        for every in (1, 10, 50):
            xg = x.clone().requires_grad_()
            generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
            snaps = differentiable_dip_snapshots(xg, config, snapshots, generators, input_jitter=jitter,
                                                 checkpoint_every=every)
            (snaps * weights).sum().backward()
            gradients[every] = xg.grad.flatten()
        result[name] = {f"cosine k=1 vs k={k}": float(nn.functional.cosine_similarity(gradients[1], gradients[k],
                                                                                         dim=0)) for k in (10, 50)}
        print(f"{name}: {result[name]}", flush=True)
    return {"iterations": iterations, "snapshots": snapshots, "networks": result}


def sensitivity(iterations: tuple[int, ...]) -> dict:
    """How far the float32 and float64 fits of the same two bundled images, from the same draws, are apart after
    ``iterations`` (largest absolute pixel difference), and the norm of the float64 gradient of ``<w, trace image>``
    (``w`` standard normal): a map whose rounding differences grow this fast has a large, quickly changing
    derivative."""
    x = torch.from_numpy(load_sample(2)[0])
    weights = torch.randn(1, *x.shape, generator=torch.Generator().manual_seed(0))
    result = {}
    for name, config, jitter in (("dip (small)", DIP_PRESETS["small"], 0.0333), ("dipdefend", DIPDEFEND_NETWORK, 0.0)):
        rows = {}
        for t in iterations:
            outputs, norm = {}, 0.0
            for dtype in (torch.float32, torch.float64):
                xg = x.to(dtype).clone().requires_grad_()
                generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
                snaps = differentiable_dip_snapshots(xg, config, [t], generators, input_jitter=jitter,
                                                     checkpoint_every=10)
                (snaps * weights.to(dtype)).sum().backward()
                outputs[dtype], norm = snaps.detach().double(), float(xg.grad.norm())
            rows[str(t)] = {"float32_vs_float64_max_difference": float((outputs[torch.float32]
                                                                        - outputs[torch.float64]).abs().max()),
                            "float64_gradient_norm": norm}
        result[name] = rows
        print(f"{name}: {rows}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=200, help="fit length of the spacing check (default 200)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.iterations < 4 or args.threads < 1:
        parser.error("--iterations must be >= 4 and --threads >= 1")
    torch.set_num_threads(args.threads)
    report = {"finite_differences": {name: finite_differences(name, defence, (1e-6, 1e-7, 1e-8))
                                     for name, defence in tiny_defences().items()},
              "checkpoint_spacing_float32": spacing(args.iterations), "sensitivity": sensitivity((5, 20, 60))}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
