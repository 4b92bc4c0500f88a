"""Naive image resampling defences (IRAD paper, Sec. 3.2 and Table 1)."""

from __future__ import annotations

import torch

from art_purifiers.base import PurifierPreprocessor
from art_purifiers.checks import check_choice, check_number
from art_purifiers.nn.resampling import INTERPOLATIONS, PADDING_MODES, SAMPLERS, naive_shifts, shift_resample


class ResamplingPreprocessor(PurifierPreprocessor):
    """Resample the image at shifted pixel coordinates with bilinear or nearest interpolation.

    ``sampler="invariant"`` (spatially invariant, Eq. 7) shifts every pixel by ``(d, d)`` with
    ``d = magnitude``; ``sampler="variant"`` (spatially variant, Eq. 8) draws each pixel's row and column
    shifts independently from ``U(0, gamma)`` with ``gamma = magnitude``, afresh for every image and call
    unless ``seed`` is set. Shifts are in pixels. The operation is differentiable, so both gradient modes
    apply; the variant sampler is random and must be attacked with EOT.

    | Paper link: https://arxiv.org/abs/2310.11890 (IRAD, Cao et al., ICLR 2024)

    :param interpolation: ``"bilinear"`` or ``"nearest"`` reconstruction.
    :param sampler: ``"invariant"`` (fixed shift ``d``) or ``"variant"`` (random shift in ``[0, gamma]^2``).
    :param magnitude: ``d`` or ``gamma`` in pixels, ``>= 0``.
    :param padding_mode: ``"border"`` (default) or ``"zeros"`` for coordinates outside the image.
    :param kwargs: Shared options of :class:`~art_purifiers.base.PurifierPreprocessor` (``gradient``,
        ``seed``, ``batch_size``, ``clip_values``, ``device_type``, ...).
    """

    params = PurifierPreprocessor.params + ["interpolation", "sampler", "magnitude", "padding_mode"]

    def __init__(
        self,
        interpolation: str = "bilinear",
        sampler: str = "invariant",
        magnitude: float = 1.5,
        padding_mode: str = "border",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.interpolation = interpolation
        self.sampler = sampler
        self.magnitude = magnitude
        self.padding_mode = padding_mode
        self._check_params()

    @property
    def randomized(self) -> bool:  # type: ignore[override]
        return self.sampler == "variant"

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        shifts = naive_shifts(self.sampler, self.magnitude, n, h, w, generator).to(x.device)
        return shift_resample(x, shifts, self.interpolation, self.padding_mode)

    def _check_params(self) -> None:
        super()._check_params()
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        check_choice("sampler", self.sampler, SAMPLERS)
        self.magnitude = check_number("magnitude (pixels)", self.magnitude, minimum=0)
        check_choice("padding_mode", self.padding_mode, PADDING_MODES)
