"""Batched DIP networks: n networks optimised together follow the trajectories of n networks alone."""

from __future__ import annotations

import pytest
import torch

from art_purifiers.nn.dip import DIP_PRESETS, BatchedSkipNet, SkipNetConfig

TINY = SkipNetConfig(channels=(4, 8), skip=(2, 2))


def generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("name", sorted(DIP_PRESETS))
def test_presets_map_noise_to_images(name):
    net = BatchedSkipNet(2, DIP_PRESETS[name])
    net.reset_parameters(generators([0, 1]))
    with torch.no_grad():
        out = net(torch.rand(2, DIP_PRESETS[name].input_depth, 32, 32))
    assert out.shape == (2, 3, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_weights_depend_only_on_the_networks_generator():
    batched = BatchedSkipNet(3, TINY)
    batched.reset_parameters(generators([5, 6, 7]))
    single = BatchedSkipNet(1, TINY)
    single.reset_parameters(generators([6]))
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(batched.network_state(1)[name], tensor)


def test_batched_optimisation_matches_one_at_a_time():
    seeds, n, steps = [11, 12, 13], 3, 5
    torch.manual_seed(0)
    noise, targets = torch.rand(n, TINY.input_depth, 12, 10), torch.rand(n, 3, 12, 10)
    batched = BatchedSkipNet(n, TINY)
    batched.reset_parameters(generators(seeds))
    optimiser = torch.optim.Adam(batched.parameters(), lr=0.01)
    for _ in range(steps):
        # The sum of per-image mean squared errors gives every network its own image's gradient.
        loss = ((batched(noise) - targets) ** 2).mean(dim=(1, 2, 3)).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    for i, seed in enumerate(seeds):
        alone = BatchedSkipNet(1, TINY)
        alone.reset_parameters(generators([seed]))
        optimiser = torch.optim.Adam(alone.parameters(), lr=0.01)
        for _ in range(steps):
            loss = ((alone(noise[i : i + 1]) - targets[i : i + 1]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            torch.testing.assert_close(alone(noise[i : i + 1]), batched(noise)[i : i + 1], atol=1e-5, rtol=1e-4)


def test_invalid_configuration():
    with pytest.raises(ValueError, match="one entry per scale"):
        SkipNetConfig(channels=(4, 8), skip=(2,))
    with pytest.raises(ValueError, match="generator"):
        BatchedSkipNet(2, TINY).reset_parameters(generators([0]))
