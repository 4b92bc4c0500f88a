"""The DIP defence's batched reconstruction and the batched input jitter give the numbers of the per-image code
they replaced, to the bit on the CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from defences_under_contract import TINY_DIP, dip_victim
from torch import nn

from art_purifiers.defences.dip import DIPPreprocessor
from art_purifiers.nn import dip as dip_module
from art_purifiers.nn.dip_gradient import differentiable_dip_snapshots


def per_image_reconstruct(defence: DIPPreprocessor, x, snaps, iterations, decisions, boundary):
    """The reconstruction as it was before batching (one image, one pair at a time), kept as the reference."""
    labels = decisions.probs.argmax(-1)
    iterations = torch.as_tensor(np.asarray(iterations))
    outputs = []
    for i in range(len(x)):
        good = decisions.quality[:, i] > defence.ssim_threshold
        lab = labels[:, i]
        crossing = (lab[1:] != lab[:-1]) & good[1:] & good[:-1] & (iterations[:-1] > defence.warmup)
        pairs = torch.nonzero(crossing).flatten()[-defence.keep :].tolist()
        if not pairs:
            kept = snaps[-defence.keep :, i]
        else:
            keys = [(i, int(iterations[p]), int(iterations[p + 1])) for p in pairs]
            for p, key in zip(pairs, keys, strict=True):
                if key not in boundary:
                    a, b = snaps[p, i], snaps[p + 1, i]
                    alphas = torch.linspace(0, 1, defence.grid + 1).view(-1, 1, 1, 1)
                    line = alphas * a + (1 - alphas) * b
                    line_probs = defence._probabilities(line)
                    gap = (line_probs[:, int(lab[p])] - line_probs[:, int(lab[p + 1])]).abs()
                    boundary[key] = line[int(gap.argmin())]
            kept = torch.stack([boundary[key] for key in keys])
        kept_labels = defence._probabilities(kept).argmax(-1)
        step = torch.where(kept_labels == int(decisions.input_labels[i]), defence.step, 0.0).view(-1, 1, 1, 1)
        outputs.append((kept + step * (kept - x[i])).clamp(0, 1).mean(0))
    return torch.stack(outputs)


def pair_counts(defence: DIPPreprocessor, decisions, iterations) -> list[int]:
    """Cross-boundary pairs of each image before the ``keep`` limit."""
    labels = decisions.probs.argmax(-1)
    good = decisions.quality > defence.ssim_threshold
    late = torch.as_tensor(np.asarray(iterations))[:-1, None] > defence.warmup
    return ((labels[1:] != labels[:-1]) & good[1:] & good[:-1] & late).sum(0).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("keep", "grid", "ssim_threshold", "warmup"),
                         [(5, 100, 0.7, 700), (2, 8, 0.5, 0), (3, 5, 0.2, 3), (1, 4, -1, 0)])
def test_batched_reconstruction_is_the_per_image_one(seed, keep, grid, ssim_threshold, warmup, one_thread):
    # Random decisions over random snapshots: every branch (no pair, fewer pairs than keep, more, SSIM-gated and
    # warm-up-gated crossings) occurs among the 16 images; the victim decides the on-boundary searches.
    gen = torch.Generator().manual_seed(seed)
    n, s = 16, 20
    iterations = np.linspace(100, 1500, s).round().astype(int)
    defence = DIPPreprocessor(dip_victim(), "small", keep=keep, grid=grid, ssim_threshold=ssim_threshold,
                              warmup=min(warmup, 1499), device_type="cpu")
    x = torch.rand(n, 3, 32, 32, generator=gen)
    snaps = (x + 0.3 * torch.randn(s, n, 3, 32, 32, generator=gen)).clamp(0, 1)
    decisions = defence.decide(x, snaps)
    # Image i's label changes at i random snapshots (0 for image 0, 15 for the last), before the gates.
    changes = torch.rand(s - 1, n, generator=gen).argsort(0) < torch.arange(n)
    labels = torch.cat([torch.zeros(1, n, dtype=torch.long), changes.long().cumsum(0) % 3])
    decisions = decisions._replace(probs=F.one_hot(labels, 10).float() + 0.1 * decisions.probs,
                                   quality=torch.where(torch.rand(s, n, generator=gen) < 0.1, -0.5, 0.95))
    counts = pair_counts(defence, decisions, iterations)
    assert 0 in counts and any(0 < c <= keep for c in counts) and max(counts) > keep
    expected_boundary, boundary = {}, {}
    expected = per_image_reconstruct(defence, x, snaps, iterations, decisions, expected_boundary)
    got = defence.reconstruct(x, snaps, iterations, decisions, boundary)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert boundary.keys() == expected_boundary.keys() and len(boundary) > 0
    for key, image in expected_boundary.items():
        torch.testing.assert_close(boundary[key], image, atol=0, rtol=0)
    # A filled dictionary is reused, not searched again: the result is the same.
    torch.testing.assert_close(defence.reconstruct(x, snaps, iterations, decisions, boundary), expected,
                               atol=0, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("jitter", [0.0, 0.05])
def test_batched_reconstruction_of_real_traces(seed, jitter, one_thread):
    # The defence's own decisions on fitted traces, with and without the SSIM gate and the warm-up.
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    seeds = [seed * 10 + i for i in range(6)]
    for settings in ({"warmup": 0, "ssim_threshold": -1, "keep": 2}, {"warmup": 6, "ssim_threshold": 0.3, "keep": 3}):
        defence = DIPPreprocessor(dip_victim(), TINY_DIP, iterations=16, snapshots=8, grid=6, input_jitter=jitter,
                                  device_type="cpu", **settings)
        iterations = defence.snapshot_iterations().astype(int)
        snaps = defence.trace(x, seeds, iterations)
        decisions = defence.decide(x, snaps)
        expected = per_image_reconstruct(defence, x, snaps, iterations, decisions, {})
        torch.testing.assert_close(defence.purify_with_seeds(x, seeds), expected, atol=0, rtol=0)


class CountingVictim(nn.Module):
    """``dip_victim`` counting its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.victim, self.calls = dip_victim(), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.victim(x)


