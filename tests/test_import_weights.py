"""art-purifiers import-weights: the authors' IRAD and DIR checkpoints, built here in their layouts from the manifests
of their state dicts (random tensors of the listed shapes, saved as their code saves them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from official_layouts import load_manifest, save_whole_module

from art_purifiers import DIRPreprocessor, IRADPreprocessor
from art_purifiers.cli import main
from art_purifiers.defences import make_defence
from art_purifiers.weights import read_metadata

LIIF_SPEC = {"name": "liif", "args": {
    "encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}},
    "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256, 256]}}}}


def random_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: 0.05 * torch.randn(shape, generator=generator) for key, shape in load_manifest(name).items()}


def save_irad(folder: Path, reconstruction: dict | None = None, samplenet: dict | None = None,
              spec: dict | None = None) -> tuple[Path, Path]:
    """``Reconstruction.pt`` and ``SampleNet.pt`` as the authors' code writes them."""
    r, s = folder / "Reconstruction.pt", folder / "SampleNet.pt"
    sd = random_state("official_irad_liif_paper") if reconstruction is None else reconstruction
    torch.save({"model": {**(spec or LIIF_SPEC), "sd": sd}}, r)
    torch.save({"model": random_state("official_irad_samplenet_paper", 1) if samplenet is None else samplenet}, s)
    return r, s


def import_irad_cli(r: Path, s: Path, out: Path) -> dict:
    main(["import-weights", "irad", "--reconstruction", str(r), "--samplenet", str(s), "--output", str(out)])
    return read_metadata(out)


def test_irad_import_maps_every_key_and_loads(tmp_path, capsys):
    r, s = save_irad(tmp_path)
    metadata = import_irad_cli(r, s, tmp_path / "irad.safetensors")
    report = json.loads(capsys.readouterr().out)
    dropped = ["encoder.sub_mean.weight", "encoder.sub_mean.bias", "encoder.add_mean.weight", "encoder.add_mean.bias"]
    assert sorted(report["dropped"]["reconstruction"]) == sorted(dropped)
    assert sorted(report["dropped"]["samplenet"]) == sorted(dropped)
    assert metadata["import"]["sources"]["samplenet"]["sha256"] and metadata["method"] == "irad"
    samplenet_spec = metadata["networks"]["samplenet"]["args"]
    assert samplenet_spec["units"] == "normalised" and samplenet_spec["encoder"]["name"] == "edsr"
    assert samplenet_spec["encoder"]["args"]["blocks"] == 16
    defence = IRADPreprocessor(weights=str(tmp_path / "irad.safetensors"))
    # SampleNet's encoder holds SampleNet.pt's copy, not the reconstruction's.
    torch.testing.assert_close(defence.samplenet.encoder.head.weight,
                               random_state("official_irad_samplenet_paper", 1)["encoder.head.0.weight"])
    x = np.random.default_rng(0).uniform(size=(2, 3, 32, 32)).astype(np.float32)
    purified, _ = defence(x)
    assert purified.shape == x.shape and np.isfinite(purified).all()
    spec_defence = make_defence(f"irad:weights={tmp_path / 'irad.safetensors'}")
    np.testing.assert_array_equal(spec_defence(x)[0], purified)


def test_irad_import_reconstruction_alone(tmp_path):
    r, _ = save_irad(tmp_path)
    main(["import-weights", "irad", "--reconstruction", str(r), "--output", str(tmp_path / "r.safetensors")])
    with pytest.raises(ValueError, match="no SampleNet"):
        IRADPreprocessor(weights=str(tmp_path / "r.safetensors"))
    x = np.random.default_rng(0).uniform(size=(1, 3, 32, 32)).astype(np.float32)
    assert IRADPreprocessor(weights=str(tmp_path / "r.safetensors"), sampler="none")(x)[0].shape == x.shape


def _refusal(tmp_path, capsys, reconstruction: dict | None = None, spec: dict | None = None) -> str:
    r, s = save_irad(tmp_path, reconstruction, spec=spec)
    with pytest.raises(SystemExit) as stop:
        import_irad_cli(r, s, tmp_path / "irad.safetensors")
    assert stop.value.code == 2 and not (tmp_path / "irad.safetensors").exists()
    message = capsys.readouterr().err
    assert message.count("\n") == 1  # one line
    return message


def test_irad_import_refuses_a_wrong_shape(tmp_path, capsys):
    state = random_state("official_irad_liif_paper")
    state["imnet.layers.2.weight"] = torch.zeros(256, 255)
    assert "mlp.2.weight" in _refusal(tmp_path, capsys, state)


