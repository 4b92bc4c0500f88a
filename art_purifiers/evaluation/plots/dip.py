"""The DIP defence's trace of an image: how close each snapshot is to the input, what the victim says of it,
where the trace crosses a decision boundary and which snapshots the defence keeps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from art_purifiers.checks import check_integer
from art_purifiers.evaluation.plots._figure import finish, new_figure
from art_purifiers.nn.metrics import psnr


@dataclass
class DIPTrace:
    """One image's DIP trace as :class:`~art_purifiers.defences.dip.DIPPreprocessor` sees it, ``S`` snapshots."""

    iterations: np.ndarray  #: (S,) iteration (1-based) of each snapshot
    psnr: np.ndarray  #: (S,) PSNR of each snapshot to the input, dB
    labels: np.ndarray  #: (S,) the victim's label of each snapshot
    confidence: np.ndarray  #: (S,) the victim's softmax probability of that label
    crossings: np.ndarray  #: indices p of every cross-boundary pair (p, p + 1) the defence may use
    chosen: np.ndarray  #: indices of the snapshots the defence keeps (the later one of each kept pair)
    input_label: int  #: the victim's label of the input
    warmup: int  #: pairs start after this iteration


def dip_traces(defence, images: dict[str, np.ndarray], seed: int = 0) -> dict[str, DIPTrace]:
    """Fit ``defence``'s DIP to each image (same network and noise for all: ``seed``) and read the traces.

    Pairs and kept snapshots follow the defence's rule (:meth:`~art_purifiers.defences.dip.DIPPreprocessor
    .reconstruct`): adjacent snapshots with different labels, past ``warmup``, both with SSIM to the input above
    ``ssim_threshold``; the last ``keep`` pairs, or the last ``keep`` snapshots when there is none. Costs one
    fit of ``defence.iterations`` steps for the batch of images: keep it short on a CPU.

    :param defence: A :class:`~art_purifiers.defences.dip.DIPPreprocessor`.
    :param images: ``{name: image (C, H, W) in [0, 1]}``, e.g. a clean image and its adversarial example.
    """
    seed = check_integer("seed", seed, 0)
    if not images:
        raise ValueError("No image to trace.")
    x = torch.as_tensor(np.stack(list(images.values())), dtype=torch.float32)
    iterations = defence.snapshot_iterations().astype(int)
    snaps = defence.trace(x, [seed] * len(x), iterations)
    decisions = defence.decide(x, snaps)
    confidence, labels = decisions.probs.max(-1)
    fidelity = psnr(snaps, x.unsqueeze(0))
    traces = {}
    for i, name in enumerate(images):
        traces[name] = _read_trace(defence, iterations, fidelity[:, i], labels[:, i], confidence[:, i],
                                   decisions.quality[:, i], int(decisions.input_labels[i]))
    return traces


def _read_trace(defence, iterations: np.ndarray, fidelity: torch.Tensor, labels: torch.Tensor,
                confidence: torch.Tensor, quality: torch.Tensor, input_label: int) -> DIPTrace:
    """One image's trace, with the pairs found as the defence finds them."""
    good = (quality > defence.ssim_threshold).cpu().numpy()
    labels_np = labels.cpu().numpy()
    crossing = (labels_np[1:] != labels_np[:-1]) & good[1:] & good[:-1] & (iterations[:-1] > defence.warmup)
    crossings = np.flatnonzero(crossing)
    if len(crossings):
        chosen = crossings[-defence.keep:] + 1
    else:
        chosen = np.arange(len(iterations))[-defence.keep:]
    return DIPTrace(iterations, fidelity.cpu().numpy(), labels_np, confidence.cpu().numpy(), crossings, chosen,
                    input_label, int(defence.warmup))


def plot_dip_trace(traces: dict[str, DIPTrace], class_names: Sequence[str] | None = None,
                   path: str | Path | None = None, title: str | None = None):
    """Top: PSNR of each snapshot to its input along the iterations, one line per trace, cross-boundary pairs
    marked x and kept snapshots marked with a star. Bottom: the victim's label of each snapshot (dashed: the
    label of the input). The shaded band is the warm-up, where no pair is used.

    :param traces: ``{name: trace}``, e.g. ``{"clean": ..., "adversarial": ...}`` (:func:`dip_traces`).
    :param class_names: Names of the classes (default: class numbers).
    :param path: Where to write the figure; None returns the open figure.
    """
    if not traces:
        raise ValueError("No trace to plot.")
    figure = new_figure(path, 8, 5.5)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    used = sorted({int(c) for t in traces.values() for c in (*t.labels, t.input_label)})
    for k, (name, trace) in enumerate(traces.items()):
        colour = f"C{k}"
        its = trace.iterations
        top.plot(its, trace.psnr, color=colour, label=name, linewidth=1.2)
        top.scatter(its[trace.crossings], trace.psnr[trace.crossings], marker="x", color=colour, s=30,
                    label=f"{name}: cross-boundary pair")
        top.scatter(its[trace.chosen], trace.psnr[trace.chosen], marker="*", color=colour, s=90,
                    edgecolors="black", linewidths=0.5, label=f"{name}: kept", zorder=3)
        # Offset the label lines a little so that identical labels of two traces stay visible.
        level = np.array([used.index(int(c)) for c in trace.labels]) + 0.08 * k
        bottom.step(its, level, where="post", color=colour, label=name)
        bottom.axhline(used.index(trace.input_label) + 0.08 * k, color=colour, linestyle="--", linewidth=0.8)
    warmup = next(iter(traces.values())).warmup
    for axis in (top, bottom):
        axis.axvspan(0, warmup, color="grey", alpha=0.12, linewidth=0)
        axis.grid(alpha=0.3)
    top.set_ylabel("PSNR to the input (dB)")
    top.legend(fontsize=6, ncol=2)
    bottom.set_yticks(range(len(used)), [class_names[c] if class_names else str(c) for c in used], fontsize=7)
    bottom.set_ylabel("victim's label")
    bottom.set_xlabel("DIP iteration (shaded: warm-up)")
    if title:
        top.set_title(title, fontsize=9)
    return finish(figure, path)
