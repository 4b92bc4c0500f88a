"""Deep-image-prior networks (Ulyanov et al., 2018), many independent ones evaluated as one.

:class:`BatchedSkipNet` holds ``n`` independent U-Nets with skip connections (the DIP ``skip`` architecture:
strided-convolution downsampling, bilinear upsampling, batch norm, LeakyReLU, sigmoid output) as grouped
convolutions: network ``i`` owns channel block ``i`` of every layer, and a batch of ``n`` images is laid out as
one sample with ``n x C`` channels. Batch norm on that single sample normalises each network's channels over its
own image, exactly what a DIP network optimised on one image does, so ``n`` networks optimised together follow
the same trajectories as ``n`` networks optimised one at a time (given the same initial weights, inputs and an
element-wise optimiser such as Adam on the *sum* of the per-image losses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SkipNetConfig:
    """Architecture of one DIP network.

    :param channels: Channels of each scale (down and up paths), coarsest last; ``len`` = number of scales.
    :param skip: Channels of each scale's skip connection (``0``: none).
    :param input_depth: Channels of the noise input.
    :param kernel: Kernel size of the 3x3-style convolutions.
    """

    channels: tuple[int, ...] = (16, 32, 64, 128)
    skip: tuple[int, ...] = (4, 4, 4, 4)
    input_depth: int = 3
    kernel: int = 3

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.skip) or not self.channels:
            raise ValueError("channels and skip need one entry per scale.")


#: Network sizes of the sensitivity study (the paper's Table 3 names small/medium/large; its exact widths were
#: lost from the text, so these follow the DIP ``skip`` family).
DIP_PRESETS = {
    "small": SkipNetConfig(channels=(8, 16, 32), skip=(4, 4, 4)),
    "medium": SkipNetConfig(channels=(16, 32, 64, 128), skip=(4, 4, 4, 4)),
    # Four scales at most: a fifth would bring a 32x32 image to 1x1 maps, where batch norm is undefined.
    "large": SkipNetConfig(channels=(32, 64, 128, 256), skip=(8, 8, 8, 8)),
}


def _join(n: int, *parts: torch.Tensor) -> torch.Tensor:
    """Concatenate grouped tensors ``(1, n*C_k, H, W)`` per network: ``(1, n*sum(C_k), H, W)``."""
    _, _, h, w = parts[0].shape
    return torch.cat([p.view(1, n, -1, h, w) for p in parts], dim=2).view(1, -1, h, w)


class _Conv(nn.Module):
    """``n`` independent convolutions as one grouped convolution. Edge padding replicates the border (DIP uses
    reflection, which fails on the 1x1 maps that deep presets reach at CIFAR size)."""

    def __init__(self, n: int, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.n, self.cin, self.cout, self.kernel, self.stride = n, cin, cout, kernel, stride
        self.weight = nn.Parameter(torch.empty(n * cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(n * cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel // 2
        if pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, groups=self.n)


class _Norm(nn.BatchNorm2d):
    def __init__(self, n: int, channels: int) -> None:
        super().__init__(n * channels)
        self.n = n


def _block(n: int, cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(_Conv(n, cin, cout, kernel, stride), _Norm(n, cout), nn.LeakyReLU(0.2))


class _Scale(nn.Module):
    """One scale of the U-Net: a skip branch and a down-deeper-up branch, joined and convolved."""

    def __init__(self, n: int, cin: int, channels: int, skip: int, deeper: nn.Module | None, deeper_out: int,
                 kernel: int) -> None:
        super().__init__()
        self.n = n
        self.skip = _block(n, cin, skip, 1) if skip else None
        self.down = nn.Sequential(_block(n, cin, channels, kernel, stride=2), _block(n, channels, channels, kernel))
        self.deeper = deeper
        self.join_norm = _Norm(n, skip + deeper_out)
        self.up = nn.Sequential(_block(n, skip + deeper_out, channels, kernel), _block(n, channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = self.down(x)
        if self.deeper is not None:
            deep = self.deeper(deep)
        deep = F.interpolate(deep, size=x.shape[-2:], mode="bilinear", align_corners=False)
        joined = deep if self.skip is None else _join(self.n, self.skip(x), deep)
        return self.up(self.join_norm(joined))


class BatchedSkipNet(nn.Module):
    """``n`` independent DIP ``skip`` networks mapping ``(n, input_depth, H, W)`` noise to ``(n, 3, H, W)`` images.

    :param n: Number of networks (one per image).
    :param config: Architecture of each network.
    :param out_channels: Image channels.
    """

    def __init__(self, n: int, config: SkipNetConfig = SkipNetConfig(), out_channels: int = 3) -> None:
        super().__init__()
        self.n, self.config = n, config
        deeper, deeper_out = None, 0
        scales = list(zip(config.channels, config.skip, strict=True))
        for level in range(len(scales) - 1, -1, -1):
            channels, skip = scales[level]
            cin = config.input_depth if level == 0 else scales[level - 1][0]
            deeper = _Scale(n, cin, channels, skip, deeper, deeper_out if deeper is not None else channels,
                            config.kernel)
            deeper_out = channels
        self.body = deeper
        self.head = _Conv(n, config.channels[0], out_channels, 1)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        n, c, h, w = noise.shape
        out = self.head(self.body(noise.reshape(1, n * c, h, w)))
        return torch.sigmoid(out).view(n, -1, h, w)

    @torch.no_grad()
    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        """Initialise network ``i`` from ``generators[i]`` alone (convolutions: PyTorch's default uniform
        ``+-1/sqrt(fan_in)``; batch norm: ones and zeros), layer by layer in a fixed order, so a network's weights
        do not depend on ``n`` or on its position in the batch."""
        if len(generators) != self.n:
            raise ValueError(f"Need one generator per network ({self.n}), got {len(generators)}.")
        for module in self.modules():
            if isinstance(module, _Conv):
                bound = 1 / math.sqrt(module.cin * module.kernel**2)
                w = module.weight.view(self.n, module.cout, module.cin, module.kernel, module.kernel)
                b = module.bias.view(self.n, module.cout)
                for i, generator in enumerate(generators):
                    w[i].copy_(torch.rand(w[i].shape, generator=generator) * 2 * bound - bound)
                    b[i].copy_(torch.rand(b[i].shape, generator=generator) * 2 * bound - bound)
            elif isinstance(module, _Norm):
                module.reset_parameters()

    def network_state(self, index: int) -> dict[str, torch.Tensor]:
        """The parameters and buffers of network ``index`` alone, loadable into a ``BatchedSkipNet(1, config)``."""
        state = {}
        for name, tensor in self.state_dict().items():
            if tensor.ndim == 0:  # batch norm's step counter is shared
                state[name] = tensor.clone()
            else:
                state[name] = tensor.view(self.n, -1, *tensor.shape[1:])[index].clone()
        return state


def dip_trace(
    images: torch.Tensor,
    config: SkipNetConfig,
    iterations: int,
    generators: Sequence[torch.Generator],
    lr: float = 0.01,
    noise_scale: float = 0.1,
    optimise_input: bool = False,
    on_iteration=None,
) -> None:
    """Fit one DIP network per image to ``images`` (``(n, C, H, W)`` in ``[0, 1]``) with Adam on the MSE.

    Network ``i`` and its noise input ``U(0, noise_scale)`` come from ``generators[i]`` alone. After the forward
    pass of every iteration ``t`` (1-based), ``on_iteration(t, outputs, mse)`` receives the detached outputs
    ``(n, C, H, W)`` (the trace's ``t``-th image, made by the parameters after ``t - 1`` updates) and the
    per-image MSE ``(n,)``. Runs with gradients enabled whatever the caller's mode.
    """
    n, c, h, w = images.shape
    device = images.device
    with torch.enable_grad():
        net = BatchedSkipNet(n, config, out_channels=c)
        net.reset_parameters(generators)
        net = net.to(device).train()
        noise = torch.stack([torch.rand((config.input_depth, h, w), generator=g) * noise_scale for g in generators])
        noise = noise.to(device).requires_grad_(optimise_input)
        parameters = [*net.parameters(), *([noise] if optimise_input else [])]
        optimiser = torch.optim.Adam(parameters, lr=lr)
        target = images.detach()
        for t in range(1, iterations + 1):
            outputs = net(noise)
            mse = ((outputs - target) ** 2).mean(dim=(1, 2, 3))
            if on_iteration is not None:
                on_iteration(t, outputs.detach(), mse.detach())
            optimiser.zero_grad(set_to_none=True)
            mse.sum().backward()  # the sum gives each network exactly its own image's gradient
            optimiser.step()
