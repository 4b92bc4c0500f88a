"""ART's own input-transformation defences as art-purifiers defences, so that they are compared with ours under
the same threat models (the IDFR paper's JPEG, TVM and feature-squeezing baselines).

Wrapping one in :class:`ARTPreprocessor` makes it a ``PreprocessorPyTorch`` with our input checks, chunking,
seeding and gradient modes: it chains with our defences on ART's PyTorch path (ART refuses a chain that mixes
numpy-only and PyTorch preprocessors), and the numpy-only ones are attacked with BPDA.
"""

from __future__ import annotations

import contextlib
import inspect

import numpy as np
import torch
from art.defences import preprocessor as art_preprocessors
from art.defences.preprocessor.preprocessor import Preprocessor, PreprocessorPyTorch

from art_purifiers.base import PurifierPreprocessor
from art_purifiers.specs import ART_DEFENCES


class ARTPreprocessor(PurifierPreprocessor):
    """One of ART's image preprocessors (:data:`~art_purifiers.specs.ART_DEFENCES`) as an art-purifiers defence.

    PyTorch preprocessors (``SpatialSmoothingPyTorch``) are differentiable: ``gradient="exact"`` back-propagates
    through them. Numpy preprocessors (JPEG, feature squeezing, TVM, numpy spatial smoothing) are attacked with BPDA
    only. ``TotalVarMin`` draws its pixel mask from numpy's global generator; it is seeded from the defence's
    generator for the call and restored afterwards, so ``seed`` works as for every other defence.

    :param preprocessor: The ART class name, e.g. ``"JpegCompression"``.
    :param gradient: ``"exact"`` (PyTorch preprocessors only) or ``"bpda"``; default: ``"exact"`` where possible.
    :param options: The ART class's own arguments, e.g. ``quality=75``; ``clip_values`` and ``channels_first``
        are set from this defence.
    :param kwargs: Shared options of :class:`~art_purifiers.base.PurifierPreprocessor` (``batch_size``, ``seed``,
        ``clip_values``, ``device_type``, ...).
    """

    params = PurifierPreprocessor.params + ["preprocessor", "options"]

    def __init__(self, preprocessor: str, gradient: str | None = None, options: dict | None = None,
                 **kwargs) -> None:
        if preprocessor not in ART_DEFENCES:
            raise ValueError(f"ART preprocessor must be one of {sorted(ART_DEFENCES)}, got {preprocessor!r}.")
        cls = getattr(art_preprocessors, preprocessor)
        self.preprocessor, self.options = preprocessor, dict(options or {})
        self.randomized = ART_DEFENCES[preprocessor].randomized
        self.differentiable = issubclass(cls, PreprocessorPyTorch)
        default = "exact" if self.differentiable else "bpda"
        super().__init__(gradient=gradient or default, **kwargs)
        self.art_defence = self._build(cls)
        self._check_params()

    def _rebuild(self, changed: set[str]) -> None:
        """A new ``preprocessor``, ``options`` or ``clip_values`` builds ART's object afresh."""
        super()._rebuild(changed)
        if changed & {"preprocessor", "options", "clip_values"}:
            if self.preprocessor not in ART_DEFENCES:
                raise ValueError(f"ART preprocessor must be one of {sorted(ART_DEFENCES)}, got {self.preprocessor!r}.")
            cls = getattr(art_preprocessors, self.preprocessor)
            self.options = dict(self.options or {})
            self.randomized = ART_DEFENCES[self.preprocessor].randomized
            self.differentiable = issubclass(cls, PreprocessorPyTorch)
            self.clip_values = self._checked_clip_values(self.clip_values)
            self.art_defence = self._build(cls)

    def _build(self, cls: type[Preprocessor]) -> Preprocessor:
        accepted = inspect.signature(cls.__init__).parameters
        managed = {"clip_values", "channels_first", "apply_fit", "apply_predict", "device_type"}
        unknown = sorted(set(self.options) - set(accepted) | set(self.options) & managed)
        if unknown:
            free = sorted(set(accepted) - managed - {"self"})
            raise ValueError(f"Unknown or managed option(s) {unknown} for ART's {cls.__name__}; its options: {free}.")
        # ART's PyTorch preprocessors follow their input's device in forward (the only method called here), so
        # "cpu" costs nothing and spares the CUDA context that "gpu" would create when the object is built.
        extra = {"clip_values": tuple(self.clip_values), "channels_first": True, "apply_fit": False,
                 "apply_predict": True, "device_type": "cpu"}
        return cls(**self.options, **{k: v for k, v in extra.items() if k in accepted})

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if isinstance(self.art_defence, PreprocessorPyTorch):
            return self.art_defence.forward(x)[0]
        images = x.detach().cpu().numpy()
        channels_last = ART_DEFENCES[self.preprocessor].layout == "last"
        if channels_last:
            images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
        with _numpy_global_seed(generator) if self.randomized else contextlib.nullcontext():
            out = self.art_defence(images)[0]
        if channels_last:
            out = out.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)


@contextlib.contextmanager
def _numpy_global_seed(generator: torch.Generator):
    """Seed numpy's global generator from ``generator`` for ART code that draws from it; restore it afterwards."""
    state = np.random.get_state()  # noqa: NPY002 (ART draws from the legacy global generator)
    np.random.seed(int(torch.randint(2**32, (), generator=generator, device="cpu")))  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002
