"""The benchmark helpers: timing, multiply-accumulate counts and peak memory."""

from __future__ import annotations

import pytest
import torch
from defences_under_contract import ConvPurifier

from art_purifiers import ResamplingPreprocessor
from art_purifiers.deploy import Deployment
from art_purifiers.evaluation.benchmark import (
    machine,
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
