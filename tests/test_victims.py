"""The victims of the papers: RobustBench's WideResNet and DIR's CIFAR ResNet-18, read from their published layouts.

Checkpoints are built here in the layouts their authors publish (random tensors of the published shapes: for the
ResNet-18 the shapes of the authors' manifest, for the WideResNet the layout written out below), converted with
``convert-victim`` and loaded with ``load_victim``; their logits are compared with a functional forward over the raw
published state dict, written independently of the package's networks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from art_purifiers.cli import main
from art_purifiers.deploy import EmbeddingDefence
from art_purifiers.models import CifarResNet18, WideResNet, load_victim, split_victim
from art_purifiers.models.wide_resnet import published_key
from art_purifiers.nn.idfr import FeatureRestorer
from art_purifiers.training.victim import convert_reference_checkpoint
from art_purifiers.weights import load_networks, load_weights, read_metadata, save_networks, sha256_of

MANIFEST = Path(__file__).parent / "data" / "official" / "official_dir_resnet18_target.json"


# ----------------------------------------------------------------------------------------------------------------
# Published layouts and an independent forward
# ----------------------------------------------------------------------------------------------------------------
def _bn_shapes(prefix: str, channels: int) -> dict[str, list[int]]:
    return {f"{prefix}.weight": [channels], f"{prefix}.bias": [channels], f"{prefix}.running_mean": [channels],
            f"{prefix}.running_var": [channels], f"{prefix}.num_batches_tracked": []}


def wrn_published_shapes(depth: int, widen: int, classes: int = 10) -> dict[str, list[int]]:
    """Keys and shapes of RobustBench's WideResNet state dict, written out from its layout."""
    shapes = {"conv1.weight": [16, 3, 3, 3]}
    blocks, channels = (depth - 4) // 6, 16
    for stage, width in enumerate((16 * widen, 32 * widen, 64 * widen), start=1):
        for i in range(blocks):
            prefix, incoming = f"block{stage}.layer.{i}", channels if i == 0 else width
            shapes.update(_bn_shapes(f"{prefix}.bn1", incoming))
            shapes[f"{prefix}.conv1.weight"] = [width, incoming, 3, 3]
            shapes.update(_bn_shapes(f"{prefix}.bn2", width))
            shapes[f"{prefix}.conv2.weight"] = [width, width, 3, 3]
            if incoming != width:
                shapes[f"{prefix}.convShortcut.weight"] = [width, incoming, 1, 1]
        channels = width
    shapes.update(_bn_shapes("bn1", channels))
    shapes.update({"fc.weight": [classes, channels], "fc.bias": [classes]})
    return shapes


