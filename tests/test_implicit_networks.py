"""The plain networks behind IRAD: EDSR encoder, LIIF decoder, implicit representation, SampleNet."""

from __future__ import annotations

import pytest
import torch

from art_purifiers.nn.edsr import EDSREncoder
from art_purifiers.nn.implicit import ImplicitRepresentation, query_grid
from art_purifiers.nn.liif import LocalImplicitDecoder, pixel_centres
from art_purifiers.nn.samplenet import SampleNet


def test_pixel_centres_are_liif_coordinates():
    grid = pixel_centres(2, 4)
    assert grid.shape == (2, 4, 2)
    torch.testing.assert_close(grid[:, 0, 0], torch.tensor([-0.5, 0.5]))
    torch.testing.assert_close(grid[0, :, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))


def test_paper_encoder_size():
    assert sum(p.numel() for p in EDSREncoder(16, 64).parameters()) == 1_220_416
    assert EDSREncoder(2, 8)(torch.rand(1, 3, 5, 7)).shape == (1, 8, 5, 7)


def test_paper_decoder_mlp_size():
    decoder = LocalImplicitDecoder(64, 3)
    assert decoder.mlp[0].in_features == 580
    assert sum(p.numel() for p in decoder.parameters()) == 346_883


def test_decoder_at_pixel_centres_reads_own_latent():
    """Without ensemble, a query on a pixel centre decodes that pixel's latent with zero offset."""
    torch.manual_seed(0)
    decoder = LocalImplicitDecoder(4, 3, hidden=(8,), unfold=False, local_ensemble=False, cell_decode=False)
    features = torch.randn(2, 4, 3, 5)
    coords, cells = query_grid(2, 3, 5, None, None)
    out = decoder(features, coords, cells)
    expected = decoder.mlp(torch.cat([features.permute(0, 2, 3, 1).reshape(2, 15, 4), torch.zeros(2, 15, 2)], -1))
    torch.testing.assert_close(out, expected)


def test_ensemble_weights_sum_to_one():
    """With a constant-output MLP the blend returns that constant at any coordinates."""
    decoder = LocalImplicitDecoder(4, 3, hidden=(8,))
    for parameter in decoder.mlp.parameters():
        torch.nn.init.zeros_(parameter)
    torch.nn.init.constant_(decoder.mlp[-1].bias, 0.7)
    coords = torch.rand(2, 50, 2) * 2 - 1
    out = decoder(torch.randn(2, 4, 6, 6), coords, torch.full((2, 50, 2), 0.3))
    torch.testing.assert_close(out, torch.full_like(out, 0.7))


def test_chunked_queries_equal_one_pass():
    torch.manual_seed(0)
    features, coords = torch.randn(2, 4, 6, 6), torch.rand(2, 36, 2) * 2 - 1
    cells = torch.full((2, 36, 2), 1 / 3)
    whole = LocalImplicitDecoder(4, 3, hidden=(8,), max_rows=10_000)
    chunked = LocalImplicitDecoder(4, 3, hidden=(8,), max_rows=10)
    chunked.load_state_dict(whole.state_dict())
    torch.testing.assert_close(chunked(features, coords, cells), whole(features, coords, cells))


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (32, 48)])
def test_representation_any_size_and_differentiable(size):
    torch.manual_seed(0)
    model = ImplicitRepresentation(blocks=1, features=8, hidden=(16,))
    x = torch.rand(2, 3, *size, requires_grad=True)
    shifts = torch.zeros(2, *size, 2, requires_grad=True)
    out = model(x, shifts)
    assert out.shape == (2, 3, *size)
    out.sum().backward()
    assert x.grad.abs().sum() > 0 and shifts.grad.abs().sum() > 0


def test_non_square_rows_and_columns_are_not_swapped():
    """With an identity encoder and a decoder returning the nearest latent, a 3x5 image renders to itself and a
    one-pixel column shift moves it left by one column (a row/column mix-up would fail both)."""
    model = ImplicitRepresentation(blocks=0, features=3, hidden=())
    model.encoder = torch.nn.Identity()
    model.decoder = LocalImplicitDecoder(3, 3, hidden=(), unfold=False, local_ensemble=False, cell_decode=False)
    with torch.no_grad():
        model.decoder.mlp[0].weight.copy_(torch.cat([torch.eye(3), torch.zeros(3, 2)], 1))
        model.decoder.mlp[0].bias.zero_()
    x = torch.rand(1, 3, 3, 5)
    torch.testing.assert_close(model(x), x)
    shifted = model(x, torch.tensor([0.0, 1.0]).expand(1, 3, 5, 2))  # one pixel right = nearest latent
    torch.testing.assert_close(shifted[..., :-1], x[..., 1:])


def test_samplenet_outputs_pixel_shifts_with_optional_bound():
    torch.manual_seed(0)
    codes = torch.randn(2, 8, 4, 6)
    shifts = SampleNet(8, hidden=(16,))(codes, 4, 6)
    assert shifts.shape == (2, 4, 6, 2)
    bounded = SampleNet(8, hidden=(16,), max_shift=0.5)
    with torch.no_grad():
        bounded.decoder.mlp[-1].bias.fill_(100.0)
    assert bounded(codes, 4, 6).abs().max() <= 0.5
    with pytest.raises(ValueError, match="max_shift"):
        SampleNet(8, max_shift=0.0)
