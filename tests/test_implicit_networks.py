"""The plain networks behind IRAD: EDSR encoder, LIIF decoder, implicit representation, SampleNet."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F

from art_purifiers import IRADPreprocessor
from art_purifiers.data import load_sample
from art_purifiers.nn import liif
from art_purifiers.nn.edsr import EDSREncoder
from art_purifiers.nn.implicit import ImplicitRepresentation, query_grid
from art_purifiers.nn.liif import LocalImplicitDecoder, pixel_centres
from art_purifiers.nn.samplenet import SampleNet


def liif_reference(decoder: LocalImplicitDecoder, features: torch.Tensor, coords: torch.Tensor,
                   cells: torch.Tensor) -> torch.Tensor:
    """LIIF's computation as its paper states it (the decoder's before it was reordered): for each corner, sample
    the unfolded feature map and the latent centres at the nearest latent and run the whole MLP on
    ``[feature, offset, cell]``; blend the four answers by the opposite areas."""
    b, c, h, w = features.shape
    if decoder.unfold:
        features = F.unfold(features, 3, padding=1).view(b, c * 9, h, w)
    rows = -1 + (2 * torch.arange(h, dtype=features.dtype) + 1) / h
    cols = -1 + (2 * torch.arange(w, dtype=features.dtype) + 1) / w
    centres = torch.stack(torch.meshgrid(rows, cols, indexing="ij")).unsqueeze(0).expand(b, 2, h, w)
    scale, half = coords.new_tensor([h, w]), coords.new_tensor([1 / h, 1 / w])
    corners = [(-1, -1), (-1, 1), (1, -1), (1, 1)] if decoder.local_ensemble else [(0, 0)]
    answers, areas = [], []
    for corner in corners:
        shifted = coords + coords.new_tensor(corner) * half + (1e-6 if decoder.local_ensemble else 0.0)
        grid = shifted.clamp(-1 + 1e-6, 1 - 1e-6).flip(-1).unsqueeze(1)
        latent, centre = (F.grid_sample(t, grid, mode="nearest", align_corners=False)[:, :, 0].transpose(1, 2)
                          for t in (features, centres))
        relative = (coords - centre) * scale
        answers.append(decoder.mlp(torch.cat([latent, relative] + ([cells * scale] if decoder.cell_decode else []),
                                             dim=-1)))
        areas.append((relative[..., 0] * relative[..., 1]).abs() + 1e-9)
    if not decoder.local_ensemble:
        return answers[0]
    total = areas[0] + areas[1] + areas[2] + areas[3]
    return sum(a * (area / total).unsqueeze(-1) for a, area in zip(answers, reversed(areas), strict=True))


class ReferenceDecoder(LocalImplicitDecoder):
    """The decoder's weights run by :func:`liif_reference`."""

    forward = liif_reference