def random_state(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the given shapes: He-scaled convolutions, batch norms with non-trivial statistics."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith(("running_var", ".weight")) and len(shape) == 1:  # batch norm scale and variance
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif len(shape) == 1:  # biases and running means
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = torch.Size(shape[1:]).numel()
            state[key] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
    return state


def _bn(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                        state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False, eps=1e-5)


def reference_wrn(state: dict, x: torch.Tensor) -> torch.Tensor:
    """RobustBench's WideResNet forward over its published state dict."""
    out = F.conv2d(x, state["conv1.weight"], padding=1)
    for stage in (1, 2, 3):
        i = 0
        while f"block{stage}.layer.{i}.conv1.weight" in state:
            prefix, stride = f"block{stage}.layer.{i}", 2 if stage > 1 and i == 0 else 1
            activated = F.relu(_bn(out, state, f"{prefix}.bn1"))
            h = F.conv2d(activated, state[f"{prefix}.conv1.weight"], stride=stride, padding=1)
            h = F.conv2d(F.relu(_bn(h, state, f"{prefix}.bn2")), state[f"{prefix}.conv2.weight"], padding=1)
            projection = state.get(f"{prefix}.convShortcut.weight")
            out = h + (out if projection is None else F.conv2d(activated, projection, stride=stride))
            i += 1
    out = F.relu(_bn(out, state, "bn1")).mean(dim=(2, 3))
    return F.linear(out, state["fc.weight"], state["fc.bias"])


def reference_resnet18(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The CIFAR ResNet-18 forward over its published state dict."""
    out = F.relu(_bn(F.conv2d(x, state["conv1.weight"], padding=1), state, "bn1"))
    for stage in (1, 2, 3, 4):
        for i in (0, 1):
            prefix = f"layer{stage}.{i}"
            stride = 2 if stage > 1 and i == 0 else 1
            h = F.relu(_bn(F.conv2d(out, state[f"{prefix}.conv1.weight"], stride=stride, padding=1), state,
                           f"{prefix}.bn1"))
            h = _bn(F.conv2d(h, state[f"{prefix}.conv2.weight"], padding=1), state, f"{prefix}.bn2")
            if f"{prefix}.shortcut.0.weight" in state:
                out = _bn(F.conv2d(out, state[f"{prefix}.shortcut.0.weight"], stride=stride), state,
                          f"{prefix}.shortcut.1")
            out = F.relu(h + out)
    return F.linear(out.mean(dim=(2, 3)), state["linear.weight"], state["linear.bias"])


def _images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _save_robustbench(state: dict, path: Path) -> Path:
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # as RobustBench saves them
    return path


def _save_dir(state: dict, path: Path) -> Path:
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # DataParallel's state dict, as DIR saves it
    return path


def _dir_state() -> dict[str, torch.Tensor]:
    return random_state(json.loads(MANIFEST.read_text(encoding="utf-8")), seed=2)


# ----------------------------------------------------------------------------------------------------------------
# Equivalence with the published forward
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("depth", "widen"), [(10, 1), (16, 2)])
def test_wide_resnet_checkpoint_converts_and_matches_reference(tmp_path, depth, widen):
    state = random_state(wrn_published_shapes(depth, widen))
    source = _save_robustbench(state, tmp_path / "Standard.pt")
    converted = tmp_path / "wrn.safetensors"
    digest = convert_reference_checkpoint(source, converted)
    assert digest == sha256_of(converted)
    metadata = read_metadata(converted)
    assert metadata["method"] == "victim" and metadata["source"] == "Standard.pt"
    assert metadata["source_sha256"] == sha256_of(source)
    assert metadata["normalization"] == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    assert metadata["networks"] == {"": {"name": "wide_resnet",
                                         "args": {"depth": depth, "widen_factor": widen, "num_classes": 10}}}
    assert not any(key.startswith(".") for key in load_weights(converted).tensors)  # unprefixed tensors
    x = _images()
    expected = reference_wrn(state, x)
    with torch.no_grad():
        for victim in (load_victim(converted), load_victim(source)):
            assert isinstance(victim.network, WideResNet)
            torch.testing.assert_close(victim(x), expected, atol=1e-5, rtol=1e-5)


def test_dir_resnet18_checkpoint_converts_and_matches_reference(tmp_path):
    state = _dir_state()
    assert len(state) == 122
    source = _save_dir(state, tmp_path / "target.pth")
    converted = tmp_path / "resnet18.safetensors"
    assert main(["convert-victim", str(source), str(converted)]) == 0
    metadata = read_metadata(converted)
    assert metadata["networks"][""]["name"] == "resnet18_cifar" and metadata["source"] == "target.pth"
    assert metadata["normalization"] == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    x = _images()
    expected = reference_resnet18(state, x)
    with torch.no_grad():
        for victim in (load_victim(converted), load_victim(source)):
            assert isinstance(victim.network, CifarResNet18)
            assert torch.equal(victim.mean.flatten(), torch.zeros(3)) and torch.equal(victim.std.flatten(),
                                                                                        torch.ones(3))
            torch.testing.assert_close(victim(x), expected, atol=1e-5, rtol=1e-5)


def test_cifar_resnet_checkpoint_still_converts_with_imagenet_normalisation(tmp_path):
    bundled = load_victim("resnet20")
    source = tmp_path / "resnet20.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in bundled.network.state_dict().items()},
                "best_prec1": 91.0}, source)
    converted = tmp_path / "resnet20.safetensors"
    convert_reference_checkpoint(source, converted)
    metadata = read_metadata(converted)
    assert metadata["networks"][""] == {"name": "cifar_resnet", "args": {"depth": 20, "num_classes": 10}}
    assert metadata["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    shipped, tensors = load_weights("resnet20_cifar10").tensors, load_weights(converted).tensors
    assert set(shipped) == set(tensors) and all(torch.equal(shipped[k], tensors[k]) for k in shipped)
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(load_victim(converted)(x), bundled(x), atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# Key coverage and errors that name the published key
# ----------------------------------------------------------------------------------------------------------------
def test_wide_resnet_28_10_maps_every_published_key():
    start = time.perf_counter()
    network = WideResNet(depth=28, widen_factor=10)
    assert time.perf_counter() - start < 2.0
    published = wrn_published_shapes(28, 10)
    ours = {published_key(name): list(tensor.shape) for name, tensor in network.state_dict().items()}
    assert ours == published  # one-to-one, shapes included
    assert sum(p.numel() for p in network.parameters()) == 36_479_194  # WRN-28-10's published parameter count


def test_resnet18_names_are_the_published_ones():
    published = json.loads(MANIFEST.read_text(encoding="utf-8"))
    assert {k: list(v.shape) for k, v in CifarResNet18().state_dict().items()} == published


@pytest.mark.parametrize("save", [_save_robustbench, _save_dir], ids=["robustbench", "dir"])
def test_mis_shaped_missing_and_unexpected_keys_are_named(tmp_path, save):
    robustbench = save is _save_robustbench
    state = random_state(wrn_published_shapes(10, 1)) if robustbench else _dir_state()
    broken_key = "block2.layer.0.convShortcut.weight" if robustbench else "layer3.0.shortcut.0.weight"
    missing_key = "block3.layer.0.bn2.running_var" if robustbench else "layer4.1.conv2.weight"
    mis_shaped = {**state, broken_key: torch.zeros(1, 1, 1, 1)}
    with pytest.raises(ValueError, match=rf"wrong shape: \['{broken_key} \(1, 1, 1, 1\)"):
        convert_reference_checkpoint(save(mis_shaped, tmp_path / "a.pt"), tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match=rf"missing: \['{missing_key}'\]"):
        load_victim(save({k: v for k, v in state.items() if k != missing_key}, tmp_path / "b.pt"))
    with pytest.raises(ValueError, match=r"unexpected: \['extra.weight'\]"):
        load_victim(save({**state, "extra.weight": torch.zeros(2)}, tmp_path / "c.pt"))
    assert not (tmp_path / "a.safetensors").exists()


def test_unknown_layout_and_wrong_class_count_are_refused(tmp_path):
    source = tmp_path / "other.pt"
    torch.save({"features.0.weight": torch.zeros(3)}, source)
    with pytest.raises(ValueError, match="no known victim layout"):
        load_victim(source)
    wrn = _save_robustbench(random_state(wrn_published_shapes(10, 1, classes=100)), tmp_path / "wrn100.pt")
    with pytest.raises(ValueError, match="100 classes"):
        load_victim(wrn)
    assert load_victim(wrn, num_classes=100)(_images(1)).shape == (1, 100)
    with pytest.raises(ValueError, match="depth"):
        WideResNet(depth=12)


# ----------------------------------------------------------------------------------------------------------------
# timm's split, and the one loader
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["wide_resnet", "resnet18_cifar"])
def test_split_of_the_new_victims(tmp_path, architecture):
    if architecture == "wide_resnet":
        source = _save_robustbench(random_state(wrn_published_shapes(10, 2)), tmp_path / "w.pt")
        dimension = 128
    else:
        source, dimension = _save_dir(_dir_state(), tmp_path / "r.pth"), 512
    victim = load_victim(source)
    x = _images(2)
    with torch.no_grad():
        features = victim.forward_features(x)
        embedding = victim.forward_head(features, pre_logits=True)
        assert embedding.shape == (2, dimension)
        torch.testing.assert_close(victim.forward_head(features), victim(x), atol=0, rtol=0)
        torch.testing.assert_close(victim.get_classifier()(embedding), victim(x), atol=0, rtol=0)
        encoder, head = split_victim(victim)
        torch.testing.assert_close(head(encoder(x)), victim(x), atol=0, rtol=0)
        with pytest.raises(ValueError, match="32x32"):
            victim(torch.rand(1, 3, 40, 40))
        # IDFR's feature restorer sits between the encoder and the head of either victim.
        restorer = FeatureRestorer(dimension)
        deployed = EmbeddingDefence(restorer).deploy(victim).model
        torch.testing.assert_close(deployed(x), victim.get_classifier()(restorer(embedding)), atol=0, rtol=0)


def test_save_networks_without_prefix(tmp_path):
    network = CifarResNet18(num_classes=4)
    path = tmp_path / "victim.safetensors"
    save_networks({"": network}, path, {"method": "victim"})
    assert set(load_weights(path).tensors) == set(network.state_dict())
    networks, metadata = load_networks(path, method="victim")
    assert set(networks) == {""} and metadata["networks"][""]["args"] == {"num_classes": 4}
    victim = load_victim(path, num_classes=4)  # no normalisation recorded: ImageNet's, as for the legacy files
    assert torch.allclose(victim.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    with pytest.raises(ValueError, match="only network"):
        save_networks({"": network, "other": network}, tmp_path / "two.safetensors", {"method": "victim"})
