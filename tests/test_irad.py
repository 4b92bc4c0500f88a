"""IRAD: the ART adapter over the implicit networks, and its trainer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import TinyCNN
from defences_under_contract import TINY_IRAD, tiny_irad_weights

from art_purifiers import IRADPreprocessor
from art_purifiers.defences.irad import load_irad_networks
from art_purifiers.training.irad import TASKS, export_weights, stage1_inputs, train_irad
from art_purifiers.training.loops import adversarial_pairs, batch_for_iteration
from art_purifiers.weights import read_metadata, save_safetensors


@pytest.fixture
def tiny_data():
    rng = np.random.default_rng(0)
    x = np.kron(rng.uniform(size=(12, 3, 4, 4)), np.ones((1, 1, 8, 8))).astype(np.float32)
    return x, rng.integers(0, 10, size=12)


def test_samplers_compose_the_same_networks():
    x = torch.rand(2, 3, 32, 32)
    none = IRADPreprocessor(tiny_irad_weights(), "none", device_type="cpu")
    samplenet = IRADPreprocessor(tiny_irad_weights(), "samplenet", device_type="cpu")
    representation, net, _ = load_irad_networks(tiny_irad_weights())
    with torch.no_grad():
        codes = representation.encode(x)
        torch.testing.assert_close(none.forward(x)[0], representation.render(codes, 32, 32).clamp(0, 1))
        expected = representation.render(codes, 32, 32, net(codes, 32, 32)).clamp(0, 1)
        torch.testing.assert_close(samplenet.forward(x)[0], expected)
    assert not samplenet.randomized and IRADPreprocessor(tiny_irad_weights(), "variant").randomized


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (32, 48)])
def test_any_image_size(size):
    x = np.random.default_rng(0).uniform(size=(2, 3, *size)).astype(np.float32)
    out, _ = IRADPreprocessor(tiny_irad_weights(), device_type="cpu")(x)
    assert out.shape == (2, 3, *size)


def test_shipped_weights_load_offline_and_purify():
    """``IRADPreprocessor()`` loads the shipped CIFAR-10 weights (sha256 checked) and keeps images close to
    themselves: a trained reconstruction, not noise."""
    defence = IRADPreprocessor(device_type="cpu")
    assert defence.config["provenance"]["images"] == 8068  # trained on the 8068 training images only
    x = np.kron(np.random.default_rng(0).uniform(size=(2, 3, 4, 4)), np.ones((1, 1, 8, 8))).astype(np.float32)
    out, _ = defence(x)
    assert out.shape == x.shape and np.abs(out - x).mean() < 0.1


def test_weights_validation(tmp_path):
    with pytest.raises(ValueError, match="No weights"):
        IRADPreprocessor(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_safetensors({"a": torch.ones(1)}, other, metadata={"method": "dip"})
    with pytest.raises(ValueError, match="holds dip weights, not irad weights"):
        IRADPreprocessor(other)
    save_safetensors({"a": torch.ones(1)}, other)
    with pytest.raises(ValueError, match="not an IRAD weight file"):
        IRADPreprocessor(other)
    representation, _, _ = load_irad_networks(tiny_irad_weights())
    no_sampler = tmp_path / "ir_only.safetensors"
    export_weights(representation, None, TINY_IRAD, no_sampler)
    assert read_metadata(no_sampler)["method"] == "irad"
    with pytest.raises(ValueError, match="no SampleNet"):
        IRADPreprocessor(no_sampler, "samplenet")
    assert IRADPreprocessor(no_sampler, "none").sampler == "none"
    with pytest.raises(ValueError, match="sampler"):
        IRADPreprocessor(tiny_irad_weights(), "bicubic")


@pytest.mark.parametrize("task", TASKS)
def test_stage1_inputs(task):
    clean = torch.rand(3, 3, 16, 16)
    adversarial = (clean + 0.03).clamp(0, 1)
    inputs = stage1_inputs(task, clean, adversarial, 0.1, torch.Generator().manual_seed(0))
    expected_size = (8, 8) if task == "super-resolution" else (16, 16)
    assert inputs.shape == (3, 3, *expected_size)
    assert 0 <= float(inputs.min()) and float(inputs.max()) <= 1
    if task == "adversarial":
        assert torch.equal(inputs, adversarial)
    if task == "inpainting":
        assert int((inputs == 0).all(1).sum()) >= 3 * 16  # a blank square in every image


def test_batches_are_a_function_of_the_iteration():
    first = [batch_for_iteration(i, 10, 3, seed=0) for i in range(6)]
    assert [len(b) for b in first] == [3] * 6
    assert len(set(np.concatenate(first[:3]))) == 9  # one epoch: 3 disjoint batches of 3 out of 10
    assert all(np.array_equal(a, batch_for_iteration(i, 10, 3, seed=0)) for i, a in enumerate(first))
    ranks = [batch_for_iteration(0, 12, 3, seed=0, rank=r, world=2) for r in range(2)]
    assert not set(ranks[0]) & set(ranks[1])


def test_pairs_are_cached_and_within_budget(tiny_data, tmp_path):
    x, y = tiny_data
    model = TinyCNN().eval()
    pairs = adversarial_pairs(model, x, y, tmp_path / "pairs.npz", steps=2, batch_size=5)
    assert pairs.dtype == np.uint8 and pairs.shape == x.shape
    assert np.abs(pairs / 255.0 - x).max() <= 8 / 255 + 0.5 / 255 + 1e-6  # budget plus 8-bit rounding
    again = adversarial_pairs(model, x, y, tmp_path / "pairs.npz", steps=2, batch_size=5)
    np.testing.assert_array_equal(pairs, again)
    np.testing.assert_array_equal(pairs, adversarial_pairs(model, x, y, None, steps=2, batch_size=5))


def test_training_runs_resumes_and_exports(tiny_data, tmp_path):
    x, y = tiny_data
    config = dataclasses.replace(TINY_IRAD, pgd_iterations=1, stage1_iterations=2, stage2_iterations=1, stage1_batch=4,
                                 stage2_batch=4, checkpoint_every=1)
    torch.manual_seed(0)
    source = TinyCNN().eval()
    _, _, first = train_irad(config, x, y, source, tmp_path)
    longer = dataclasses.replace(config, stage1_iterations=3, stage2_iterations=2)
    representation, samplenet, report = train_irad(longer, x, y, source, tmp_path)
    assert [step for step, _ in report["stage1_log"]] == [2, 3]  # resumed after iteration 2
    assert [step for step, _ in report["stage2_log"]] == [1, 2]
    saved = torch.load(tmp_path / "stage1.pt", weights_only=True)
    assert saved["iteration"] == 3
    # The stage's time includes the run before the resume (written into the checkpoint).
    assert first["stage1_seconds"] < saved["seconds"] <= report["stage1_seconds"]
    path = tmp_path / "irad.safetensors"
    export_weights(representation, samplenet, longer, path, {"command": "test"})
    assert json.dumps(read_metadata(path)["provenance"]) == '{"command": "test"}'
    defence = IRADPreprocessor(path, device_type="cpu")
    assert defence(x[:2])[0].shape == x[:2].shape


def test_resumed_training_equals_uninterrupted(tiny_data, tmp_path):
    x, y = tiny_data
    config = dataclasses.replace(TINY_IRAD, pgd_iterations=1, stage1_iterations=3, stage2_iterations=0, stage1_batch=4,
                                 checkpoint_every=1)
    source = TinyCNN().eval()
    straight, _, _ = train_irad(config, x, y, source, tmp_path / "straight")
    train_irad(dataclasses.replace(config, stage1_iterations=2), x, y, source, tmp_path / "resumed")
    resumed, _, _ = train_irad(config, x, y, source, tmp_path / "resumed")
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)
