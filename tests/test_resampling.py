"""Behaviour of the naive resampling defence and its functional core."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from art_purifiers import ResamplingPreprocessor
from art_purifiers.nn.resampling import naive_shifts, pixel_grid, shift_resample


def ramp(h: int = 6, w: int = 9) -> torch.Tensor:
    return torch.arange(2 * 3 * h * w, dtype=torch.float32).reshape(2, 3, h, w) / (2 * 3 * h * w)


def test_pixel_grid_holds_row_and_column():
    grid = pixel_grid(2, 3)
    assert grid.shape == (2, 3, 2)
    assert grid[1, 2].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_zero_shift_is_identity(interpolation):
    x = ramp()
    assert torch.equal(shift_resample(x, torch.zeros(1, 1, 1, 2), interpolation), x)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_integer_shift_translates_with_border(interpolation):
    x = ramp()
    out = shift_resample(x, torch.tensor([1.0, 2.0]).view(1, 1, 1, 2), interpolation)
    torch.testing.assert_close(out[:, :, :-1, :-2], x[:, :, 1:, 2:])
    torch.testing.assert_close(out[:, :, -1, -1], x[:, :, -1, -1])  # border repeats the edge


def test_nearest_half_pixel_ties_round_up():
    x = ramp()
    out = shift_resample(x, torch.full((1, 1, 1, 2), 1.5), "nearest")
    torch.testing.assert_close(out[:, :, :-2, :-2], x[:, :, 2:, 2:])


def test_bilinear_matches_grid_sample():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 5, 7)
    shifts = torch.rand(2, 5, 7, 2) * 3 - 1.5
    h, w = 5, 7
    coords = pixel_grid(h, w) + shifts
    # grid_sample (align_corners=False): normalised = (2 * pixel + 1) / size - 1, last axis (x=col, y=row).
    grid = torch.stack([(2 * coords[..., 1] + 1) / w - 1, (2 * coords[..., 0] + 1) / h - 1], dim=-1)
    for padding in ("border", "zeros"):
        expected = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
        torch.testing.assert_close(shift_resample(x, shifts, "bilinear", padding), expected, atol=1e-5, rtol=1e-5)


def test_bilinear_half_pixel_shift_averages_neighbours():
    x = ramp()
    out = shift_resample(x, torch.tensor([0.0, 0.5]).view(1, 1, 1, 2), "bilinear")
    torch.testing.assert_close(out[..., :-1], (x[..., :-1] + x[..., 1:]) / 2)


def test_variant_shifts_lie_in_range_and_differ_per_pixel():
    shifts = naive_shifts("variant", 1.5, 3, 4, 5, torch.Generator().manual_seed(0))
    assert shifts.shape == (3, 4, 5, 2)
    assert float(shifts.min()) >= 0.0 and float(shifts.max()) <= 1.5
    assert shifts.std() > 0.3


def test_invariant_is_deterministic_and_variant_is_random():
    x = np.random.default_rng(0).uniform(size=(2, 3, 8, 8)).astype(np.float32)
    invariant = ResamplingPreprocessor(sampler="invariant")
    assert not invariant.randomized
    np.testing.assert_array_equal(invariant(x)[0], invariant(x)[0])
    variant = ResamplingPreprocessor(sampler="variant")
    assert variant.randomized
    assert not np.array_equal(variant(x)[0], variant(x)[0])


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 64, 64), (2, 3, 32, 48)])
def test_any_image_size(shape):
    x = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    out, _ = ResamplingPreprocessor(sampler="variant", seed=1)(x)
    assert out.shape == shape and 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interpolation": "bicubic"}, "interpolation"),
        ({"sampler": "gaussian"}, "sampler"),
        ({"magnitude": -1.0}, "magnitude"),
        ({"padding_mode": "reflect"}, "padding_mode"),
        ({"seed": -3}, "seed"),
    ],
)
def test_invalid_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResamplingPreprocessor(**kwargs)
