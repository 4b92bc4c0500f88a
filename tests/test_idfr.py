"""IDFR: networks, adapters and trainer (the ART contract is in test_contract.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import TinyCNN
from defences_under_contract import tiny_idfr_weights

from art_purifiers.defences import IDFRDefence, IDFRPreprocessor, make_defence
from art_purifiers.models import split_victim
from art_purifiers.nn.idfr import FeatureRestorer, InputDenoiser
from art_purifiers.training.idfr import (
    PRESETS,
    ConvexPairs,
    IDFRTrainingConfig,
    example_plan,
    export_weights,
    train_idfr,
)
from art_purifiers.weights import read_metadata, save_safetensors


def test_denoiser_is_table_6_and_starts_as_identity():
    denoiser = InputDenoiser()
    assert sum(p.numel() for p in denoiser.parameters()) == 668_355
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(denoiser(x), x)  # linear last layer initialised to zero
    torch.nn.init.normal_(denoiser.layer9.weight, std=0.1)
    residual = denoiser.residual(x)
    assert residual.shape == x.shape and bool((residual < 0).any()) and bool((residual > 0).any())
    with pytest.raises(ValueError, match="divisible by 4"):
        denoiser(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match="8 values"):
        InputDenoiser(widths=(8, 8))


def test_restorer_is_table_7_with_derived_widths():
    assert sum(p.numel() for p in FeatureRestorer(512).parameters()) == 337_184  # 512-256-128-32-128-256-512
    restorer = FeatureRestorer(64)
    assert [layer.out_features for layer in restorer.layers] == [32, 16, 4, 16, 32, 64]
    h = torch.rand(5, 64)
    assert bool((restorer(h) >= 0).all())
    skipped = FeatureRestorer(64, skips=True)
    skipped.load_state_dict(restorer.state_dict())
    assert not torch.equal(skipped(h), restorer(h))
    with pytest.raises(ValueError, match=r"\(N, 64\)"):
        restorer(torch.rand(5, 32))
    with pytest.raises(ValueError, match="skips"):
        FeatureRestorer(64, skips="yes")


def test_full_defence_is_denoiser_then_restorer(tiny_model, images):
    full = IDFRDefence(tiny_idfr_weights(), device_type="cpu")
    alone = IDFRDefence(tiny_idfr_weights(), restorer=False, device_type="cpu")
    assert len(full.defences) == 2 and len(alone.defences) == 1
    x = torch.from_numpy(images)
    encoder, head = split_victim(tiny_model)
    with torch.no_grad():
        denoised = full.defences[0].denoiser(x).clamp(0, 1)
        expected = head(full.defences[1].module(encoder(denoised)))
    np.testing.assert_allclose(full.deploy(tiny_model).classifier().predict(images), expected.numpy(), atol=1e-5)
    assert make_defence(f"idfr:restorer=false,weights='{tiny_idfr_weights()}'").restorer is False
    assert make_defence(f"idfr:weights='{tiny_idfr_weights()}'", device_type="cpu").restorer is True


def test_weights_are_checked(tmp_path):
    other = tmp_path / "irad.safetensors"
    save_safetensors({"a": torch.ones(1)}, other, metadata={"method": "irad"})
    with pytest.raises(ValueError, match="holds irad weights, not idfr weights"):
        IDFRPreprocessor(other)
    no_restorer = tmp_path / "denoiser_only.safetensors"
    export_weights(InputDenoiser(widths=(4,) * 8), None, IDFRTrainingConfig(), no_restorer, "TinyCNN")
    assert IDFRDefence(no_restorer, restorer=False).restorer is False
    with pytest.raises(ValueError, match="holds no feature restorer"):
        IDFRDefence(no_restorer)
    with pytest.raises(ValueError, match="restorer must be True or False"):
        IDFRDefence(no_restorer, restorer="maybe")


def test_example_plan():
    config = IDFRTrainingConfig()
    source, setting = example_plan(config, 4)
    assert len(source) == 4 * 9 and sorted(set(setting.tolist())) == list(range(9))
    one = dataclasses.replace(config, examples_per_image=1)
    source, setting = example_plan(one, 50)
    assert source.tolist() == list(range(50)) and len(set(setting.tolist())) > 3
    np.testing.assert_array_equal(setting, example_plan(one, 50)[1])  # a function of the seed


def test_convex_pairs_follow_the_pairing():
    """Paper: a correctly classified embedding with a misclassified one of the same class; code: clean with
    adversarial."""
    head = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    clean = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # classified 0 and 1: both correct
    adversarial = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # classified 1 and 0: both wrong
    labels = torch.tensor([0, 1])
    paper = ConvexPairs(clean, adversarial, labels, labels, head, "paper")
    assert paper.correct_share == 0.5
    assert [t.tolist() for t in paper.pools[0]] == [[0], [2]]
    code = ConvexPairs(clean, adversarial, labels, labels, head, "code")
    assert [t.tolist() for t in code.pools[1]] == [[1], [3]]
    mixed, drawn = paper.draw(6, torch.Generator().manual_seed(0))
    assert mixed.shape == (6, 2) and set(drawn.tolist()) <= {0, 1}


def test_training_runs_resumes_and_exports(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, 3, 32, 32)).astype(np.float32)
    y = (np.arange(40) % 10).astype(np.int64)
    config = dataclasses.replace(PRESETS["smoke"], denoiser_iterations=2, restorer_iterations=2, images=None,
                                 validation_images=8, validate_every=1, checkpoint_every=1, attack_iterations=1)
    target = TinyCNN().eval()
    train_idfr(config, x, y, target, tmp_path)
    longer = dataclasses.replace(config, denoiser_iterations=3, restorer_iterations=3)
    denoiser, restorer, report = train_idfr(longer, x, y, target, tmp_path)
    assert [i for i, _ in report["denoiser_log"]][-1] == 3 and report["examples"] == 32
    assert set(report["restorer_validation"][-1][1]) == {"clean", "bim8"}
    path = tmp_path / "idfr.safetensors"
    export_weights(denoiser, restorer, longer, path, "TinyCNN", {"command": "test"})
    assert read_metadata(path)["networks"]["restorer"]["args"]["dimension"] == 64
    assert IDFRDefence(path).deploy(target).classifier().predict(x[:2]).shape == (2, 10)
    with pytest.raises(ValueError, match="leaves no training image"):
        train_idfr(dataclasses.replace(config, validation_images=40), x, y, target, tmp_path / "other")
