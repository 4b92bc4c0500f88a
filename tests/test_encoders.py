"""LIIF encoders (EDSR, RDN, RCAN) and the renaming of the IRAD authors' encoder tensors (weights/official.py).

Each equivalence test writes random tensors in the authors' key layout by hand, renames them with our rules, loads
them strictly into our network, and compares it with a reference forward written here with ``torch.nn.functional``
over the authors' layout, so a wrong rule, shape or operation fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from art_purifiers.nn import EDSREncoder, RCANEncoder, RDNEncoder
from art_purifiers.nn.registry import create_network
from art_purifiers.weights.official import OFFICIAL_ENCODERS, encoder_key_rules, encoder_spec, map_keys

MANIFEST = Path(__file__).parent / "data" / "official" / "official_irad_liif_paper.json"
RDN_LAYOUTS = {"A": (20, 6, 32), "B": (16, 8, 64)}  # written out again here, independently of the module


# --- the authors' key layout, by hand -------------------------------------------------------------------------------

def _add_conv(state: dict, key: str, cin: int, cout: int, kernel: int, generator: torch.Generator) -> None:
    scale = (cin * kernel * kernel) ** -0.5
    state[f"{key}.weight"] = torch.randn(cout, cin, kernel, kernel, generator=generator, dtype=torch.float64) * scale
    state[f"{key}.bias"] = torch.randn(cout, generator=generator, dtype=torch.float64) * 0.1


def _mean_shifts(state: dict, generator: torch.Generator) -> None:
    _add_conv(state, "sub_mean", 3, 3, 1, generator)
    _add_conv(state, "add_mean", 3, 3, 1, generator)


def authors_edsr(blocks: int, feats: int, seed: int = 0) -> dict:
    generator, state = torch.Generator().manual_seed(seed), {}
    _mean_shifts(state, generator)
    _add_conv(state, "head.0", 3, feats, 3, generator)
    for i in range(blocks):
        _add_conv(state, f"body.{i}.body.0", feats, feats, 3, generator)
        _add_conv(state, f"body.{i}.body.2", feats, feats, 3, generator)
    _add_conv(state, f"body.{blocks}", feats, feats, 3, generator)
    return state


def authors_rdn(g0: int, ksize: int, config: str, seed: int = 0) -> dict:
    depth, layers, growth = RDN_LAYOUTS[config]
    generator, state = torch.Generator().manual_seed(seed), {}
    _add_conv(state, "SFENet1", 3, g0, ksize, generator)
    _add_conv(state, "SFENet2", g0, g0, ksize, generator)
    for i in range(depth):
        for c in range(layers):
            _add_conv(state, f"RDBs.{i}.convs.{c}.conv.0", g0 + c * growth, growth, 3, generator)  # always 3x3
        _add_conv(state, f"RDBs.{i}.LFF", g0 + layers * growth, g0, 1, generator)
    _add_conv(state, "GFF.0", depth * g0, g0, 1, generator)
    _add_conv(state, "GFF.1", g0, g0, ksize, generator)
    return state


def authors_rcan(groups: int, blocks: int, feats: int, reduction: int, seed: int = 0) -> dict:
    generator, state = torch.Generator().manual_seed(seed), {}
    _mean_shifts(state, generator)
    _add_conv(state, "head.0", 3, feats, 3, generator)
    for g in range(groups):
        for b in range(blocks):
            _add_conv(state, f"body.{g}.body.{b}.body.0", feats, feats, 3, generator)
            _add_conv(state, f"body.{g}.body.{b}.body.2", feats, feats, 3, generator)
            _add_conv(state, f"body.{g}.body.{b}.body.3.conv_du.0", feats, feats // reduction, 1, generator)
            _add_conv(state, f"body.{g}.body.{b}.body.3.conv_du.2", feats // reduction, feats, 1, generator)
        _add_conv(state, f"body.{g}.body.{blocks}", feats, feats, 3, generator)
    _add_conv(state, f"body.{groups}", feats, feats, 3, generator)
    return state


# --- reference forwards over the authors' layout --------------------------------------------------------------------

def _conv(x: torch.Tensor, state: dict, key: str) -> torch.Tensor:
    weight = state[f"{key}.weight"]
    return F.conv2d(x, weight, state[f"{key}.bias"], padding=weight.shape[-1] // 2)


def reference_edsr(state: dict, x: torch.Tensor, blocks: int, res_scale: float) -> torch.Tensor:
    head = _conv(x, state, "head.0")
    y = head
    for i in range(blocks):
        y = y + res_scale * _conv(F.relu(_conv(y, state, f"body.{i}.body.0")), state, f"body.{i}.body.2")
    return head + _conv(y, state, f"body.{blocks}")


def reference_rdn(state: dict, x: torch.Tensor, config: str) -> torch.Tensor:
    depth, layers, _ = RDN_LAYOUTS[config]
    first = _conv(x, state, "SFENet1")
    y = _conv(first, state, "SFENet2")
    outputs = []
    for i in range(depth):
        dense = y
        for c in range(layers):
            dense = torch.cat([dense, F.relu(_conv(dense, state, f"RDBs.{i}.convs.{c}.conv.0"))], dim=1)
        y = y + _conv(dense, state, f"RDBs.{i}.LFF")
        outputs.append(y)
    return first + _conv(_conv(torch.cat(outputs, dim=1), state, "GFF.0"), state, "GFF.1")


def reference_rcan(state: dict, x: torch.Tensor, groups: int, blocks: int) -> torch.Tensor:
    head = _conv(x, state, "head.0")
    y = head
    for g in range(groups):
        group_in = y
        for b in range(blocks):
            key = f"body.{g}.body.{b}.body"
            r = _conv(F.relu(_conv(y, state, f"{key}.0")), state, f"{key}.2")
            gate = torch.sigmoid(_conv(F.relu(_conv(F.adaptive_avg_pool2d(r, 1), state, f"{key}.3.conv_du.0")),
                                       state, f"{key}.3.conv_du.2"))
            y = y + r * gate  # no residual scaling
        y = group_in + _conv(y, state, f"body.{g}.body.{blocks}")
    return head + _conv(y, state, f"body.{groups}")


def _load(authors_name: str, authors_args: dict, state: dict) -> tuple[torch.nn.Module, list[str]]:
    network = create_network(encoder_spec({"name": authors_name, "args": {**authors_args, "no_upsampling": True}}))
    rules, dropped = encoder_key_rules(authors_name)
    mapped, dropped_keys = map_keys(state, rules, dropped)
    network.double().load_state_dict(mapped, strict=True)
    return network.eval(), dropped_keys


# --- equivalence ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("authors_name, res_scale", [("edsr-baseline", 1.0), ("edsr", 0.1)])
def test_edsr_matches_authors_layout_reference(authors_name, res_scale):
    state = authors_edsr(blocks=3, feats=8)
    network, dropped_keys = _load(authors_name, {"n_resblocks": 3, "n_feats": 8}, state)
    assert isinstance(network, EDSREncoder) and network.network_spec["args"]["res_scale"] == res_scale
    assert dropped_keys == ["sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"]
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(network(x), reference_edsr(state, x, 3, res_scale), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("config, ksize, size", [("A", 3, 16), ("A", 5, 12), ("B", 3, 6)])
def test_rdn_matches_authors_layout_reference(config, ksize, size):
    state = authors_rdn(g0=8, ksize=ksize, config=config)
    network, dropped_keys = _load("rdn", {"G0": 8, "RDNkSize": ksize, "RDNconfig": config, "scale": 2}, state)
    assert isinstance(network, RDNEncoder) and network.out_dim == 8 and dropped_keys == []
    x = torch.rand(2, 3, size, size + 1, dtype=torch.float64)
    with torch.no_grad():
        out = network(x)
        assert out.shape == (2, 8, size, size + 1)
        torch.testing.assert_close(out, reference_rdn(state, x, config), rtol=1e-10, atol=1e-10)


def test_rcan_matches_authors_layout_reference():
    state = authors_rcan(groups=2, blocks=3, feats=16, reduction=4)
    args = {"n_resgroups": 2, "n_resblocks": 3, "n_feats": 16, "reduction": 4, "rgb_range": 1}
    network, dropped_keys = _load("rcan", args, state)
    assert isinstance(network, RCANEncoder) and network.out_dim == 16
    assert sorted(dropped_keys) == ["add_mean.bias", "add_mean.weight", "sub_mean.bias", "sub_mean.weight"]
    x = torch.rand(2, 3, 10, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(network(x), reference_rcan(state, x, 2, 3), rtol=1e-10, atol=1e-10)


def test_authors_liif_manifest_maps_onto_paper_edsr():
    """The key/shape manifest of the authors' IRAD LIIF (edsr-baseline) fits our paper EDSR exactly."""
    shapes = json.loads(MANIFEST.read_text())
    encoder = {key: torch.empty(shape) for key, shape in shapes.items() if key.startswith("encoder.")}
    mapped, dropped_keys = map_keys(encoder, *encoder_key_rules("edsr-baseline"), prefix="encoder.")
    shifts = [f"encoder.{module}.{tensor}" for module in ("sub_mean", "add_mean") for tensor in ("weight", "bias")]
    assert sorted(dropped_keys) == sorted(shifts)
    ours = create_network(encoder_spec({"name": "edsr-baseline", "args": {"no_upsampling": True}})).state_dict()
    assert {key: tuple(t.shape) for key, t in mapped.items()} == {key: tuple(t.shape) for key, t in ours.items()}


