"""The defences that the ART contract suite (``test_contract.py``) checks.

A new defence joins the suite by adding one :class:`ContractCase` here: a factory taking ``gradient`` (and
keyword overrides), and the gradient modes it supports. Factories must be cheap (tiny presets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from art_purifiers import ResamplingPreprocessor
from art_purifiers.base import PurifierPreprocessor


class ConvPurifier(PurifierPreprocessor):
    """Test double: a frozen residual convolution, so the contract also covers defences holding networks."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        torch.manual_seed(0)
        conv = nn.Conv2d(3, 3, 3, padding=1)
        nn.init.normal_(conv.weight, std=0.05)
        self.register_network("denoiser", conv)
        self._check_params()

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x + 0.1 * torch.tanh(self.denoiser(x))


@dataclass(frozen=True)
class ContractCase:
    name: str
    factory: Callable[..., PurifierPreprocessor]
    gradients: tuple[str, ...] = ("exact", "bpda")


CASES = [
    ContractCase("resampling-bilinear-invariant", lambda **kw: ResamplingPreprocessor("bilinear", "invariant", **kw)),
    ContractCase("resampling-nearest-invariant", lambda **kw: ResamplingPreprocessor("nearest", "invariant", **kw)),
    ContractCase("resampling-bilinear-variant", lambda **kw: ResamplingPreprocessor("bilinear", "variant", **kw)),
    ContractCase("resampling-nearest-variant", lambda **kw: ResamplingPreprocessor("nearest", "variant", **kw)),
    ContractCase("conv-purifier-test-double", ConvPurifier),
]

#: (case, gradient mode) pairs, with readable ids, for ``pytest.mark.parametrize``.
CASE_MODES = [(case, mode) for case in CASES for mode in case.gradients]
CASE_MODE_IDS = [f"{case.name}-{mode}" for case, mode in CASE_MODES]
