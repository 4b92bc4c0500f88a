"""Reading the authors' checkpoints (art_purifiers.weights.checkpoints): state dicts, whole pickled modules, and
files crafted to run code, which must be refused without running anything."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import types

import pytest
import torch
from official_layouts import (
    AUTHORS_MODULE,
    load_manifest,
    save_irad_spec,
    save_state_dict,
    save_whole_module,
)
from torch import nn

from art_purifiers.weights.checkpoints import (
    InertObject,
    module_state_dict,
    read_checkpoint,
    read_state_dict,
)

DIR_VIT = "official_dir_vit_paper"


def assert_same(state: dict, expected: dict) -> None:
    assert list(state) == list(expected)
    for key, value in expected.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key


def one_line_error(path, call=read_state_dict) -> str:
    with pytest.raises(ValueError) as caught:
        call(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


# --- what the authors' files hold ---------------------------------------------------------------------------------


@pytest.mark.parametrize("data_parallel", [False, True], ids=["bare", "DataParallel"])
def test_whole_module_gives_the_manifest(tmp_path, data_parallel):
    path = tmp_path / "dir_vit.pt"
    saved = save_whole_module(path, DIR_VIT, data_parallel=data_parallel)
    assert AUTHORS_MODULE not in sys.modules  # the loader cannot import the authors' classes
    state, kind = read_state_dict(path)
    manifest = load_manifest(DIR_VIT)
    assert set(state) == set(manifest)
    assert {k: tuple(v.shape) for k, v in state.items()} == manifest
    assert_same(state, saved)
    assert kind == "whole module (pretrain_model.DIR_ViT" + (" in DataParallel)" if data_parallel else ")")
    assert AUTHORS_MODULE not in sys.modules


def test_whole_module_is_inert(tmp_path):
    path = tmp_path / "dir_vit.pt"
    save_whole_module(path, DIR_VIT, data_parallel=True)
    root = read_checkpoint(path)
    assert isinstance(root, InertObject) and not isinstance(root, nn.Module)
    vit = root._modules["module"]
    assert vit.inert_name == "pretrain_model.DIR_ViT"
    block = vit._modules["encoder"]._modules["transformer"]._modules["0"]
    assert block.inert_name == "timm.models.vision_transformer.Block" and not isinstance(block, nn.Module)
    assert vit._modules["encoder"]._modules["shuffle"].ratio == 0.75


def test_data_parallel_saved_on_a_gpu(tmp_path):
    """A DataParallel saved on a GPU holds its device ids and a torch.device; both are read as inert values."""
    wrapper = nn.DataParallel(nn.Linear(3, 2))
    wrapper.device_ids, wrapper.output_device, wrapper.src_device_obj = [0, 1], 0, torch.device("cuda", 0)
    path = tmp_path / "gpu.pt"
    torch.save(wrapper, path)
    state, kind = read_state_dict(path)
    assert_same(state, wrapper.module.state_dict())
    assert kind == "whole module (torch.nn.modules.linear.Linear in DataParallel)"
    device = read_checkpoint(path).src_device_obj
    assert isinstance(device, InertObject) and device.inert_args == ("cuda", 0)


def test_legacy_serialization_of_a_whole_module(tmp_path):
    path = tmp_path / "dir_vit_legacy.pt"
    saved = save_whole_module(path, DIR_VIT, _use_new_zipfile_serialization=False)
    state, kind = read_state_dict(path)
    assert_same(state, saved)
    assert kind == "whole module (pretrain_model.DIR_ViT)"
    assert not list(tmp_path.glob("*.patch"))


def test_module_state_dict_names_like_state_dict(tmp_path):
    """Buffers (batch norm's counters included), non-persistent buffers skipped, absent biases, timm blocks."""
    from timm.models.vision_transformer import Block

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GELU(), nn.Dropout(0.1),
                          nn.Linear(4, 4, bias=False), nn.LayerNorm(4), nn.Sequential(Block(8, 2)), nn.Identity())
    model.register_buffer("kept", torch.arange(3))
    model.register_buffer("dropped", torch.ones(2), persistent=False)
    model[1].running_mean.normal_()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    expected = model.state_dict()
    assert "dropped" not in expected and "1.num_batches_tracked" in expected
    assert_same(module_state_dict(read_checkpoint(path)), expected)
    state, kind = read_state_dict(path)
    assert_same(state, expected)
    assert kind == "whole module (torch.nn.modules.container.Sequential)"