def _queries(batch: int, h: int, w: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries at the pixel centres of a finer grid, on latent borders, on the image's edges and at random points,
    with random cells."""
    fine, _ = query_grid(batch, 2 * h, 2 * w, None, None)
    border = (pixel_centres(h, w).reshape(1, -1, 2) + torch.tensor([1.0 / h, 1.0 / w])).clamp(max=1)
    edges = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [0.0, 1.0]])
    generator = torch.Generator().manual_seed(0)
    random = torch.rand(batch, 40, 2, generator=generator) * 2 - 1
    coords = torch.cat([fine, border.expand(batch, -1, 2), edges.expand(batch, 4, 2), random], dim=1).to(dtype)
    return coords, (torch.rand(batch, coords.shape[1], 2, generator=generator) * 0.5).to(dtype)


def _one_pass(decoder: LocalImplicitDecoder, features: torch.Tensor, coords: torch.Tensor,
              cells: torch.Tensor) -> torch.Tensor:
    """The decoder's answers in a single pass over every image and query."""
    return decoder._decode(features, coords, cells, coords.shape[1])


def _value_and_gradients(decoder: LocalImplicitDecoder, coords: torch.Tensor,
                         cells: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The decoder's answers on fixed random features, and the gradients of a weighted sum of them with respect to
    the features and the coordinates."""
    features = torch.randn(3, 5, 6, 7, generator=torch.Generator().manual_seed(1)).to(coords.dtype).requires_grad_()
    points = coords.clone().requires_grad_(True)
    out = decoder(features, points, cells)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return (out, *torch.autograd.grad((out * weights).sum(), (features, points)))


@pytest.mark.parametrize(("unfold", "local_ensemble", "cell_decode", "hidden"),
                         [(True, True, True, (16, 8)), (False, False, False, (16,)), (True, False, True, (8,)),
                          (False, True, False, ())])
def test_decoder_equals_liif_reference_with_gradients(unfold, local_ensemble, cell_decode, hidden):
    """The reordered decoder (first layer as a convolution, gathered per corner) is LIIF's computation: in float64
    the answers and the gradients (features and coordinates) agree to rounding, for every decoder option."""
    torch.manual_seed(0)
    decoder = LocalImplicitDecoder(5, 3, hidden=hidden, unfold=unfold, local_ensemble=local_ensemble,
                                   cell_decode=cell_decode, max_rows=100).double()
    reference = copy.deepcopy(decoder)
    reference.__class__ = ReferenceDecoder
    coords, cells = _queries(3, 6, 7, torch.float64)
    for new, old in zip(_value_and_gradients(decoder, coords, cells), _value_and_gradients(reference, coords, cells),
                        strict=True):
        torch.testing.assert_close(new, old, rtol=0, atol=1e-10)


def test_shipped_irad_equals_liif_reference_in_float32():
    """The shipped IRAD purifies the bundled images as with LIIF's own computation and a channels-first encoder (the
    implementation before the CPU speed-up), up to float32 rounding."""
    defence = IRADPreprocessor()
    reference = copy.deepcopy(defence)
    for network in (reference.representation, reference.samplenet):
        network.decoder.__class__ = ReferenceDecoder
    reference.representation.encode = lambda images: reference.representation.encoder(images * 2 - 1)
    x = torch.from_numpy(load_sample()[0][:16])
    with torch.no_grad():
        difference = (defence.forward(x)[0] - reference.forward(x)[0]).abs().max()
    assert difference <= 1e-5


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


@pytest.mark.parametrize(("max_rows", "passes"), [(10, 381), (1100, 3), (2100, 2), (65536, 2)])
def test_chunked_queries_equal_one_pass(max_rows, passes, monkeypatch):
    """3 images of 254 queries (1016 rows each): passes of 2 queries (10 rows), of one image (1100), of two images
    (2100), or the default bounded on a CPU by CPU_ROWS (here 2100) give the answers and gradients of one pass."""
    torch.manual_seed(0)
    whole = LocalImplicitDecoder(5, 3, hidden=(8,))
    whole.forward = functools.partial(_one_pass, whole)
    chunked = LocalImplicitDecoder(5, 3, hidden=(8,), max_rows=max_rows)
    chunked.load_state_dict(whole.state_dict())
    coords, cells = _queries(3, 6, 7, torch.float32)
    expected = _value_and_gradients(whole, coords, cells)
    monkeypatch.setattr(liif, "CPU_ROWS", 2100)
    calls = []
    query = LocalImplicitDecoder._query
    monkeypatch.setattr(LocalImplicitDecoder, "_query", lambda *args: calls.append(1) or query(*args))
    for one, parts in zip(expected, _value_and_gradients(chunked, coords, cells), strict=True):
        torch.testing.assert_close(parts, one)
    assert len(calls) == passes


@pytest.mark.parametrize("max_rows", [0, -5, 2.5, "64", True, None])
def test_decoder_refuses_bad_max_rows(max_rows):
    with pytest.raises(ValueError, match="max_rows"):
        LocalImplicitDecoder(4, 3, max_rows=max_rows)


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
