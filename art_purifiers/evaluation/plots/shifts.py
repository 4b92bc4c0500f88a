"""IRAD's sampling: SampleNet's per-pixel shift field over an image, beside the naive samplers' shifts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from art_purifiers.checks import check_integer, check_number
from art_purifiers.evaluation.plots._figure import finish, new_figure
from art_purifiers.nn.resampling import naive_shifts


def irad_shift_fields(defence, image: np.ndarray, magnitude: float = 1.5, seed: int = 0) -> dict[str, np.ndarray]:
    """The shifts, in pixels ``(H, W, 2)`` as (row, column), with which each sampler resamples ``image``.

    :param defence: An :class:`~art_purifiers.defences.irad.IRADPreprocessor` (its networks are used as they
        are, whatever its ``sampler``); SampleNet's field is left out if its weights hold none.
    :param image: One image ``(C, H, W)`` in ``[0, 1]``.
    :param magnitude: ``d`` of the invariant sampler and ``gamma`` of the variant one, in pixels.
    :param seed: Seed of the variant sampler's draw.
    :return: ``{"SampleNet": ..., "invariant d=...": ..., "variant gamma=...": ...}``, float32 arrays.
    """
    magnitude = check_number("magnitude", magnitude, 0)
    seed = check_integer("seed", seed, 0)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}.")
    _, h, w = image.shape
    fields: dict[str, np.ndarray] = {}
    samplenet = getattr(defence, "samplenet", None)
    if samplenet is not None:
        parameter = next(samplenet.parameters())
        x = torch.as_tensor(image[None], dtype=torch.float32, device=parameter.device)
        with torch.no_grad():
            shifts = samplenet(defence.representation.encode(x), h, w)
        fields["SampleNet"] = shifts[0].cpu().numpy()
    generator = torch.Generator().manual_seed(seed)
    invariant = naive_shifts("invariant", magnitude, 1, h, w, generator).expand(1, h, w, 2)
    fields[f"invariant d={magnitude:g}"] = invariant[0].numpy().copy()
    fields[f"variant gamma={magnitude:g}"] = naive_shifts("variant", magnitude, 1, h, w, generator)[0].numpy()
    return fields


def plot_shift_fields(image: np.ndarray, fields: dict[str, np.ndarray], path: str | Path | None = None,
                      step: int = 2, title: str | None = None):
    """Top row: the image, then each shift field as arrows over the faded image (every ``step``-th pixel,
    drawn to scale: an arrow is the shift, from the output pixel to where it reads the image). Bottom row:
    each field's length ``|shift|`` colour-coded, on one colour scale.

    :param image: ``(C, H, W)`` in ``[0, 1]``.
    :param fields: ``{name: shifts (H, W, 2)}`` in pixels, (row, column) (see :func:`irad_shift_fields`).
    :param step: Arrows on every ``step``-th row and column.
    :param path: Where to write the figure; None returns the open figure.
    """
    step = check_integer("step", step, 1)
    if not fields:
        raise ValueError("No shift field to plot.")
    h, w = image.shape[1:]
    for name, field in fields.items():
        if field.shape != (h, w, 2):
            raise ValueError(f"Field {name!r} must have shape {(h, w, 2)}, got {field.shape}.")
    lengths = {name: np.hypot(field[..., 0], field[..., 1]) for name, field in fields.items()}
    top = max(float(max(length.max() for length in lengths.values())), 1e-6)
    figure = new_figure(path, 2.3 * (len(fields) + 1), 4.9)
    axes = figure.subplots(2, len(fields) + 1, squeeze=False)
    picture = np.clip(image.transpose(1, 2, 0), 0, 1)
    axes[0][0].imshow(picture, interpolation="nearest")
    axes[0][0].set_title("image", fontsize=8)
    axes[1][0].axis("off")
    rows, cols = np.mgrid[0:h:step, 0:w:step]
    for j, (name, field) in enumerate(fields.items(), start=1):
        axis = axes[0][j]
        axis.imshow(0.35 + 0.3 * picture, interpolation="nearest")
        sub = field[::step, ::step]
        # U is the column shift, V the row shift; angles="xy" follows the image's downward row axis.
        axis.quiver(cols, rows, sub[..., 1], sub[..., 0], lengths[name][::step, ::step], angles="xy",
                    scale_units="xy", scale=1, cmap="viridis", clim=(0, top), width=0.006)
        axis.set_title(f"{name}\nmean |shift| {lengths[name].mean():.2f} px", fontsize=8)
        shown = axes[1][j].imshow(lengths[name], cmap="viridis", vmin=0, vmax=top, interpolation="nearest")
        axes[1][j].set_title(f"|shift| (px), {name}", fontsize=7)
    figure.colorbar(shown, ax=axes[1].tolist(), shrink=0.8, label="|shift| (pixels)")
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=10)
    return finish(figure, path)
