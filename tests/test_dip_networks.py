"""Batched DIP networks: n networks optimised together follow the trajectories of n networks alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from art_purifiers.nn import dip
from art_purifiers.nn.dip import DIP_PRESETS, BatchedSkipNet, SkipNetConfig, dip_trace

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


@pytest.mark.parametrize("preset", ["small", "medium"])
def test_dip_trace_of_a_batch_equals_one_image_at_a_time_in_float64(preset):
    """The method is exact: in float64 a batch of full-size networks fitted together gives each image's trace alone.
    (In float32 the traces drift apart after a few steps: Adam's early, nearly sign-sized steps amplify rounding
    differences of small gradients, whichever way the arithmetic is ordered.)"""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))

        def trace(x, seeds):
            outputs = []
            dip_trace(x, DIP_PRESETS[preset], 4, generators(seeds), on_iteration=lambda t, o, m: outputs.append(o))
            return torch.stack(outputs)

        batched = trace(images, [1, 2, 3])
        alone = torch.cat([trace(images[i : i + 1], [seed]) for i, seed in enumerate([1, 2, 3])], dim=1)
        torch.testing.assert_close(batched, alone, atol=1e-9, rtol=0)
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize(
    ("kernel", "stride", "size"),
    # col2im input gradient; transposed-convolution input gradient (large map); results of under 16 pixels (stored
    # transposed); strided; strided to a 2x2 map; non-square; a 5x5 kernel.
    [(3, 1, (9, 9)), (3, 1, (22, 22)), (3, 1, (4, 5)), (3, 2, (11, 11)), (3, 2, (5, 5)), (3, 1, (12, 7)),
     (5, 1, (9, 8))],
)
@pytest.mark.parametrize("workspace", [1, 1 << 24], ids=["chunk-per-network", "one-chunk"])
@pytest.mark.parametrize("input_grad", [True, False])
def test_batched_convolution_equals_grouped_conv2d(monkeypatch, kernel, stride, size, workspace, input_grad):
    monkeypatch.setattr(dip, "_WORKSPACE_BYTES", workspace)
    n, cin, cout = 3, 4, 5
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, cin, *size, generator=generator, dtype=torch.float64).requires_grad_(input_grad)
    weight = torch.randn(n * cout, cin, kernel, kernel, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(n * cout, generator=generator, dtype=torch.float64, requires_grad=True)
    out = dip._BatchedConv2d.apply(x, weight, bias, kernel, stride)
    expected = F.conv2d(x.reshape(1, n * cin, *size), weight, bias, stride=stride, groups=n)
    expected = expected.view(n, cout, *expected.shape[-2:])
    torch.testing.assert_close(out, expected)
    grad = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    inputs = (x, weight, bias) if input_grad else (weight, bias)
    for got, want in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(expected, inputs, grad),
                         strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("kernel", "stride"), [(1, 1), (3, 1), (3, 2)])
def test_convolution_layer_matches_one_network_at_a_time(kernel, stride):
    n, cin, cout = 3, 4, 6
    torch.manual_seed(0)
    layer = dip._Conv(n, cin, cout, kernel, stride)
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(n, cin, 10, 9, requires_grad=True)
    out = layer(x)
    grad = torch.randn_like(out)
    out.backward(grad)
    for i in range(n):
        alone = dip._Conv(1, cin, cout, kernel, stride)
        with torch.no_grad():
            alone.weight.copy_(layer.weight[i * cout : (i + 1) * cout])
            alone.bias.copy_(layer.bias[i * cout : (i + 1) * cout])
        xi = x[i : i + 1].detach().requires_grad_()
        out_i = alone(xi)
        out_i.backward(grad[i : i + 1])
        torch.testing.assert_close(out_i, out[i : i + 1])
        torch.testing.assert_close(xi.grad, x.grad[i : i + 1])
        torch.testing.assert_close(alone.weight.grad, layer.weight.grad[i * cout : (i + 1) * cout])
        torch.testing.assert_close(alone.bias.grad, layer.bias.grad[i * cout : (i + 1) * cout])


@pytest.mark.parametrize("optimise_input", [False, True])
def test_dip_trace_in_groups_matches_one_group(monkeypatch, optimise_input):
    images = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def trace():
        steps = []
        dip_trace(images, TINY, 3, generators(range(20, 25)), optimise_input=optimise_input,
                  on_iteration=lambda t, out, mse: steps.append((t, out, mse)))
        return steps

    together = trace()
    largest = max(p.numel() * p.element_size() for p in BatchedSkipNet(1, TINY).parameters())
    monkeypatch.setattr(dip, "_CPU_TENSOR_BYTES", 2 * largest)
    assert dip._groups(5, TINY, 3, torch.device("cpu")) == [(0, 2), (2, 3), (3, 5)]
    grouped = trace()
    assert [t for t, _, _ in grouped] == [1, 2, 3]
    for (_, out_a, mse_a), (_, out_b, mse_b) in zip(together, grouped, strict=True):
        torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(mse_a, mse_b, atol=1e-6, rtol=1e-4)



def test_flat_buckets_hold_consecutive_parameters_under_the_limit():
    net = BatchedSkipNet(3, TINY)
    net.reset_parameters(generators([0, 1, 2]))
    parameters = list(net.parameters())
    values = [p.detach().clone() for p in parameters]
    limit = 2048
    buckets = dip._flat_buckets(parameters, limit)
    assert sum(count for _, count in buckets) == len(parameters) and len(buckets) > 1
    start = 0
    for flat, count in buckets:
        members = parameters[start : start + count]
        assert flat.numel() == sum(p.numel() for p in members)
        assert flat.numel() * flat.element_size() <= limit or count == 1
        offset = 0
        for parameter in members:  # a view of the flat tensor, at its place, with its values
            assert parameter.data_ptr() == flat.data_ptr() + offset * flat.element_size()
            offset += parameter.numel()
        start += count
    for parameter, value in zip(parameters, values, strict=True):
        assert parameter.is_leaf and parameter.requires_grad and torch.equal(parameter, value)


@pytest.mark.parametrize("optimise_input", [False, True])
def test_flat_adam_is_per_parameter_adam_to_the_bit(monkeypatch, optimise_input, one_thread):
    # On the CPU, dip_trace's Adam updates a few flat tensors that the parameters are views of (here forced into
    # several, some parameters larger than the limit); torch's Adam over the parameters one by one gives the same bits.
    monkeypatch.setattr(dip, "_ADAM_BUCKET_BYTES", 1024)
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    got = []
    dip_trace(images, TINY, 12, generators([1, 2, 3]), optimise_input=optimise_input,
              on_iteration=lambda t, out, mse: got.append(out))
    seeds = generators([1, 2, 3])
    net = BatchedSkipNet(3, TINY)
    net.reset_parameters(seeds)
    noise = torch.stack([torch.rand((TINY.input_depth, 16, 16), generator=g) * 0.1 for g in seeds])
    noise.requires_grad_(optimise_input)
    adam = torch.optim.Adam([*net.parameters(), *([noise] if optimise_input else [])], lr=0.01, foreach=False)
    for out_got in got:
        out = net.train()(noise)
        ((out - images) ** 2).mean(dim=(1, 2, 3)).sum().backward()
        adam.step()
        adam.zero_grad()
        torch.testing.assert_close(out_got, out.detach(), atol=0, rtol=0)

def test_invalid_configuration():
    with pytest.raises(ValueError, match="one entry per scale"):
        SkipNetConfig(channels=(4, 8), skip=(2,))
    with pytest.raises(ValueError, match="generator"):
        BatchedSkipNet(2, TINY).reset_parameters(generators([0]))
