"""Behaviour of PurifierPreprocessor that the contract suite does not reach directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from defences_under_contract import ConvPurifier

from art_purifiers.base import PurifierPreprocessor


def test_registered_networks_are_frozen_and_follow_the_input():
    defence = ConvPurifier(device_type="cpu")
    assert not defence.denoiser.training
    assert all(not p.requires_grad for p in defence.denoiser.parameters())
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    out, _ = defence.forward(x)
    out.sum().backward()
    assert x.grad is not None and all(p.grad is None for p in defence.denoiser.parameters())


def test_bpda_value_is_purified_and_gradient_is_identity():
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    bpda = ConvPurifier(gradient="bpda", device_type="cpu")
    out, _ = bpda.forward(x)
    torch.testing.assert_close(out, ConvPurifier(device_type="cpu").forward(x)[0])
    out.backward(torch.full_like(out, 3.0))
    torch.testing.assert_close(x.grad, torch.full_like(x, 3.0))


def test_output_is_clipped_to_clip_values():
    class Overshoot(PurifierPreprocessor):
        def purify(self, x, generator):
            return x * 3 - 1

    out, _ = Overshoot(device_type="cpu")(np.random.default_rng(0).uniform(size=(2, 3, 4, 4)).astype(np.float32))
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_non_differentiable_defence_refuses_exact():
    class Rounding(PurifierPreprocessor):
        differentiable = False

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._check_params()

        def purify(self, x, generator):
            return torch.round(x * 4) / 4

    with pytest.raises(ValueError, match="not differentiable"):
        Rounding(gradient="exact")
    defence = Rounding(gradient="bpda", device_type="cpu")
    with pytest.raises(ValueError, match="not differentiable"):
        defence.set_params(gradient="exact")


def test_unseeded_generators_differ_and_seeded_repeat():
    defence = ConvPurifier(device_type="cpu")
    assert defence._call_generator().initial_seed() != defence._call_generator().initial_seed()
    defence.set_params(seed=7)
    assert defence._call_generator().initial_seed() == defence._call_generator().initial_seed() == 7


class GradientStepPurifier(PurifierPreprocessor):
    """Test double that optimises internally: one gradient step of total variation per image."""

    differentiable = False
    needs_grad = True

    def __init__(self, **kwargs):
        super().__init__(gradient="bpda", **kwargs)
        self._check_params()

    def purify(self, x, generator):
        z = x.detach().clone().requires_grad_(True)
        tv = (z[..., 1:, :] - z[..., :-1, :]).abs().sum() + (z[..., :, 1:] - z[..., :, :-1]).abs().sum()
        (grad,) = torch.autograd.grad(tv, z)
        return (z - 0.01 * grad).detach()


def test_internal_autograd_works_under_arts_no_grad(tiny_model):
    from conftest import make_classifier

    x = np.random.default_rng(0).uniform(size=(3, 3, 32, 32)).astype(np.float32)
    classifier = make_classifier(tiny_model, [GradientStepPurifier(device_type="cpu")])
    assert classifier.predict(x).shape == (3, 10)  # ART runs the defence under torch.no_grad()
    purified, _ = GradientStepPurifier(device_type="cpu")(x)
    assert not np.allclose(purified, x)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_any_float_dtype_gives_float32(dtype):
    x = np.random.default_rng(0).uniform(size=(2, 3, 8, 8)).astype(dtype)
    out, _ = ConvPurifier(device_type="cpu")(x)
    assert out.dtype == np.float32


@pytest.mark.parametrize("gradient", ["exact", "bpda"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_estimate_gradient_is_float32_like_call(gradient, dtype):
    """ART's base computes the gradient in the input's dtype; ours returns float32, like ``__call__``, with the
    values of the float32 computation."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 3, 8, 8)).astype(np.float32)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    defence = ConvPurifier(gradient=gradient, device_type="cpu")
    gradient32 = defence.estimate_gradient(x, upstream)
    out = defence.estimate_gradient(x.astype(dtype), upstream.astype(dtype))
    assert out.dtype == np.float32 and gradient32.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, gradient32, rtol=1e-2 if dtype == np.float16 else 1e-5, atol=1e-3)
