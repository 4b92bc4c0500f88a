"""The benchmark helpers: timing, multiply-accumulate counts and peak memory."""

from __future__ import annotations

import pytest
import torch
from defences_under_contract import ConvPurifier

from art_purifiers import ResamplingPreprocessor
from art_purifiers.deploy import Deployment
from art_purifiers.evaluation.benchmark import (
    machine,
    matmul_flops_per_second,
    multiply_accumulates,
    peak_memory_bytes,
    repeated_sample,
    time_deployment,
    time_purifier,
)


def test_time_purifier_counts_every_image():
    x = torch.rand(8, 3, 16, 16)
    defence = ResamplingPreprocessor(batch_size=32)
    timing = time_purifier(defence, x, batch_size=4, repeats=2)
    assert defence.batch_size == 32  # the defence's own chunking is restored
    assert (timing.images, timing.batch_size, timing.device) == (8, 4, "cpu")
    assert timing.seconds > 0
    assert abs(timing.images_per_second * timing.seconds_per_image - 1) < 1e-9
    assert timing.to_dict()["images_per_second"] == timing.images_per_second


def test_time_purifier_needs_whole_batches():
    with pytest.raises(ValueError, match="multiple of batch_size"):
        time_purifier(ResamplingPreprocessor(), torch.rand(5, 3, 8, 8), batch_size=2)


def test_multiply_accumulates_of_a_convolution():
    # ConvPurifier: one 3x3 convolution 3 -> 3 channels: 3 * 3 * 9 MACs per output pixel.
    macs = multiply_accumulates(ConvPurifier(), torch.rand(2, 3, 10, 12))
    assert macs == 3 * 3 * 9 * 10 * 12


def test_peak_memory_and_machine():
    assert peak_memory_bytes(torch.device("cpu")) > 10 * 2**20
    assert machine()["threads"] >= 1
    assert len(machine().get("load_average", [0, 0, 0])) == 3


def test_deployment_timing_and_macs(tiny_model):
    x = torch.rand(4, 3, 32, 32)
    bare = Deployment(tiny_model)
    defended = ResamplingPreprocessor(device_type="cpu").deploy(tiny_model)
    timing = time_deployment(defended, x, batch_size=2, repeats=1)
    assert timing.images == 4 and timing.seconds > 0
    assert multiply_accumulates(defended, x) >= multiply_accumulates(bare, x) > 0


def test_repeated_sample_fills_the_count():
    x = repeated_sample(450, torch.device("cpu"))
    assert x.shape == (450, 3, 32, 32) and torch.equal(x[200:400], x[:200])


def test_forward_backward_timing_and_macs():
    """With backward, the timing runs to the input's gradient and the count adds the backward pass: for a frozen
    convolution, its gradient with respect to the input, as many multiply-accumulates as the forward pass."""
    x = torch.rand(4, 3, 10, 12)
    defence = ConvPurifier(batch_size=16)
    timing = time_purifier(defence, x, batch_size=2, repeats=1, backward=True)
    assert timing.images == 4 and timing.seconds > 0 and defence.batch_size == 16
    forward = 3 * 3 * 9 * 120  # per image
    assert multiply_accumulates(defence, x) == forward
    assert multiply_accumulates(defence, x, backward=True) == 2 * forward


def test_matmul_flops_per_second():
    assert matmul_flops_per_second(torch.device("cpu"), size=64, repeats=2) > 0
    for bad in ({"size": 0}, {"repeats": 0}, {"size": 8.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            matmul_flops_per_second(torch.device("cpu"), **bad)
