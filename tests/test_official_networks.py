"""The authors' variants of our networks (IRAD's SampleNet, DIR's masked ViT): semantics checked without their code."""

from __future__ import annotations

import pytest
import torch

from art_purifiers.nn import ImplicitRepresentation, MaskedViTDenoiser, SampleNet, complementary_masks
from art_purifiers.nn.implicit import query_grid
from art_purifiers.nn.masked_vit import token_order
from art_purifiers.nn.registry import create_network

TINY_EDSR = {"name": "edsr", "args": {"blocks": 1, "features": 8}}


def test_samplenet_shift_units():
    torch.manual_seed(0)
    pixels = SampleNet(8, hidden=(16,))
    normalised = SampleNet(8, hidden=(16,), units="normalised")
    normalised.load_state_dict(pixels.state_dict())
    codes = torch.randn(2, 8, 6, 10)
    # One normalised unit is H/2 pixels along rows and W/2 along columns.
    expected = pixels(codes, 6, 10) * torch.tensor([3.0, 5.0])
    torch.testing.assert_close(normalised(codes, 6, 10), expected)
    with pytest.raises(ValueError, match="units"):
        SampleNet(8, units="metres")


def test_samplenet_own_encoder_reads_the_raw_image():
    torch.manual_seed(0)
    own = SampleNet(hidden=(16,), encoder=TINY_EDSR, units="normalised")
    images = torch.rand(2, 3, 6, 6)
    with pytest.raises(ValueError, match="own encoder"):
        own(torch.zeros(2, 8, 6, 6), 6, 6)
    coords, cells = query_grid(2, 6, 6, None, None)
    raw = own.decoder(own.encoder(images), coords, cells).view(2, 6, 6, 2)
    torch.testing.assert_close(own(None, 6, 6, images=images), raw * 3.0)
    shifted = own.decoder(own.encoder(images * 2 - 1), coords, cells).view(2, 6, 6, 2) * 3.0
    assert not torch.allclose(own(None, 6, 6, images=images), shifted)
    assert own.network_spec["args"]["encoder"] == TINY_EDSR


def test_representation_takes_an_encoder_spec_and_decoder_options():
    representation = ImplicitRepresentation(hidden=(16,), encoder=TINY_EDSR, local_ensemble=False,
                                            cell_decode=False)
    assert representation.decoder.mlp[0].in_features == 8 * 9 + 2
    rebuilt = create_network(representation.network_spec)
    rebuilt.load_state_dict(representation.state_dict())
    images = torch.rand(1, 3, 5, 5)
    torch.testing.assert_close(rebuilt(images), representation(images))


def _vit(**options) -> MaskedViTDenoiser:
    return MaskedViTDenoiser(image_size=8, patch_size=2, width=24, heads=2, encoder_depth=1, decoder_depth=1,
                             **options)


def test_token_conv_output_and_channel_major_patch_layout():
    vit = _vit(output="token_conv", patch_layout="c p1 p2")
    assert isinstance(vit.head, torch.nn.Conv1d) and vit.head.kernel_size == (2,)  # 24 = 12 pixels x 2
    assert not hasattr(vit, "decoder_norm")
    # Token t's 12 outputs, laid out (c, p1, p2): value 100 t + 4 c + 2 p1 + p2.
    t, c, p1, p2 = torch.meshgrid(torch.arange(16), torch.arange(3), torch.arange(2), torch.arange(2), indexing="ij")
    patches = (100 * t + 4 * c + 2 * p1 + p2).reshape(1, 16, 12).float()
    image = vit._unpatchify(patches)
    # Pixel (row 3, col 4) lies in token (1, 2) = 6, at p1 = 1, p2 = 0.
    assert image[0, 2, 3, 4] == 100 * 6 + 4 * 2 + 2 * 1 + 0
    with pytest.raises(ValueError, match="multiple of channels"):
        MaskedViTDenoiser(image_size=8, patch_size=2, width=20, heads=2, output="token_conv")


def test_value_range_unit_is_the_symmetric_network_without_scaling():
    torch.manual_seed(0)
    symmetric, unit = _vit(), _vit(value_range="unit")
    unit.load_state_dict(symmetric.state_dict())
    x = torch.rand(2, 3, 8, 8)
    views = complementary_masks(2, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(symmetric(x, views), (unit(x * 2 - 1, views) + 1) / 2)


def test_first_view_placement_decodes_every_view_at_the_first_views_positions():
    vit = _vit(view_placement="first")
    order = token_order(2, 16, torch.Generator().manual_seed(3))
    views = complementary_masks(2, 16, 2, 0.5, order=order)
    positions = vit._view_positions(views, order)
    (visible_0, placed_0), (visible_1, placed_1) = positions
    assert torch.equal(visible_0, order[:, :8]) and torch.equal(placed_0, order[:, :8])
    assert torch.equal(visible_1, order[:, 8:]) and torch.equal(placed_1, order[:, :8])
    with pytest.raises(ValueError, match="pass order"):
        vit(torch.rand(2, 3, 8, 8), views)
    with pytest.raises(ValueError, match="does not match"):
        vit._view_positions(views, order.flip(1))
    own = _vit()
    (index, placed), _ = own._view_positions(views, None)
    assert torch.equal(index, placed) and bool((index.diff(dim=1) > 0).all())


def test_first_view_placement_changes_the_output_and_own_placement_ignores_the_order():
    torch.manual_seed(0)
    own, first = _vit(), _vit(view_placement="first")
    first.load_state_dict(own.state_dict())
    x = torch.rand(2, 3, 8, 8)
    order = token_order(2, 16, torch.Generator().manual_seed(3))
    views = complementary_masks(2, 16, order=order)
    with torch.no_grad():
        assert not torch.allclose(own(x, views), first(x, views, order), atol=1e-3)
        torch.testing.assert_close(own(x, views, order), own(x, views))


def test_norm_eps_reaches_every_transformer_block():
    vit = _vit(norm_eps=1e-5)
    norms = [module for module in vit.encoder.modules() if isinstance(module, torch.nn.LayerNorm)]
    assert norms and all(norm.eps == 1e-5 for norm in norms)
    assert all(norm.eps == 1e-6 for norm in _vit().decoder.modules() if isinstance(norm, torch.nn.LayerNorm))


@pytest.mark.parametrize("option, value", [("output", "conv"), ("patch_layout", "c p2 p1"), ("value_range", "wide"),
                                           ("view_placement", "last"), ("norm_eps", 0.0)])
def test_masked_vit_refuses_unknown_variants(option, value):
    with pytest.raises(ValueError, match=option):
        _vit(**{option: value})
