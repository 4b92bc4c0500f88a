"""Expectation over transformation (EOT) for defences with randomness inside.

ART 1.20 has no EOT for randomness *inside* a defence, and its ``EoT*PyTorch`` preprocessors multiply the
batch, which breaks AutoAttack, APGD and HopSkipJump. :class:`EOTClassifier` instead puts the expectation
inside the model: every input is purified ``draws`` times, the victim's logits are averaged, and ART sees an
ordinary classifier whose gradients (Athalye et al. 2018) and decisions are averages over draws.
"""

from __future__ import annotations

import torch
from torch import nn

from art_purifiers.base import PurifierPreprocessor


class EOTClassifier(nn.Module):
    """``logits(x) = mean_k victim(defence(x; draw k))`` for ``x`` of shape ``(N, C, H, W)`` in ``[0, 1]``.

    :param victim: Classifier taking purified images in ``[0, 1]``, returning ``(M, classes)`` logits.
    :param defence: The (random) defence; its ``gradient`` mode decides how gradients pass through it.
        Leave its ``seed`` as ``None`` so that every call draws afresh.
    :param draws: Number of draws averaged, ``>= 1``.
    """

    def __init__(self, victim: nn.Module, defence: PurifierPreprocessor, draws: int = 8) -> None:
        super().__init__()
        if not isinstance(draws, int) or draws < 1:
            raise ValueError(f"draws must be a positive integer, got {draws!r}.")
        self.victim = victim
        self.defence = defence
        self.draws = draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        # The defence draws its random numbers per sample, so the repeated copies get independent draws.
        purified, _ = self.defence.forward(x.repeat_interleave(self.draws, dim=0))
        return self.victim(purified).view(n, self.draws, -1).mean(dim=1)