def test_irad_import_refuses_a_missing_and_an_unknown_key(tmp_path, capsys):
    state = random_state("official_irad_liif_paper")
    del state["encoder.body.3.body.0.weight"]
    assert "body.3.body.0.weight" in _refusal(tmp_path, capsys, state)
    state = random_state("official_irad_liif_paper")
    state["encoder.tail.0.weight"] = torch.zeros(3)
    assert "encoder.tail.0.weight" in _refusal(tmp_path, capsys, state)


def test_irad_import_refuses_an_unknown_encoder(tmp_path, capsys):
    spec = json.loads(json.dumps(LIIF_SPEC))
    spec["args"]["encoder_spec"]["name"] = "swinir"
    message = _refusal(tmp_path, capsys, spec=spec)
    assert "swinir" in message and "rdn" in message


def test_a_checkpoint_whose_pickle_runs_a_command_is_refused(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    r = tmp_path / "Reconstruction.pt"
    torch.save({"model": {**LIIF_SPEC, "sd": {"x": Payload()}}}, r)
    with pytest.raises(SystemExit):
        main(["import-weights", "irad", "--reconstruction", str(r), "--output", str(tmp_path / "o.safetensors")])
    assert "system" in capsys.readouterr().err
    assert not marker.exists()


def test_dir_import_of_a_dataparallel_state_dict(tmp_path, capsys):
    path = tmp_path / "pre_trained.pth"
    torch.save({f"module.{key}": value for key, value in random_state("official_dir_vit_paper").items()}, path)
    main(["import-weights", "dir", "--checkpoint", str(path), "--output", str(tmp_path / "dir.safetensors")])
    report = json.loads(capsys.readouterr().out)
    assert report["mapped"] == 120 and sorted(report["dropped"]) == sorted(
        ["patchify.weight", "patchify.bias", "decoder.head.weight", "decoder.head.bias"])
    args = report["spec"]["args"]
    assert (args["value_range"], args["view_placement"], args["output"], args["patch_layout"], args["norm_eps"]) == (
        "unit", "first", "token_conv", "c p1 p2", 1e-5)
    assert (args["image_size"], args["patch_size"], args["width"], args["encoder_depth"], args["decoder_depth"]) == (
        32, 2, 192, 8, 2)
    defence = DIRPreprocessor(weights=str(tmp_path / "dir.safetensors"), seed=0)
    # Their positions are stored (tokens, 1, width), ours (1, tokens, width).
    torch.testing.assert_close(defence.denoiser.encoder_position[0],
                               random_state("official_dir_vit_paper")["encoder.pos_embedding"][:, 0])
    x = np.random.default_rng(0).uniform(size=(2, 3, 32, 32)).astype(np.float32)
    assert defence(x)[0].shape == x.shape


def test_dir_import_of_a_whole_pickled_module(tmp_path, capsys):
    path = tmp_path / "pre_model.pt"
    state = save_whole_module(path)
    main(["import-weights", "dir", "--checkpoint", str(path), "--output", str(tmp_path / "dir.safetensors")])
    report = json.loads(capsys.readouterr().out)
    assert report["spec"]["args"]["value_range"] == "symmetric" and report["mapped"] == 120
    defence = DIRPreprocessor(weights=str(tmp_path / "dir.safetensors"))
    torch.testing.assert_close(defence.denoiser.head.weight, state["conv1.weight"])


def test_dir_import_refuses_the_target_and_a_wrong_shape(tmp_path, capsys):
    target = tmp_path / "resnet.pth"
    torch.save({f"module.{k}": v for k, v in random_state("official_dir_resnet18_target").items()}, target)
    with pytest.raises(SystemExit):
        main(["import-weights", "dir", "--checkpoint", str(target), "--output", str(tmp_path / "d.safetensors")])
    assert "convert-victim" in capsys.readouterr().err
    state = random_state("official_dir_vit_paper")
    state["encoder.transformer.3.mlp.fc1.weight"] = torch.zeros(768, 190)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(SystemExit):
        main(["import-weights", "dir", "--checkpoint", str(tmp_path / "bad.pth"), "--output",
              str(tmp_path / "d.safetensors")])
    assert "encoder.3.mlp.fc1.weight" in capsys.readouterr().err


def test_import_weights_help_documents_both_methods(capsys):
    with pytest.raises(SystemExit):
        main(["import-weights", "--help"])
    text = capsys.readouterr().out
    assert "irad" in text and "dir" in text
    for method, option in (("irad", "--samplenet"), ("dir", "--value-range")):
        with pytest.raises(SystemExit):
            main(["import-weights", method, "--help"])
        assert option in capsys.readouterr().out


def test_irad_import_refuses_a_non_finite_tensor(tmp_path, capsys):
    state = random_state("official_irad_liif_paper")
    state["imnet.layers.0.bias"][3] = float("nan")
    assert "mlp.0.bias' holds NaN" in _refusal(tmp_path, capsys, state)
