"""The full gradient of the DIP defences (``gradient="full"``): its forward pass is the defence, its gradient
matches central finite differences of the whole defence in float64, and it is not BPDA's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from benchmark_scripts import load_benchmark
from defences_under_contract import TINY_DIP, dip_victim
from torch import nn

from art_purifiers.defences.dip import DIPDefendPreprocessor, DIPPreprocessor
from art_purifiers.nn.dip import BatchedSkipNet, SkipNetConfig, dip_snapshots
from art_purifiers.nn.dip_gradient import (
    adam_update,
    dead_parameters,
    differentiable_dip_snapshots,
    differentiable_dip_trace,
)

#: The gradient check's image side: the smallest the two-scale tiny network accepts, rounded up to a multiple of 4.
SIDE = 12


def generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def tiny_victim() -> nn.Module:
    """A small classifier of ``SIDE x SIDE`` images, in float64 (the gradient check's precision), with weights
    scaled up so that its labels change along a 12-iteration trace (the DIP defence then has boundary pairs): the
    victim of ``benchmarks/dip_full_gradient_check.py``."""
    return load_benchmark("dip_full_gradient_check").steep_victim()


def dip_factory(victim: nn.Module):
    # Warm-up 0 and no SSIM gate, so that the short trace has label changes and the on-boundary path runs.
    return lambda **kw: DIPPreprocessor(victim, TINY_DIP, iterations=12, snapshots=6, warmup=0, ssim_threshold=-1,
                                        grid=8, keep=2, **kw)


def dipdefend_factory(_: nn.Module):
    return lambda **kw: DIPDefendPreprocessor(TINY_DIP, iterations=12, smoothing=0.5, input_jitter=0.03, **kw)


def test_adam_update_is_torch_adam_to_the_bit():
    torch.manual_seed(0)
    param = torch.randn(1000)
    reference = param.clone().requires_grad_()
    optimiser = torch.optim.Adam([reference], lr=0.01, foreach=False, fused=False)
    m, v = torch.zeros_like(param), torch.zeros_like(param)
    for step in range(1, 6):
        grad = torch.randn(1000)
        reference.grad = grad.clone()
        optimiser.step()
        param, m, v = adam_update(param, grad, m, v, step, 0.01)
        assert torch.equal(param, reference.detach())


@pytest.mark.parametrize("jitter", [0.0, 0.05], ids=["fixed-input", "jittered-input"])
def test_forward_is_dip_trace_to_the_bit(jitter, one_thread):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16)
    iterations = [3, 7, 12, 20]
    expected = dip_snapshots(x, TINY_DIP, iterations, generators([1, 2, 3]), input_jitter=jitter)
    got = differentiable_dip_snapshots(x.requires_grad_(), TINY_DIP, iterations, generators([1, 2, 3]),
                                       input_jitter=jitter, checkpoint_every=4)
    assert torch.equal(got.detach(), expected)


@pytest.mark.parametrize("factory", [dip_factory, dipdefend_factory], ids=["dip", "dipdefend"])
def test_full_mode_purifies_as_the_defence(factory, one_thread):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    make = factory(dip_victim())
    with torch.no_grad():
        expected = make(gradient="bpda").purify_with_seeds(x, [5, 6])
    got = make(gradient="full", checkpoint_every=5).purify_with_seeds(x.clone().requires_grad_(), [5, 6])
    assert got.requires_grad and torch.equal(got.detach(), expected)


def whole_defence(defence, x: torch.Tensor, seeds: list[int], weights: torch.Tensor, boundary: dict) -> torch.Tensor:
    """``<weights, defence(x)>`` at fixed seeds; the DIP defence's on-boundary images are collected in
    ``boundary`` (the same steps as ``purify_with_seeds``)."""
    if isinstance(defence, DIPPreprocessor):
        iterations = defence.snapshot_iterations().astype(int)
        snaps = defence.trace(x, seeds, iterations)
        decisions = defence.decide(x.detach(), snaps.detach())
        out = defence.reconstruct(x, snaps, iterations, decisions, boundary)
    else:
        out = defence.purify_with_seeds(x, seeds)
    return (out * weights).sum()


@pytest.mark.parametrize("factory", [dip_factory, dipdefend_factory], ids=["dip", "dipdefend"])
def test_full_gradient_matches_finite_differences(factory):
    """The check of ``docs/defences/dip.md``: in float64, the full gradient of the whole defence (fit, choices,
    reconstruction) against central differences along random directions and single pixels, same seeds."""
    defence = factory(tiny_victim())(gradient="full", checkpoint_every=5)
    rng = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, SIDE, SIDE, generator=rng, dtype=torch.float64) * 0.8 + 0.1
    weights = torch.randn(x.shape, generator=rng, dtype=torch.float64)
    seeds, boundary = [5, 6], {}
    xg = x.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(whole_defence(defence, xg, seeds, weights, boundary), xg)
    if isinstance(defence, DIPPreprocessor):
        assert boundary, "the check must cover the on-boundary interpolation"
    directions = [torch.randn(x.shape, generator=rng, dtype=torch.float64) for _ in range(2)]
    for pixel in [(0, 0, 3, 4), (1, 2, 7, 1)]:
        directions.append(torch.zeros_like(x))
        directions[-1][pixel] = 1.0
    h = 1e-7  # DIP's fit bends sharply: at 1e-6 the truncation error reaches 1% here, at 1e-5 a choice flips
    with torch.no_grad():
        for direction in directions:
            numeric = (whole_defence(defence, x + h * direction, seeds, weights, {})
                       - whole_defence(defence, x - h * direction, seeds, weights, {})) / (2 * h)
            analytic = (gradient * direction).sum()
            assert abs(float(numeric - analytic)) <= 0.05 * abs(float(numeric)), (float(numeric), float(analytic))


@pytest.mark.parametrize("factory", [dip_factory, dipdefend_factory], ids=["dip", "dipdefend"])
def test_full_gradient_is_not_bpda(factory):
    # BPDA's gradient of <w, defence(x)> is w itself; the full one must differ (no silent fall-back).
    make = factory(dip_victim())
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    gradients = []
    for mode in ("bpda", "full"):
        xg = x.clone().requires_grad_()
        (make(gradient=mode, seed=3).forward(xg)[0] * weights).sum().backward()
        gradients.append(xg.grad)
    torch.testing.assert_close(gradients[0], weights)
    assert float((gradients[1] - weights).norm() / weights.norm()) > 0.5


def test_checkpoint_spacing_changes_no_gradient():
    x = torch.rand(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights = torch.randn(4, *x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gradients = []
    for every in (1, 3, 100):
        xg = x.clone().requires_grad_()
        snaps = differentiable_dip_snapshots(xg, TINY_DIP, [2, 5, 9, 10], generators([1, 2]), input_jitter=0.05,
                                             checkpoint_every=every)
        (snaps * weights).sum().backward()
        gradients.append(xg.grad)
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gradients[2], gradients[0], rtol=1e-9, atol=1e-12)


def test_dead_parameters_reach_no_output():
    net = BatchedSkipNet(1, TINY_DIP)
    net.reset_parameters(generators([0]))
    net = net.double().train()
    noise = torch.rand(1, TINY_DIP.input_depth, 16, 16, dtype=torch.float64)
    reference = net(noise)
    dead = dead_parameters(net)
    assert dead and all(name.endswith("bias") for name in dead)
    for name, _ in net.named_parameters():
        changed = copy.deepcopy(net)
        with torch.no_grad():
            dict(changed.named_parameters())[name].add_(0.5)
        with torch.no_grad():
            moved = float((changed(noise) - reference).abs().max())
        assert (moved < 1e-12) == (name in dead), (name, moved)


@pytest.mark.parametrize("factory", [dip_factory, dipdefend_factory], ids=["dip", "dipdefend"])
def test_art_loss_gradient_with_eot(factory, tiny_model, images, labels):
    make = factory(dip_victim())
    one_hot = np.eye(10, dtype=np.float32)[labels[:2]]
    gradients = []
    for mode in ("bpda", "full"):
        classifier = make(gradient=mode, seed=None).deploy(tiny_model, eot=2).classifier()
        gradients.append(classifier.loss_gradient(images[:2], one_hot))
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in gradients)
    assert np.linalg.norm(gradients[1] - gradients[0]) > 0.1 * np.linalg.norm(gradients[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"gradient": "exact"}, "gradient='full'"), ({"gradient": "fast"}, "gradient must be one of"),
     ({"checkpoint_every": 0}, "checkpoint_every"), ({"checkpoint_every": 2.5}, "checkpoint_every"),
     ({"checkpoint_every": True}, "checkpoint_every"), ({"checkpoint_every": "10"}, "checkpoint_every")],
)
@pytest.mark.parametrize("factory", [dip_factory, dipdefend_factory], ids=["dip", "dipdefend"])
def test_bad_full_gradient_settings(factory, kwargs, message):
    make = factory(dip_victim())
    with pytest.raises(ValueError, match=message):
        make(**kwargs)
    with pytest.raises(ValueError, match=message):
        make().set_params(**kwargs)


def test_bad_differentiable_trace_arguments():
    x = torch.rand(2, 3, 16, 16)

    def select(t, out, mse):
        return torch.ones(1, 2, dtype=torch.bool)

    with pytest.raises(ValueError, match="checkpoint_every"):
        differentiable_dip_trace(x, TINY_DIP, 4, generators([1, 2]), select, 1, checkpoint_every=0)
    with pytest.raises(ValueError, match="slots"):
        differentiable_dip_trace(x, TINY_DIP, 4, generators([1, 2]), select, 0)
    with pytest.raises(ValueError, match="one generator per image"):
        differentiable_dip_trace(x, TINY_DIP, 4, generators([1]), select, 1)
    with pytest.raises(ValueError, match="increasing"):
        differentiable_dip_snapshots(x, TINY_DIP, [4, 2], generators([1, 2]))
    with pytest.raises(ValueError, match="at least"):
        differentiable_dip_snapshots(torch.rand(1, 3, 4, 4), SkipNetConfig(), [2], generators([1]))


def test_eot_threat_model_keeps_the_full_gradient():
    """``--threat eot`` attacks a DIP defence with the gradient it was given: ``full`` through the fit (not BPDA, the
    fallback of defences that are not differentiable), ``bpda`` when it says so."""
    from art_purifiers.evaluation.runner import eot_gradient

    assert eot_gradient(DIPDefendPreprocessor(TINY_DIP, iterations=12, gradient="full")) == "full"
    assert eot_gradient(DIPDefendPreprocessor(TINY_DIP, iterations=12, gradient="bpda")) == "bpda"


def test_adam_update_has_finite_derivatives_where_a_gradient_is_zero():
    """A gradient element exactly 0 at Adam's first step leaves its second moment at 0, where the square root's
    derivative is infinite: the update's derivative must stay finite (it was NaN, seen under ART's AutoAttack)."""
    grad = torch.tensor([0.0, 0.5, -0.25], dtype=torch.float64, requires_grad=True)
    param, state = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    updated, exp_avg, exp_avg_sq = adam_update(param, grad, state, state, 1, 0.01)
    assert updated[0] == 0 and exp_avg_sq[0] == 0
    (derivative,) = torch.autograd.grad((updated + exp_avg + exp_avg_sq).sum(), grad)
    assert torch.isfinite(derivative).all()