def test_tensors_with_attributes_and_new_dtypes(tmp_path):
    """A parameter or buffer carrying Python attributes (pickled through _rebuild_parameter_with_state and
    _rebuild_from_type_v2) is read as a plain tensor; a uint16 buffer (_rebuild_tensor_v3) keeps its dtype."""
    model = nn.Linear(2, 2)
    model.weight.flag = True
    buffer = torch.arange(4.0)
    buffer.note = "kept by torch, dropped by us"
    model.register_buffer("with_note", buffer)
    if hasattr(torch, "uint16"):
        model.register_buffer("counts", torch.arange(3).to(torch.uint16))
    path = tmp_path / "attributes.pt"
    torch.save(model, path)
    state, _ = read_state_dict(path)
    assert_same(state, {k: v.detach() for k, v in model.state_dict().items()})
    assert not hasattr(state["weight"], "flag") and not hasattr(state["with_note"], "note")
    assert all(type(v) is torch.Tensor for v in state.values())


@pytest.mark.parametrize("data_parallel", [False, True], ids=["plain", "module-prefix"])
def test_state_dict_file(tmp_path, data_parallel):
    path = tmp_path / "state.pt"
    saved = save_state_dict(load_manifest("official_dir_resnet18_target"), path, data_parallel=data_parallel)
    state, kind = read_state_dict(path)
    assert kind == "state dict"
    assert_same(state, saved)


@pytest.mark.parametrize("key", ["state_dict", "model", "sd"])
def test_state_dict_under_a_key(tmp_path, key):
    saved = {"a.weight": torch.randn(2, 3), "a.bias": torch.zeros(2)}
    path = tmp_path / "nested.pt"
    torch.save({key: {f"module.{k}": v for k, v in saved.items()}, "epoch": 7}, path)
    state, kind = read_state_dict(path)
    assert kind == "state dict"
    assert_same(state, saved)


def test_irad_dict_with_spec(tmp_path):
    path = tmp_path / "Reconstruction.pt"
    saved = save_irad_spec(load_manifest("official_irad_liif_paper"), path, name="liif", args={"imnet": 256})
    loaded = read_checkpoint(path)
    assert type(loaded) is dict and loaded["model"]["name"] == "liif" and loaded["model"]["args"] == {"imnet": 256}
    assert_same(loaded["model"]["sd"], saved)
    state, kind = read_state_dict(path)
    assert kind == "state dict"
    assert_same(state, saved)


# --- files crafted to run code --------------------------------------------------------------------------------------