# --- specs ----------------------------------------------------------------------------------------------------------

def test_encoder_spec_translates_arguments_and_defaults():
    assert encoder_spec({"name": "rdn", "args": {"G0": 32, "RDNkSize": 5, "RDNconfig": "A", "scale": 4,
                                                 "no_upsampling": True}}) == \
        {"name": "rdn", "args": {"features": 32, "kernel_size": 5, "config": "A", "in_channels": 3}}
    assert encoder_spec({"name": "rcan", "args": {"no_upsampling": True}}) == \
        {"name": "rcan", "args": {"groups": 10, "blocks": 20, "features": 64, "reduction": 16, "in_channels": 3}}
    assert encoder_spec({"name": "edsr", "args": {"no_upsampling": True}})["args"] == \
        {"blocks": 32, "features": 256, "res_scale": 0.1, "in_channels": 3}
    assert encoder_spec({"name": "edsr-baseline", "args": {"no_upsampling": True, "res_scale": 1}})["args"] == \
        {"blocks": 16, "features": 64, "res_scale": 1.0, "in_channels": 3}


def test_unknown_encoder_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="swinir") as error:
        encoder_spec({"name": "swinir", "args": {"no_upsampling": True}})
    for name in ("edsr-baseline", "edsr", "rdn", "rcan"):
        assert repr(name) in str(error.value)
    with pytest.raises(ValueError, match="rcan"):
        encoder_key_rules("swinir")


