"""Deployable defences, the encoder/head split, fingerprints and cache keys."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from conftest import TinyCNN
from defences_under_contract import TINY_IRAD, ConvPurifier, embedding_identity
from torch import nn

from art_purifiers import IRADPreprocessor
from art_purifiers.cli import main
from art_purifiers.defences import ARTPreprocessor, make_defence
from art_purifiers.deploy import DefenceChain, EmbeddingDefence
from art_purifiers.evaluation import AdversarialCache, AttackSpec, evaluate
from art_purifiers.methods import register_method, unregister_method
from art_purifiers.models import load_victim, split_victim
from art_purifiers.nn import ImplicitRepresentation, SampleNet
from art_purifiers.training.irad import export_weights
from art_purifiers.weights import load_safetensors, read_metadata, save_safetensors


def test_split_of_bundled_victim_and_explicit_split():
    victim = load_victim()
    encoder, head = split_victim(victim)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert encoder(x).shape == (2, 64)
        torch.testing.assert_close(head(encoder(x)), victim(x))
    explicit = (nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    assert split_victim(nn.Sequential(*explicit), *explicit) == explicit


def test_split_errors_are_clear():
    with pytest.raises(ValueError, match="Pass encoder= and head="):
        split_victim(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)))
    with pytest.raises(ValueError, match="both encoder and head"):
        split_victim(TinyCNN(), encoder=nn.Identity())


def test_split_of_timm_model():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", num_classes=10).eval()
    encoder, head = split_victim(model)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(head(encoder(x)), model(x), atol=1e-5, rtol=1e-5)


def test_identity_embedding_defence_equals_victim(tiny_model, images):
    victim_logits = tiny_model(torch.from_numpy(images)).detach().numpy()
    predictions = embedding_identity().deploy(tiny_model).classifier().predict(images)
    np.testing.assert_allclose(predictions, victim_logits, atol=1e-6)


def test_chain_collects_preprocessors_and_model_changes(tiny_model):
    purifier = ConvPurifier(device_type="cpu")
    deployment = DefenceChain([purifier, embedding_identity()]).deploy(tiny_model)
    assert deployment.preprocessors == [purifier] and deployment.model is not tiny_model
    with pytest.raises(ValueError, match="one or more"):
        DefenceChain([])


def test_harness_evaluates_art_numpy_defence_chained_with_ours(tiny_model, images, labels):
    """An ART numpy defence with ours: wrapped as ARTPreprocessor and chained, the harness evaluates the chain
    (raw ART JpegCompression next to ours would raise ART's NotImplementedError, see test_contract)."""
    chain = DefenceChain([ARTPreprocessor("JpegCompression", options={"quality": 75}, device_type="cpu"),
                          ConvPurifier(gradient="bpda", device_type="cpu")])
    table = evaluate(tiny_model, {"jpeg+conv": chain}, images, labels, threats=("clean", "bpda"),
                     attack=AttackSpec("fgsm"))
    rows = {(row.defence, row.threat): row for row in table.rows}
    assert rows[("jpeg+conv", "bpda")].ra is not None and rows[("jpeg+conv", "clean")].n == len(images)


def test_bpda_through_a_model_change_needs_equal_shapes(tiny_model, images):
    deployment = EmbeddingDefence(nn.Linear(64, 32), gradient="bpda").deploy(tiny_model)
    with pytest.raises(ValueError, match="keep the embedding's shape"):
        deployment.classifier().predict(images)


def _irad_file(path, seed: int):
    torch.manual_seed(seed)
    representation = ImplicitRepresentation(TINY_IRAD.blocks, TINY_IRAD.features, TINY_IRAD.hidden)
    samplenet = SampleNet(TINY_IRAD.features, TINY_IRAD.samplenet_hidden, TINY_IRAD.max_shift)
    export_weights(representation, samplenet, TINY_IRAD, path)
    return path


def test_fingerprint_names_the_weights(tmp_path):
    """Two weight files, or one changed byte of one weight, give different fingerprints."""
    first = IRADPreprocessor(_irad_file(tmp_path / "a.safetensors", 0))
    assert first.fingerprint() == IRADPreprocessor(_irad_file(tmp_path / "same.safetensors", 0)).fingerprint()
    assert first.fingerprint() != IRADPreprocessor(_irad_file(tmp_path / "b.safetensors", 1)).fingerprint()
    tensors = load_safetensors(tmp_path / "a.safetensors")
    key = sorted(tensors)[0]
    raw = tensors[key].contiguous().view(torch.uint8).clone()
    raw.view(-1)[0] ^= 1  # flip one bit of one byte
    tensors[key] = raw.view(tensors[key].dtype).view(tensors[key].shape)
    save_safetensors(tensors, tmp_path / "flipped.safetensors", read_metadata(tmp_path / "a.safetensors"))
    assert IRADPreprocessor(tmp_path / "flipped.safetensors").fingerprint() != first.fingerprint()


def test_bpda_cache_entries_differ_between_weight_files(tmp_path, tiny_model, images, labels):
    """``--defence irad --defence irad:weights=other --threat bpda``: each defence gets its own examples."""
    defences = {"a": IRADPreprocessor(_irad_file(tmp_path / "a.safetensors", 0), device_type="cpu"),
                "b": IRADPreprocessor(_irad_file(tmp_path / "b.safetensors", 1), device_type="cpu")}
    cache = tmp_path / "cache"
    spec = AttackSpec("fgsm")
    evaluate(tiny_model, defences, images, labels, threats=("bpda",), attack=spec, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2
    evaluate(tiny_model, {"a": defences["a"]}, images, labels, threats=("bpda",), attack=spec, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2  # the same defence hits its entry


def test_corrupt_cache_entries_are_recomputed(tmp_path, tiny_model, images, labels, caplog):
    cache = tmp_path / "cache"
    spec = AttackSpec("fgsm")
    first = evaluate(tiny_model, {}, images, labels, threats=("oblivious",), attack=spec, cache_dir=cache)
    (entry,) = cache.glob("*.npz")
    corruptions = [b"", b"not a zip", None]
    for corruption in corruptions:
        if corruption is None:  # a valid archive whose examples exceed the budget
            np.savez_compressed(entry, x_adv=np.clip(images + 0.5, 0, 1), seconds=np.float64(1))
        else:
            entry.write_bytes(corruption)
        with caplog.at_level(logging.WARNING):
            again = evaluate(tiny_model, {}, images, labels, threats=("oblivious",), attack=spec, cache_dir=cache)
        assert "rejected" in caplog.text and "recomputing" in caplog.text
        assert again.rows[0].ra == first.rows[0].ra
        caplog.clear()


def test_cache_rejects_wrong_shape_and_nan(tmp_path, images):
    cache = AdversarialCache(tmp_path)
    cache.put("k", images[:2], 1.0)
    assert cache.get("k", images) is None and not (tmp_path / "k.npz").exists()
    bad = images.copy()
    bad[0, 0, 0, 0] = np.nan
    cache.put("k", bad, 1.0)
    assert cache.get("k", images) is None
    cache.put("k", images, 1.0)
    assert cache.get("k", images, ("inf", 8 / 255))[1] == 1.0


THREATS = ["clean", "oblivious", "bpda", "adaptive", "eot", "decision"]


def test_model_changing_double_runs_through_cli_under_every_threat(tmp_path):
    register_method("embedding-identity", embedding_identity)
    try:
        out = tmp_path / "table.json"
        code = main(["evaluate", "--quiet", "--defence", "embedding-identity", "--n", "4", "--threat", *THREATS,
                     "--attack", "pgd", "--iterations", "2", "--queries", "30", "--no-cache", "--json", str(out)])
    finally:
        unregister_method("embedding-identity")
    assert code == 0
    rows = {(r["defence"], r["threat"]): r for r in json.loads(out.read_text())["rows"]}
    assert {threat for defence, threat in rows if defence == "embedding-identity"} == set(THREATS)
    for threat in ("clean", "oblivious", "bpda", "adaptive"):  # the identity changes nothing
        assert rows[("embedding-identity", threat)]["ra"] == rows[("none", "oblivious" if threat != "clean"
                                                                   else "clean")]["ra"]
    assert "deterministic" in rows[("embedding-identity", "eot")]["note"]


@pytest.mark.parametrize("spec", ["art:JpegCompression:quality=75", "art:FeatureSqueezing:bit_depth=5",
                                  "art:SpatialSmoothing:window_size=2"])
def test_art_defences_run_through_cli(spec, tmp_path):
    out = tmp_path / "table.json"
    assert main(["evaluate", "--quiet", "--defence", spec, "--n", "4", "--threat", "clean", "oblivious", "bpda",
                 "adaptive", "--attack", "fgsm", "--no-cache", "--json", str(out)]) == 0
    rows = {(r["defence"], r["threat"]): r for r in json.loads(out.read_text())["rows"]}
    assert rows[(spec, "bpda")]["ra"] is not None
    assert "not differentiable" in rows[(spec, "adaptive")]["note"]


def test_art_defence_spec_errors():
    with pytest.raises(ValueError, match="must be one of"):
        make_defence("art:PixelDefend")
    with pytest.raises(ValueError, match="Unknown or managed option"):
        make_defence("art:JpegCompression:qualty=75")
    with pytest.raises(ValueError, match="Unknown parameter"):
        make_defence("resampling:foo=1")