class Payload:
    """Unpickling this calls ``function(*args)``."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(marker) -> dict[str, tuple[Payload, str]]:
    """``{id: (payload that would create marker, the global it names)}``."""
    command = f"touch {marker}"
    return {
        "os.system": (Payload(os.system, command), f"{os.system.__module__}.system"),
        "builtins.eval": (Payload(builtins.eval, f"__import__('os').system({command!r})"), "builtins.eval"),
        "subprocess.Popen": (Payload(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
    }


@pytest.mark.parametrize("where", ["whole file", "inside a module"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_code_in_a_checkpoint_is_refused_and_never_run(tmp_path, where, kind):
    marker = tmp_path / "ran"
    payload, name = payloads(marker)[kind]
    path = tmp_path / "crafted.pt"
    if where == "whole file":
        torch.save(payload, path)
    else:
        save_whole_module(path, DIR_VIT, data_parallel=True, extra={"encoder.shuffle.note": payload})
    message = one_line_error(path)
    assert f"refused to unpickle the global {name}" in message
    assert not marker.exists()
    assert message == one_line_error(path, read_checkpoint)
    assert not marker.exists()


def test_functions_of_admitted_namespaces_are_inert(tmp_path):
    """A function under an admitted module name (here the authors' ``__main__``) is never looked up or called: it
    becomes an inert object storing its arguments."""
    marker = tmp_path / "ran"

    def run(command):
        os.system(command)

    run.__module__, run.__qualname__ = "__main__", "art_purifiers_test_run"
    main = sys.modules["__main__"]
    main.art_purifiers_test_run = run
    try:
        path = tmp_path / "crafted.pt"
        saved = save_whole_module(path, DIR_VIT, extra={"decoder.hook": Payload(run, f"touch {marker}")})
    finally:
        delattr(main, "art_purifiers_test_run")
    state, _ = read_state_dict(path)
    assert_same(state, saved)
    hook = read_checkpoint(path)._modules["decoder"].hook
    assert isinstance(hook, InertObject) and hook.inert_args == (f"touch {marker}",)
    assert not marker.exists()


# --- broken files ----------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    assert "no such" in one_line_error(tmp_path / "absent.pt")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    assert "empty" in one_line_error(path)


@pytest.mark.parametrize("content", ["whole module", "state dict"])
def test_truncated_file(tmp_path, content):
    path = tmp_path / "full.pt"
    if content == "whole module":
        save_whole_module(path, DIR_VIT)
    else:
        save_state_dict(load_manifest(DIR_VIT), path)
    data = path.read_bytes()
    for cut in (len(data) // 2, 100):
        truncated = tmp_path / f"cut{cut}.pt"
        truncated.write_bytes(data[:cut])
        assert "truncated or corrupt" in one_line_error(truncated)


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(os.urandom(4096))
    one_line_error(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_tensor(tmp_path, bad):
    path = tmp_path / "bad.pt"
    weight = torch.randn(3, 3)
    weight[1, 2] = bad
    torch.save({"conv.weight": weight, "conv.bias": torch.zeros(3)}, path)
    message = one_line_error(path)
    assert "conv.weight" in message and "NaN or infinite" in message


def test_non_finite_parameter_in_a_whole_module(tmp_path):
    path = tmp_path / "bad_module.pt"
    model = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        model[0].bias[0] = float("nan")
    torch.save(model, path)
    assert "'0.bias'" in one_line_error(path)


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64])
def test_tensor_neither_floating_nor_integer(tmp_path, dtype):
    path = tmp_path / "odd.pt"
    torch.save({"weight": torch.zeros(2, dtype=dtype)}, path)
    assert "neither floating point nor integer" in one_line_error(path)


@pytest.mark.parametrize("content", [{"epoch": 3, "note": "no weights"}, {}, [1, 2], "text"],
                         ids=["dict", "empty dict", "list", "string"])
def test_no_tensors(tmp_path, content):
    path = tmp_path / "empty_state.pt"
    torch.save(content, path)
    one_line_error(path)


def test_module_without_parameters(tmp_path):
    path = tmp_path / "empty_module.pt"
    torch.save(nn.Sequential(nn.ReLU()), path)
    assert "no tensors" in one_line_error(path)


class _PatternLayer(torch.nn.Module):
    """A parameter-free layer that pickles only its pattern, as einops' Rearrange does."""

    def __init__(self, pattern: str, payload=None) -> None:
        super().__init__()
        self.pattern, self.payload = pattern, payload

    def __getstate__(self):
        return {"pattern": self.pattern, "payload": self.payload}

    def __setstate__(self, state):
        self.__init__(**state)


def _save_with_pattern_layer(path, payload) -> None:
    module = types.ModuleType("pretrain_model")
    _PatternLayer.__module__, _PatternLayer.__qualname__ = "pretrain_model", "PatternLayer"
    module.PatternLayer = _PatternLayer
    sys.modules["pretrain_model"] = module
    try:
        network = torch.nn.Sequential(torch.nn.Linear(2, 2), _PatternLayer("(h w) b c -> b c h w", payload))
        torch.save(network, path)
    finally:
        del sys.modules["pretrain_model"]


def test_parameter_free_layer_pickled_by_its_own_state_is_skipped(tmp_path):
    _save_with_pattern_layer(tmp_path / "m.pt", None)
    state, kind = read_state_dict(tmp_path / "m.pt")
    assert sorted(state) == ["0.bias", "0.weight"] and kind.startswith("whole module")
    _save_with_pattern_layer(tmp_path / "t.pt", torch.ones(3))
    with pytest.raises(ValueError, match="not a module"):
        read_state_dict(tmp_path / "t.pt")