@pytest.mark.parametrize("args", [{"no_upsampling": False}, {}, {"no_upsampling": 1}])
def test_encoder_with_upsampler_is_refused(args):
    with pytest.raises(ValueError, match="no_upsampling=True"):
        encoder_spec({"name": "rdn", "args": args})


def test_unknown_authors_argument_is_refused():
    with pytest.raises(ValueError, match="n_resgroups"):
        encoder_spec({"name": "rdn", "args": {"n_resgroups": 3, "no_upsampling": True}})


# --- map_keys -------------------------------------------------------------------------------------------------------

def test_unmapped_keys_are_named():
    state = authors_rdn(g0=4, ksize=3, config="A")
    state["UPNet.0.weight"] = torch.zeros(1)
    state["RDBs.0.convs.0.conv.1.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"2 key\(s\)") as error:
        map_keys(state, *encoder_key_rules("rdn"))
    assert "'UPNet.0.weight'" in str(error.value) and "'RDBs.0.convs.0.conv.1.weight'" in str(error.value)


def test_prefix_is_stripped_and_keys_without_it_are_named():
    state = {f"encoder.{key}": value for key, value in authors_rcan(1, 1, 8, 4).items()}
    mapped, dropped_keys = map_keys(state, *encoder_key_rules("rcan"), prefix="encoder.")
    assert "groups.0.blocks.0.attention.reduce.weight" in mapped and "encoder.sub_mean.weight" in dropped_keys
    assert set(mapped) == set(RCANEncoder(1, 1, 8, 4).state_dict())
    with pytest.raises(ValueError, match="imnet.layers.0.weight"):
        map_keys({**state, "imnet.layers.0.weight": torch.zeros(1)}, *encoder_key_rules("rcan"), prefix="encoder.")


def test_two_keys_renamed_to_one_are_refused():
    with pytest.raises(ValueError, match="both renamed"):
        map_keys({"a.weight": 0, "b.weight": 1}, [(r"[ab]\.weight", "x.weight")], [])


def test_every_official_encoder_has_rules():
    for name, entry in OFFICIAL_ENCODERS.items():
        rules, dropped = encoder_key_rules(name)
        assert rules and all(isinstance(p, str) and isinstance(r, str) for p, r in rules)
        assert entry.network in {"edsr", "rdn", "rcan"}


# --- networks -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("network", [
    lambda: EDSREncoder(2, 8, res_scale=0.5),
    lambda: RDNEncoder(features=8, kernel_size=5, config="A"),
    lambda: RCANEncoder(groups=2, blocks=1, features=8, reduction=2),
])
def test_create_network_rebuilds_encoder_from_its_spec(network):
    original = network()
    rebuilt = create_network(original.network_spec)
    assert type(rebuilt) is type(original) and rebuilt.network_spec == original.network_spec
    rebuilt.load_state_dict(original.state_dict(), strict=True)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), original(x))


def test_paper_sizes():
    assert sum(p.numel() for p in RDNEncoder().parameters()) == 21_973_952
    assert sum(p.numel() for p in RCANEncoder().parameters()) == 15_295_200


@pytest.mark.parametrize("make, match", [
    (lambda: RDNEncoder(config="C"), "config"),
    (lambda: RDNEncoder(kernel_size=4), "kernel_size"),
    (lambda: RDNEncoder(features=0), "features"),
    (lambda: RDNEncoder(features=True), "features"),
    (lambda: RDNEncoder(in_channels=2.5), "in_channels"),
    (lambda: RCANEncoder(groups=0), "groups"),
    (lambda: RCANEncoder(blocks=-1), "blocks"),
    (lambda: RCANEncoder(features=8, reduction=16), "reduction"),
    (lambda: RCANEncoder(reduction=0), "reduction"),
])
def test_bad_constructor_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()