def test_victim_calls_do_not_grow_with_the_batch():
    # Every image here has two crossings (labels alternate), so the per-image code made 2 searches and one
    # kept-label call per image; the batched code makes one call for all searches and one for all kept images.
    calls = []
    for n in (2, 8):
        victim = CountingVictim()
        defence = DIPPreprocessor(victim, "small", keep=2, grid=8, ssim_threshold=-1, warmup=0, device_type="cpu")
        defence.CPU_VICTIM_IMAGES = 1024  # calls as off the CPU, where the chunks are 256 images or more
        x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        snaps = x.expand(4, -1, -1, -1, -1)
        decisions = defence.decide(x, snaps)
        labels = torch.tensor([0, 1, 0, 1]).view(-1, 1).expand(4, n)
        decisions = decisions._replace(probs=F.one_hot(labels, 10).float())
        victim.calls = 0
        defence.reconstruct(x, snaps, np.array([1, 2, 3, 4]), decisions)
        calls.append(victim.calls)
    assert calls == [2, 2]


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 4, 4), (3, 17, 17), (1, 3, 5)], ids=str)
@pytest.mark.parametrize("budget", [1, 3 * 768 * 4 * 3, 1 << 30], ids=["one", "three", "all"])
def test_jitter_blocks_draw_the_per_iteration_numbers(shape, budget, monkeypatch):
    # Sizes that are multiples of 16 are drawn in blocks (of 1, 3 with a remainder, or all iterations), the others
    # one iteration at a time; either way the numbers and the generators' final states are those of one randn per
    # generator and iteration.
    monkeypatch.setattr(dip_module, "_JITTER_BYTES", budget)
    seeds, iterations = [4, 5, 6], 11
    jitter = dip_module._Jitter([torch.Generator().manual_seed(s) for s in seeds], shape, torch.device("cpu"),
                                iterations)
    drawn = torch.stack([jitter.next() for _ in range(iterations)])
    reference = [torch.Generator().manual_seed(s) for s in seeds]
    expected = torch.stack([torch.stack([torch.randn(shape, generator=g) for g in reference])
                            for _ in range(iterations)])
    torch.testing.assert_close(drawn, expected, atol=0, rtol=0)
    for mine, theirs in zip(jitter.generators, reference, strict=True):
        assert torch.equal(mine.get_state(), theirs.get_state())
    assert jitter.block == (1 if math.prod(shape) % 16 else max(1, budget // (3 * math.prod(shape) * 4)))


def test_dip_trace_draws_the_jitter_in_blocks(monkeypatch):
    # One randn per generator and block, not per iteration (20 iterations at 16x16 fit one block).
    calls = []
    randn = torch.randn

    def counting(*args, **kwargs):
        calls.append(args)
        return randn(*args, **kwargs)

    monkeypatch.setattr(torch, "randn", counting)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    dip_module.dip_trace(x, TINY_DIP, 20, [torch.Generator().manual_seed(s) for s in (1, 2)], input_jitter=0.05)
    assert len(calls) == 2


@pytest.mark.parametrize("side", [16, 17], ids=["blocks", "one-at-a-time"])
def test_dip_trace_with_jitter_blocks_is_the_per_iteration_trace(side, monkeypatch, one_thread):
    # differentiable_dip_trace draws the jitter one iteration at a time; dip_trace, in blocks of 3 iterations (with a
    # remainder) at 16x16, and one at a time at 17x17 (867 values per image): the traces are the same to the bit.
    monkeypatch.setattr(dip_module, "_JITTER_BYTES", 2 * 3 * side * side * 4 * 3)
    x = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    iterations = [3, 7, 10]
    expected = differentiable_dip_snapshots(x, TINY_DIP, iterations, [torch.Generator().manual_seed(s) for s in (8, 9)],
                                            input_jitter=0.05)
    got = dip_module.dip_snapshots(x, TINY_DIP, iterations, [torch.Generator().manual_seed(s) for s in (8, 9)],
                                   input_jitter=0.05)
    torch.testing.assert_close(got, expected.detach(), atol=0, rtol=0)


class ChunkRecordingVictim(nn.Module):
    """``dip_victim`` recording the size of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.victim, self.sizes = dip_victim(), []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return self.victim(x)


@pytest.mark.parametrize(("m", "sizes"), [(1, [1]), (2, [2]), (32, [32]), (33, [33]), (64, [32, 32]),
                                          (65, [32, 33]), (70, [32, 32, 6]), (257, [32] * 7 + [33])])
def test_cpu_victim_chunks_never_split_off_a_lone_image(m, sizes):
    # Chunks of CPU_VICTIM_IMAGES = 32 on the CPU, a remainder of one joining the chunk before it: a victim may round
    # a lone image's logits differently (ResNet-20 does), so an image is alone only in a call of one image.
    victim = ChunkRecordingVictim()
    defence = DIPPreprocessor(victim, device_type="cpu")
    images = torch.rand(m, 3, 8, 8, generator=torch.Generator().manual_seed(m))
    probs = defence._probabilities(images)
    assert victim.sizes == sizes
    torch.testing.assert_close(probs, F.softmax(dip_victim()(images), 1) if m > 1 else probs)


class PredictingVictim:
    """An ART-style victim (``predict`` on numpy arrays) recording the size of every call."""

    def __init__(self) -> None:
        self.sizes = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.sizes.append(len(x))
        return np.zeros((len(x), 10), dtype=np.float32)


@pytest.mark.parametrize(("batch_size", "m", "sizes"), [(64, 300, [256, 44]), (64, 257, [257]),
                                                        (512, 600, [512, 88])])
def test_other_victims_take_chunks_of_the_batch_size_or_256(batch_size, m, sizes):
    victim = PredictingVictim()
    defence = DIPPreprocessor(victim, batch_size=batch_size, device_type="cpu")
    defence._probabilities(torch.zeros(m, 3, 8, 8))
    assert victim.sizes == sizes
