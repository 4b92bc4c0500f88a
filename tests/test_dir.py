"""DIR and the adversarially trained victim: masks, the masked ViT, the adapter and both trainers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import TinyCNN
from defences_under_contract import tiny_dir_weights
from torch import nn

from art_purifiers.defences import DIRPreprocessor, make_defence
from art_purifiers.models import load_victim
from art_purifiers.nn.masked_vit import MaskedViTDenoiser, complementary_masks
from art_purifiers.training.dir import PRESETS as DIR_PRESETS
from art_purifiers.training.dir import Restorer, _representation_loss, export_weights, kl_perturbation, train_dir
from art_purifiers.training.victim_at import PRESETS as AT_PRESETS
from art_purifiers.training.victim_at import export_victim, train_victim_at
from art_purifiers.weights import load_networks


@pytest.mark.parametrize(("views", "ratio", "sizes"), [(2, 0.5, [8, 8]), (2, 0.3, [11, 5]), (2, 0.7, [5, 11]),
                                                       (4, 0.75, [4, 4, 4, 4])])
def test_complementary_masks_partition_the_tokens(views, ratio, sizes):
    masks = complementary_masks(5, 16, views, ratio, torch.Generator().manual_seed(0))
    assert masks.shape == (5, 16)
    for view, size in enumerate(sizes):
        assert ((masks == view).sum(1) == size).all()
    assert not torch.equal(masks[0], masks[1])  # one partition per image
    again = complementary_masks(5, 16, views, ratio, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)


def test_mask_parameters_are_checked():
    with pytest.raises(ValueError, match="1 - 1/3"):
        complementary_masks(1, 9, 3, 0.5)
    with pytest.raises(ValueError, match="ratio must lie"):
        complementary_masks(1, 9, 2, 1.0)
    with pytest.raises(ValueError, match="views must be an integer"):
        complementary_masks(1, 9, 1, 0.5)


def _transparent_vit(views: int) -> MaskedViTDenoiser:
    """A ViT whose blocks, norms and embeddings do nothing and whose head inverts the patch embedding: each view
    then reproduces exactly its visible patches, at their positions, and 0.5 elsewhere."""
    p, c = 4, 3
    vit = MaskedViTDenoiser(image_size=16, patch_size=p, width=p * p * c, heads=3, encoder_depth=1, decoder_depth=1)
    for name in ("encoder", "decoder", "encoder_norm", "decoder_norm"):
        setattr(vit, name, nn.Identity())
    with torch.no_grad():
        for parameter in (vit.cls_token, vit.encoder_position, vit.mask_token, vit.decoder_position):
            parameter.zero_()
        vit.patchify.weight.zero_()
        vit.patchify.bias.zero_()
        for di in range(p):
            for dj in range(p):
                for ch in range(c):
                    vit.patchify.weight[(di * p + dj) * c + ch, ch, di, dj] = 1
        vit.head.weight.copy_(torch.eye(p * p * c))
        vit.head.bias.zero_()
    return vit


@pytest.mark.parametrize("views", [2, 3])
def test_every_view_is_decoded_at_its_own_positions(views):
    vit = _transparent_vit(views)
    x = torch.rand(2, 3, 16, 16)
    masks = complementary_masks(2, vit.tokens, views, 1 - 1 / views, torch.Generator().manual_seed(1))
    expected = (x + 0.5 * (views - 1)) / views  # each patch is itself in one view and 0.5 in the others
    torch.testing.assert_close(vit(x, masks), expected)


def test_network_checks_its_inputs():
    vit = MaskedViTDenoiser(image_size=16, patch_size=4, width=12, heads=3, encoder_depth=1, decoder_depth=1)
    with pytest.raises(ValueError, match="Expected images"):
        vit(torch.rand(1, 3, 8, 8), complementary_masks(1, 16))
    with pytest.raises(ValueError, match="Expected views"):
        vit(torch.rand(1, 3, 16, 16), complementary_masks(1, 4))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        MaskedViTDenoiser(image_size=10, patch_size=4)


def test_preprocessor_is_random_unless_seeded_and_checks_its_parameters(images):
    defence = DIRPreprocessor(tiny_dir_weights(), device_type="cpu")
    assert defence.randomized and defence.differentiable
    first, second = defence(images)[0], defence(images)[0]
    assert not np.array_equal(first, second)
    seeded = DIRPreprocessor(tiny_dir_weights(), seed=3, device_type="cpu")
    np.testing.assert_array_equal(seeded(images)[0], seeded(images)[0])
    with pytest.raises(ValueError, match="masks must be an integer"):
        DIRPreprocessor(tiny_dir_weights(), masks=1)
    with pytest.raises(ValueError, match="1 - 1/3"):
        DIRPreprocessor(tiny_dir_weights(), masks=3, ratio=0.5)
    assert make_defence(f"dir:weights='{tiny_dir_weights()}',ratio=0.3", device_type="cpu").ratio == 0.3


@pytest.mark.parametrize(("weights", "target", "alpha"), [("cifar10", "resnet20", None),
                                                         ("cifar10_at", "resnet20-at", 2.0),
                                                         ("cifar10_at_alpha0", "resnet20-at", 0.0)])
def test_shipped_weights_load_offline(weights, target, alpha, images):
    # dir_cifar10 stops after stage 1 (its metadata has no alpha); the PGD-AT target's files ran both stages.
    defence = DIRPreprocessor(weights, seed=0)
    assert (defence.config["target"], defence.config["alpha"]) == (target, alpha)
    out = defence(images[:4])[0]
    assert out.shape == images[:4].shape and 0 <= out.min() and out.max() <= 1
    np.testing.assert_array_equal(out, defence(images[:4])[0])


def test_kl_perturbation_stays_in_the_ball():
    target = TinyCNN().eval()
    restored = torch.rand(3, 3, 32, 32)
    perturbed = kl_perturbation(target, restored, 8 / 255, 2 / 255, 3, torch.Generator().manual_seed(0))
    assert float((perturbed - restored).abs().max()) <= 8 / 255 + 1e-6
    assert 0 <= float(perturbed.min()) and float(perturbed.max()) <= 1
    assert not torch.equal(perturbed, restored)


@pytest.mark.parametrize("representation", ["paper", "code"])
def test_representation_loss_reaches_the_denoiser(representation):
    # Both forms of L_rep give the denoiser a gradient, and a bad form name is refused.
    torch.manual_seed(0)
    config = dataclasses.replace(DIR_PRESETS["smoke"], representation=representation)
    denoiser = MaskedViTDenoiser(**config.architecture())
    restorer, target = Restorer(denoiser, 2, 0.5), TinyCNN().eval()
    adversarial = torch.rand(4, 3, 32, 32)
    restorer.generator.manual_seed(0)
    restored = restorer(adversarial)
    loss = _representation_loss(config, restorer, target, adversarial, restored, target(restored),
                                torch.Generator().manual_seed(1))
    loss.backward()
    grads = [p.grad for p in denoiser.parameters() if p.grad is not None]
    assert loss.item() >= 0 and grads and any(float(g.abs().sum()) > 0 for g in grads)
    with pytest.raises(ValueError, match="representation"):
        dataclasses.replace(config, representation="other")


def _data(n: int = 48):
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, 3, 32, 32)).astype(np.float32), (np.arange(n) % 10).astype(np.int64)


def test_dir_training_runs_resumes_and_exports(tmp_path):
    x, y = _data()
    config = dataclasses.replace(DIR_PRESETS["smoke"], images=None, stage1_iterations=2, stage2_iterations=2,
                                 checkpoint_every=1, validate_every=1)
    target = TinyCNN().eval()
    train_dir(config, x, y, target, tmp_path)
    longer = dataclasses.replace(config, stage1_iterations=3, stage2_iterations=3)
    denoiser, report = train_dir(longer, x, y, target, tmp_path)
    assert report["stage1_log"][-1][0] == 3 and report["stage2_log"][-1][0] == 3
    assert set(report["stage2_validation"][-1][1]) == {"clean", "pgd10"}
    path = tmp_path / "dir.safetensors"
    export_weights(denoiser, longer, path, "TinyCNN", {"command": "test"})
    assert DIRPreprocessor(path, seed=0)(x[:2])[0].shape == (2, 3, 32, 32)


def test_adversarial_training_runs_and_exports_a_victim(tmp_path):
    x, y = _data(64)
    config = dataclasses.replace(AT_PRESETS["smoke"], images=None, iterations=2, batch=8, validation_images=16,
                                 checkpoint_every=1, validate_every=1)
    victim, report = train_victim_at(config, x, y, tmp_path)
    assert report["log"][-1][0] == 2 and set(report["validation"][-1][1]) == {"clean", "pgd10"}
    path = tmp_path / "victim.safetensors"
    export_victim(victim, path, {"command": "test"})
    with torch.no_grad():
        torch.testing.assert_close(load_victim(path)(torch.from_numpy(x[:4])), victim(torch.from_numpy(x[:4])))
    with pytest.raises(ValueError, match="fewer than a batch"):
        train_victim_at(dataclasses.replace(config, validation_images=60), x, y, tmp_path / "other")


def test_exported_victim_names_its_network_and_normalisation(tmp_path):
    """``export_victim`` writes the layout every weight file has (the network's spec in the metadata, read by the one
    loader), not the old victim layout only weights/legacy.py understood."""
    victim = load_victim("resnet20")
    path = tmp_path / "victim.safetensors"
    export_victim(victim, path, {"command": "test"})
    networks, metadata = load_networks(path, method="victim")
    assert set(networks) == {""} and metadata["networks"][""] == victim.network.network_spec
    assert metadata["normalization"] == {"mean": victim.mean.flatten().tolist(), "std": victim.std.flatten().tolist()}
    assert metadata["training"] == "PGD adversarial training" and metadata["provenance"] == {"command": "test"}
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(load_victim(path)(x), victim(x), rtol=0, atol=0)
