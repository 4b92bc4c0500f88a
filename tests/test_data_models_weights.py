"""Data loaders, victim models and the weight registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.attacks.evasion import ProjectedGradientDescent
from conftest import SHARED_CIFAR10, SHARED_WEIGHTS, needs_shared_data

from art_purifiers.data import load_cifar10, load_sample, load_test_images
from art_purifiers.evaluation import accuracy, art_classifier
from art_purifiers.models import cifar_resnet, load_victim, read_reference_checkpoint
from art_purifiers.weights import load_safetensors, load_weights, registry, save_safetensors, sha256_of, weights_path


def test_bundled_sample_is_cifar_test_prefix():
    x, y = load_sample()
    assert x.shape == (200, 3, 32, 32) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # known labels of test images 0..9
    assert load_sample(5)[0].shape[0] == 5


def test_registry_hashes_match_shipped_files():
    for name, entry in registry().items():
        assert sha256_of(weights_path(name)) == entry["sha256"], name


def test_sha256_mismatch_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    digest = save_safetensors({"a": torch.ones(2)}, path)
    assert torch.equal(load_safetensors(path, digest)["a"], torch.ones(2))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_safetensors(path, "0" * 64)
    with pytest.raises(ValueError, match="safetensors"):
        load_safetensors(tmp_path / "w.pt")


def test_bundled_victim_is_accurate_on_bundled_sample():
    model = load_victim()
    x, y = load_sample(100)
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert accuracy >= 0.85


def test_adversarially_trained_victim_ships():
    # resnet20-at: the bundled ResNet-20 after PGD adversarial training. Less accurate on clean images than the
    # natural one, but white-box PGD leaves it a share of its images where it leaves the natural one none.
    x, y = load_sample(64)
    robust_accuracy = {}
    for name in ("resnet20", "resnet20-at"):
        classifier = art_classifier(load_victim(name), device="cpu")
        np.random.seed(0)  # noqa: NPY002 (ART's random start)
        attack = ProjectedGradientDescent(classifier, eps=8 / 255, eps_step=2 / 255, max_iter=10, verbose=False)
        robust_accuracy[name] = accuracy(classifier, attack.generate(x, y=y), y)
    assert load_victim("resnet20-at").network.depth == 20
    assert 50.0 <= accuracy(art_classifier(load_victim("resnet20-at"), device="cpu"), x, y) < 85.0
    assert robust_accuracy["resnet20"] <= 5.0 and robust_accuracy["resnet20-at"] >= 20.0


@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_cifar_resnet_depths(depth):
    network = cifar_resnet(depth)
    assert network(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    blocks = (depth - 2) // 6
    assert len(network.layer1) == len(network.layer2) == len(network.layer3) == blocks


def test_cifar_resnet_rejects_unknown_depth():
    with pytest.raises(ValueError, match="depth"):
        cifar_resnet(21)


@needs_shared_data
@pytest.mark.parametrize(("file", "depth"), [("resnet20-12fca82f.th", 20), ("resnet32-d509ac18.th", 32)])
def test_reference_checkpoints_load(file, depth):
    state = read_reference_checkpoint(SHARED_WEIGHTS / file)
    cifar_resnet(depth).load_state_dict(state)  # strict
    model = load_victim(SHARED_WEIGHTS / file)
    x, y = load_cifar10(SHARED_CIFAR10, "test", range(200))
    with torch.no_grad():
        assert (model(torch.from_numpy(x)).argmax(1).numpy() == y).mean() >= 0.88


@needs_shared_data
@pytest.mark.parametrize(("file", "name"), [("resnet20-12fca82f.th", "resnet20_cifar10"),
                                          ("resnet32-d509ac18.th", "resnet32_cifar10")])
def test_shipped_resnets_equal_reference(file, name):
    reference = read_reference_checkpoint(SHARED_WEIGHTS / file)
    shipped = load_weights(name).tensors
    assert set(reference) <= set(shipped)  # the shipped file adds BatchNorm counters
    assert all(torch.equal(reference[k], shipped[k]) for k in reference)


@needs_shared_data
def test_partial_cifar10_loads():
    x, y = load_cifar10(SHARED_CIFAR10, "train")
    assert x.shape == (8068, 3, 32, 32) and y.shape == (8068,)
    xt, yt = load_test_images(SHARED_CIFAR10, 500)
    assert xt.shape == (500, 3, 32, 32)
    labels = np.load(SHARED_CIFAR10 / "cifar10_all_labels.npz")["test_batch"][:500]
    np.testing.assert_array_equal(yt, labels)
    sample_x, _ = load_sample()
    np.testing.assert_array_equal(sample_x, xt[:200])


def test_missing_data_root_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR-10"):
        load_cifar10(tmp_path)


@needs_shared_data
def test_convert_victim_reproduces_shipped_tensors(tmp_path):
    # The shipped file was written before files named their networks: today's conversion holds the same tensors
    # (the shipped bytes stay, read through weights/legacy.py) and says more in its metadata.
    from art_purifiers.training.victim import convert_reference_checkpoint

    source = SHARED_WEIGHTS / "resnet20-12fca82f.th"
    convert_reference_checkpoint(source, tmp_path / "r20.safetensors")
    shipped, converted = load_weights("resnet20_cifar10").tensors, load_weights(tmp_path / "r20.safetensors")
    assert set(shipped) == set(converted.tensors)
    assert all(torch.equal(shipped[k], converted.tensors[k]) for k in shipped)
    assert converted.metadata["source_sha256"] == sha256_of(source).lower()
    assert converted.metadata["source_sha256"].startswith("12fca82f")


def test_a_weight_file_names_its_networks_and_one_loader_rebuilds_them(tmp_path):
    from art_purifiers.nn import EDSREncoder, SampleNet
    from art_purifiers.weights import load_networks, save_networks, save_safetensors

    torch.manual_seed(0)
    encoder, samplenet = EDSREncoder(blocks=1, features=4), SampleNet(4, hidden=(8,), units="normalised")
    path = tmp_path / "two.safetensors"
    save_networks({"encoder": encoder, "samplenet": samplenet}, path, {"method": "study"})
    networks, metadata = load_networks(path)
    assert metadata["networks"]["samplenet"] == {"name": "samplenet", "args": {
        "feature_dim": 4, "hidden": [8], "max_shift": None, "max_rows": 65536, "encoder": None, "units": "normalised"}}
    for key, network in (("encoder", encoder), ("samplenet", samplenet)):
        for name, tensor in network.state_dict().items():
            torch.testing.assert_close(networks[key].state_dict()[name], tensor)
    tensors = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    spec = {"encoder": {"name": "no_such_network", "args": {}}}
    save_safetensors(tensors, tmp_path / "unknown.safetensors", {"method": "study", "networks": spec})
    with pytest.raises(ValueError, match="no_such_network"):
        load_networks(tmp_path / "unknown.safetensors")
    spec = {"encoder": encoder.network_spec}
    save_safetensors({**tensors, "extra.weight": torch.ones(1)}, tmp_path / "stray.safetensors",
                     {"method": "study", "networks": spec})
    with pytest.raises(ValueError, match="belong to no network.*extra.weight"):
        load_networks(tmp_path / "stray.safetensors")
    with pytest.raises(ValueError, match="not a registered network"):
        save_networks({"plain": torch.nn.Linear(1, 1)}, tmp_path / "plain.safetensors", {"method": "study"})
