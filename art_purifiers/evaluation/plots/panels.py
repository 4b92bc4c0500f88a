"""What a defence does to images: clean, adversarial, both purified, and the perturbation before and after."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from art_purifiers.evaluation.plots._figure import finish, new_figure

#: Columns of :func:`plot_purification`.
PANEL_TITLES = ("clean", "adversarial", "purified clean", "purified adversarial", "perturbation",
                "left after purification")


def victim_predictions(victim: nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The victim's labels and their softmax confidences for ``images`` ``(n, C, H, W)`` in ``[0, 1]``."""
    parameter = next(victim.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    with torch.no_grad():
        probs = torch.softmax(victim(torch.as_tensor(images, dtype=torch.float32, device=device)).float(), dim=1)
    confidence, labels = probs.max(dim=1)
    return labels.cpu().numpy(), confidence.cpu().numpy()


def purify(defence, images: np.ndarray) -> np.ndarray:
    """``defence`` (an art_purifiers preprocessor, or any ART preprocessor) applied to ``(n, C, H, W)`` images."""
    with torch.no_grad():
        out = defence.forward(torch.as_tensor(images, dtype=torch.float32))[0]
    return out.detach().cpu().numpy()


def _amplified(difference: np.ndarray, gain: float) -> np.ndarray:
    """A signed difference ``(C, H, W)`` as an image: 0.5 grey is no change, ``gain`` times the difference."""
    return np.clip(0.5 + gain * difference, 0, 1).transpose(1, 2, 0)


def plot_purification(victim: nn.Module, defence, x: np.ndarray, x_adv: np.ndarray, y: np.ndarray | None = None,
                      class_names: Sequence[str] | None = None, gain: float | None = None,
                      path: str | Path | None = None, title: str | None = None):
    """A grid, one row per image: clean, adversarial, purified clean, purified adversarial, the perturbation
    (adversarial - clean) and what is left of it after purification (purified adversarial - purified clean).

    Under every image: the victim's label and softmax confidence (green when it equals ``y``, red otherwise).
    Differences are shown as ``0.5 + gain * difference`` (grey is no change), with the same gain in both
    columns so that they compare; under each, its L-inf norm in units of 1/255.

    :param victim: Torch classifier of ``[0, 1]`` images returning logits.
    :param defence: The purifier (its ``forward`` is applied without gradients).
    :param x: Clean images ``(n, C, H, W)``, float, in ``[0, 1]``; a few (each is a row).
    :param x_adv: Adversarial images, same shape.
    :param y: True labels ``(n,)`` (colours the captions; default: the victim's labels of ``x``).
    :param class_names: Names of the classes (default: class numbers).
    :param gain: Amplification of the differences (default: the one that maps the largest perturbation to
        the full range).
    :param path: Where to write the figure; None returns the open figure.
    """
    if x.shape != x_adv.shape or x.ndim != 4:
        raise ValueError(f"x and x_adv must be (n, C, H, W) of one shape, got {x.shape} and {x_adv.shape}.")
    panels = [x, x_adv, purify(defence, x), purify(defence, x_adv)]
    predictions = [victim_predictions(victim, images) for images in panels]
    y = predictions[0][0] if y is None else np.asarray(y)
    perturbation, left = x_adv - x, panels[3] - panels[2]
    gain = gain or 0.5 / max(float(np.abs(perturbation).max()), 1e-6)
    figure = new_figure(path, 1.45 * len(PANEL_TITLES), 1.6 * len(x) + 0.5)
    axes = figure.subplots(len(x), len(PANEL_TITLES), squeeze=False)
    for i, row in enumerate(axes):
        for j, images in enumerate(panels):
            label, confidence = predictions[j][0][i], predictions[j][1][i]
            name = class_names[label] if class_names is not None else str(label)
            _show(row[j], images[i].transpose(1, 2, 0), f"{name} {100 * confidence:.0f}%",
                  "green" if label == y[i] else "red")
        for j, difference in ((4, perturbation[i]), (5, left[i])):
            _show(row[j], _amplified(difference, gain), f"Linf {255 * np.abs(difference).max():.1f}/255", "black")
    for j, name in enumerate(PANEL_TITLES):
        axes[0][j].set_title(name + (f" (x{gain:.0f})" if j >= 4 else ""), fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return finish(figure, path)


def _show(axis, image: np.ndarray, caption: str, colour: str) -> None:
    axis.imshow(np.clip(image, 0, 1), interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_xlabel(caption, fontsize=7, color=colour, labelpad=2)
