"""Test-time protocols for random defences: how a defence that draws new random numbers on every call answers.

A single draw overstates robustness (DiffBreak, Kassis et al., arXiv:2411.16598): an adversarial image that fools
the defence on one draw in three still counts as robust two times in three. Over ``N`` draws of the defence on the
same image, ``majority`` counts it correct when the true label wins the vote (more votes than every other label; a
tie counts as wrong) and ``worst`` only when every draw is correct. The draws are batched: ``G`` copies of the
images go through the deployed classifier in one ``predict`` call (so through the defence in one call), the
defence's per-sample draws making each copy a different draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from art_purifiers.checks import check_choice, check_integer
from art_purifiers.deploy import Defence
from art_purifiers.evaluation.names import PROTOCOLS


@dataclass(frozen=True)
class Draws:
    """Predicted labels of ``N`` draws of a random defence on ``n`` images.

    :param labels: int64 ``(N, n)``: draw ``j``'s label for image ``i``.
    :param seeds: The defence's seed in each call of ``draws_per_forward`` draws (``None``: fresh draws).
    :param draws_per_forward: Draws per call.
    """

    labels: np.ndarray
    seeds: tuple[int, ...] | None
    draws_per_forward: int


def draw_labels(defence: Defence, victim: nn.Module, x: np.ndarray, draws: int, draws_per_forward: int | None = None,
                batch_size: int = 128, device: str = "cpu") -> Draws:
    """``draws`` draws of ``defence`` deployed on ``victim``, for the images ``x`` ``(n, C, H, W)`` in ``[0, 1]``.

    Each call classifies ``draws_per_forward`` stacked copies of ``x`` (``None``: all ``draws``). With a seeded
    defence (seed ``s``), call ``g`` deploys it with seed ``s + g``, so the labels are reproducible for the same
    ``(s, draws, draws_per_forward, x)``; an unseeded defence draws afresh.
    """
    draws = check_integer("draws", draws, minimum=1)
    group = draws if draws_per_forward is None else min(check_integer("draws_per_forward", draws_per_forward,
                                                                       minimum=1), draws)
    base = getattr(defence, "seed", None) if "seed" in defence.settable() else None
    labels, seeds = [], []
    for call, start in enumerate(range(0, draws, group)):
        count = min(group, draws - start)
        seeded = defence if base is None else defence.configured(seed=base + call)
        seeds.append(None if base is None else base + call)
        classifier = seeded.deploy(victim).classifier(device=device)
        predicted = classifier.predict(np.concatenate([x] * count), batch_size=batch_size).argmax(1)
        labels.append(predicted.reshape(count, len(x)))
    return Draws(np.concatenate(labels).astype(np.int64), None if base is None else tuple(seeds), group)


def protocol_correct(labels: np.ndarray, y: np.ndarray, protocol: str) -> np.ndarray:
    """bool ``(n,)``: which images ``protocol`` counts as correctly classified.

    :param labels: int ``(N, n)``, draw ``j``'s label for image ``i``.
    :param y: int ``(n,)``, the true labels.
    :param protocol: ``"single"`` (the first draw), ``"majority"`` (the true label has more votes than every other
        label; a tie is wrong) or ``"worst"`` (every draw correct).
    """
    check_choice("protocol", protocol, PROTOCOLS)
    y = np.asarray(y)
    correct = labels == y[None, :]
    if protocol == "single":
        return correct[0]
    if protocol == "worst":
        return correct.all(axis=0)
    classes = int(max(labels.max(), np.max(y))) + 1
    votes = np.zeros((labels.shape[1], classes), dtype=np.int64)
    np.add.at(votes, (np.broadcast_to(np.arange(labels.shape[1]), labels.shape), labels), 1)
    true_votes = votes[np.arange(len(y)), y]
    votes[np.arange(len(y)), y] = -1  # the best of the other labels
    return true_votes > votes.max(axis=1)
