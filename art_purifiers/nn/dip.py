"""Deep-image-prior networks (Ulyanov et al., 2018), many independent ones evaluated as one.

:class:`BatchedSkipNet` holds ``n`` independent U-Nets with skip connections (the DIP ``skip`` architecture:
strided-convolution downsampling, bilinear upsampling, batch norm, LeakyReLU, sigmoid output) as grouped
convolutions: network ``i`` owns channel block ``i`` of every layer's parameters and sample ``i`` of every
activation ``(n, C, H, W)``. Batch norm sees the activations as one sample with ``n x C`` channels, so it
normalises each network's channels over its own image, exactly what a DIP network optimised on one image does, and
``n`` networks optimised together follow the same trajectories as ``n`` networks optimised one at a time (given the
same initial weights, inputs and an element-wise optimiser such as Adam on the *sum* of the per-image losses).

On CPU a grouped ``F.conv2d`` with ``n`` groups is slow (it gains little or nothing per image over ``n`` separate
networks), so there the convolutions are batched matrix products: ``1 x 1`` convolutions directly, larger kernels
over im2col patches (:class:`_BatchedConv2d`). A lone network takes them too, and Adam is the single-tensor
implementation, so that on CPU with one thread a network's trace is bitwise the same whatever the batch around it
(DIP's optimisation amplifies last-bit differences into different images). Elsewhere (CUDA) they stay grouped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from tqdm.auto import tqdm

from art_purifiers.checks import check_integer
from art_purifiers.nn.resampling import resize_bilinear


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
        if not isinstance(self.channels, Sequence) or not isinstance(self.skip, Sequence):
            raise ValueError(f"channels and skip must be sequences of integers, got {self.channels!r}, {self.skip!r}.")
        if len(self.channels) != len(self.skip) or not self.channels:
            raise ValueError("channels and skip need one entry per scale.")
        # Frozen: normalise through object.__setattr__ (numpy integers become int, lists become tuples).
        object.__setattr__(self, "channels", tuple(check_integer(f"channels[{i}]", c, minimum=1)
                                                   for i, c in enumerate(self.channels)))
        object.__setattr__(self, "skip", tuple(check_integer(f"skip[{i}]", c, minimum=0)
                                               for i, c in enumerate(self.skip)))
        object.__setattr__(self, "input_depth", check_integer("input_depth", self.input_depth, minimum=1))
        kernel = check_integer("kernel", self.kernel, minimum=1)
        if kernel % 2 == 0:  # "same" padding of an even kernel would grow the maps by one pixel per convolution
            raise ValueError(f"kernel must be odd, got {kernel}.")
        object.__setattr__(self, "kernel", kernel)

    @property
    def min_side(self) -> int:
        """Smallest image side the network accepts: each of its ``len(channels)`` stride-2 stages halves a side
        (rounding up), and training-mode batch norm needs coarsest maps of at least 2x2 (a 1x1 map has one value
        per channel, whose variance is undefined), so a side needs more than ``2**len(channels)`` pixels."""
        return 2 ** len(self.channels) + 1


def check_image_size(config: SkipNetConfig, height: int, width: int, owner: str = "The DIP network") -> None:
    """Raise ``ValueError`` unless ``height x width`` images are large enough for ``config``
    (:attr:`SkipNetConfig.min_side`); ``owner`` names what is refusing them."""
    side = config.min_side
    if height < side or width < side:
        raise ValueError(
            f"{owner} needs images of at least {side}x{side} pixels (its {len(config.channels)} down-sampling "
            f"stages must leave coarsest maps of at least 2x2 for batch norm), got {height}x{width}; use a network "
            "with fewer scales for smaller images."
        )


#: Network sizes of the sensitivity study (the paper's Table 3 names small/medium/large; its exact widths were
#: lost from the text, so these follow the DIP ``skip`` family).
DIP_PRESETS = {
    "small": SkipNetConfig(channels=(8, 16, 32), skip=(4, 4, 4)),
    "medium": SkipNetConfig(channels=(16, 32, 64, 128), skip=(4, 4, 4, 4)),
    # Four scales at most: a fifth would bring a 32x32 image to 1x1 maps, where batch norm is undefined.
    "large": SkipNetConfig(channels=(32, 64, 128, 256), skip=(8, 8, 8, 8)),
}


#: Bytes of im2col patches per chunk of networks: small enough to stay in cache between being written and being
#: multiplied (the patches are ``k*k`` times the input), large enough that the loop over chunks costs little.
_WORKSPACE_BYTES = 4 << 20


def _chunk(n: int, bytes_per_network: int) -> int:
    """Networks per chunk whose workspace fits ``_WORKSPACE_BYTES`` (at least one)."""
    return max(1, min(n, _WORKSPACE_BYTES // max(1, bytes_per_network)))


def _im2col(x: torch.Tensor, kernel: int, stride: int, out: torch.Tensor) -> torch.Tensor:
    """Write the ``kernel x kernel`` patches of ``x`` ``(c, C, H, W)`` into ``out`` ``(c, C*k*k, Ho*Wo)``, rows in
    the order of a convolution weight's ``(C, k, k)``: one copy of a strided view (faster than ``F.unfold``)."""
    c, channels, h, w = x.shape
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    s = x.stride()
    patches = x.as_strided((c, channels, kernel, kernel, ho, wo),
                           (s[0], s[1], s[2], s[3], stride * s[2], stride * s[3]))
    out.view(c, channels, kernel, kernel, ho, wo).copy_(patches)
    return out


def _product_buffer(like: torch.Tensor, batch: int, rows: int, columns: int) -> torch.Tensor:
    """An uninitialised ``(batch, rows, columns)`` result of batched matrix products, stored transposed when there
    are few columns (maps under 16 pixels): MKL multiplies a wide matrix by a narrow one several times slower than
    it computes the transposed product, which is what ``bmm(..., out=...)`` into a transposed buffer does."""
    if columns < 16:
        return like.new_empty(batch, columns, rows).transpose(1, 2)
    return like.new_empty(batch, rows, columns)


class _BatchedConv2d(torch.autograd.Function):
    """``n`` independent unpadded convolutions, network ``i`` applying weight block ``i`` to sample ``i``, as batched
    matrix products over im2col patches. The patches are made chunk by chunk of networks in one small buffer (and
    made again in the backward pass rather than kept), so they stay in cache and never cost a large allocation."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, kernel: int,
                stride: int) -> torch.Tensor:
        """``x`` ``(n, Cin, H, W)``, ``weight`` ``(n*Cout, Cin, k, k)``, ``bias`` ``(n*Cout,)``; returns
        ``(n, Cout, Ho, Wo)``."""
        x = x.contiguous()
        n, cin, h, w = x.shape
        cout, rows = weight.shape[0] // n, cin * kernel * kernel
        ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
        out = _product_buffer(x, n, cout, ho * wo)
        weight3, bias3 = weight.view(n, cout, rows), bias.view(n, cout, 1)
        step = _chunk(n, rows * ho * wo * x.element_size())
        cols = x.new_empty(step, rows, ho * wo)
        for i in range(0, n, step):
            j = min(n, i + step)
            torch.baddbmm(bias3[i:j], weight3[i:j], _im2col(x[i:j], kernel, stride, cols[: j - i]), out=out[i:j])
        ctx.save_for_backward(x, weight)
        ctx.kernel, ctx.stride = kernel, stride
        return out.contiguous().view(n, cout, ho, wo)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        kernel, stride = ctx.kernel, ctx.stride
        n, cin, h, w = x.shape
        _, cout, ho, wo = grad.shape
        rows, rows_t = cin * kernel * kernel, cout * kernel * kernel
        grad = grad.contiguous()
        grad3 = grad.view(n, cout, ho * wo)
        weight3 = weight.view(n, cout, rows)
        need_x, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # The input gradient of a stride-1 convolution is itself a convolution (of the zero-padded output gradient
        # with the flipped, transposed kernels): one matrix product writing it whole. It costs (H*W)/(Ho*Wo) times
        # the products of col2im, so small maps take col2im (patch gradients added back into a zeroed input).
        transposed = stride == 1 and 4 * h * w <= 5 * ho * wo
        grad_x = None
        if need_x:
            grad_x = x.new_empty(x.shape) if transposed else x.new_zeros(x.shape)
        grad_weight = x.new_empty(n, cout, rows) if need_weight else None
        grad_bias = grad3.sum(2).view(-1) if ctx.needs_input_grad[2] else None
        per_network = rows * ho * wo * need_weight + (rows_t * h * w if transposed else rows * ho * wo) * need_x
        step = _chunk(n, per_network * x.element_size())
        cols = x.new_empty(step, rows, ho * wo) if need_weight else None
        cols_x = None
        if need_x:
            cols_x = x.new_empty(step, rows_t, h * w) if transposed else _product_buffer(x, step, rows, ho * wo)
        for i in range(0, n, step):
            j = min(n, i + step)
            if grad_weight is not None:
                patches = _im2col(x[i:j], kernel, stride, cols[: j - i])
                torch.bmm(grad3[i:j], patches.transpose(1, 2), out=grad_weight[i:j])
            if grad_x is None:
                continue
            if transposed:
                flipped = weight[i * cout : j * cout].view(j - i, cout, cin, kernel, kernel).flip(3, 4)
                flipped = flipped.transpose(1, 2).reshape(j - i, cin, rows_t)
                padded = F.pad(grad[i:j], (kernel - 1,) * 4)
                patches_grad = _im2col(padded, kernel, 1, cols_x[: j - i])
                torch.bmm(flipped, patches_grad, out=grad_x[i:j].view(j - i, cin, h * w))
            else:
                # col2im: each patch entry's gradient adds into the input pixel it was copied from.
                patches_grad = torch.bmm(weight3[i:j].transpose(1, 2), grad3[i:j], out=cols_x[: j - i])
                patches_grad = patches_grad.view(j - i, cin, kernel, kernel, ho, wo)
                target = grad_x[i:j]
                for dy in range(kernel):
                    for dx in range(kernel):
                        target[:, :, dy : dy + stride * (ho - 1) + 1 : stride,
                               dx : dx + stride * (wo - 1) + 1 : stride] += patches_grad[:, :, dy, dx]
        if grad_weight is not None:
            grad_weight = grad_weight.view_as(weight)
        return grad_x, grad_weight, grad_bias, None, None


class _Conv(nn.Module):
    """``n`` independent convolutions, ``(n, Cin, H, W)`` -> ``(n, Cout, Ho, Wo)``. Edge padding replicates the
    border (DIP uses reflection, which fails on the 1x1 maps that deep presets reach at CIFAR size)."""

    def __init__(self, n: int, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.n, self.cin, self.cout, self.kernel, self.stride = n, cin, cout, kernel, stride
        self.weight = nn.Parameter(torch.empty(n * cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(n * cout))
        #: On CPU, compute through ``F.unfold`` (slower, but differentiable twice) instead of ``_BatchedConv2d``,
        #: whose backward is not differentiable: the full gradient of a DIP fit differentiates the fit's gradients.
        self.twice_differentiable = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel // 2
        if pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        n, _, h, w = x.shape
        # One network takes the batched products too, on CPU: F.conv2d rounds its gradients differently, and DIP's
        # optimisation amplifies a last-bit difference into a different image (up to 0.2 on DIPDefend's trace
        # after 1000 iterations), so a network's result would depend on how many others share its batch.
        if x.device.type != "cpu":
            out = F.conv2d(x.reshape(1, -1, h, w), self.weight, self.bias, stride=self.stride, groups=n)
            return out.view(n, self.cout, *out.shape[-2:])
        if self.kernel == 1 and self.stride == 1:
            out = torch.baddbmm(self.bias.view(n, self.cout, 1), self.weight.view(n, self.cout, self.cin),
                                x.reshape(n, self.cin, h * w))
            return out.view(n, self.cout, h, w)
        if self.twice_differentiable:
            cols = F.unfold(x, self.kernel, stride=self.stride)  # rows in the weight's (Cin, k, k) order
            ho, wo = (h - self.kernel) // self.stride + 1, (w - self.kernel) // self.stride + 1
            out = torch.baddbmm(self.bias.view(n, self.cout, 1), self.weight.view(n, self.cout, -1), cols)
            return out.view(n, self.cout, ho, wo)
        return _BatchedConv2d.apply(x, self.weight, self.bias, self.kernel, self.stride)


class _Norm(nn.BatchNorm2d):
    """Batch norm of ``n`` networks' ``(n, C, H, W)`` activations as one sample with ``n*C`` channels: statistics
    per network and channel over that network's own image (parameters and buffers ``(n*C,)``)."""

    def __init__(self, n: int, channels: int) -> None:
        super().__init__(n * channels)
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return super().forward(x.reshape(1, n * c, h, w)).view(n, c, h, w)


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
        deep = resize_bilinear(deep, x.shape[-2:])
        joined = deep if self.skip is None else torch.cat([self.skip(x), deep], dim=1)
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
        return torch.sigmoid(self.head(self.body(noise)))

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
                    w[i].copy_(torch.rand(w[i].shape, generator=generator, device="cpu") * 2 * bound - bound)
                    b[i].copy_(torch.rand(b[i].shape, generator=generator, device="cpu") * 2 * bound - bound)
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


#: On CPU, ``dip_trace`` fits its networks in groups whose every parameter tensor stays under this size, a little
#: below glibc's 32 MiB ceiling above which every allocation is a fresh ``mmap``: first touching those pages (the
#: gradients, once per iteration) costs several times the arithmetic done on them. Groups change nothing but speed.
_CPU_TENSOR_BYTES = 30 << 20


def _groups(n: int, config: SkipNetConfig, out_channels: int, device: torch.device) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` ranges of the ``n`` networks that ``dip_trace`` fits together, as even as
    possible: one range off CPU, else ranges whose largest parameter tensor fits ``_CPU_TENSOR_BYTES``."""
    size = n
    if device.type == "cpu":
        largest = max(p.numel() * p.element_size() for p in BatchedSkipNet(1, config, out_channels).parameters())
        size = max(1, _CPU_TENSOR_BYTES // largest)
    count = -(-n // size)
    bounds = [round(i * n / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _adam(parameters: list[torch.Tensor], lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam, one tensor at a time (not fused) on CPU: the fused kernel rounds the vectorised body and the scalar tail
    of a tensor differently, so a network's update would depend on where its slice falls in the batch's tensor, and
    DIP's optimisation amplifies that last-bit difference into a different image. The element-wise kernels of the
    single-tensor implementation round alike everywhere; they cost about 5-10% more time per iteration at 64
    networks (measured on the 2-core machine)."""
    if device.type == "cpu":
        return torch.optim.Adam(parameters, lr=lr, foreach=False, fused=False)
    return torch.optim.Adam(parameters, lr=lr)


#: Bytes of parameters per flat tensor that Adam updates on the CPU (:class:`_FitOptimiser`): about half a core's L2
#: cache, so that Adam's dozen passes over a bucket stay in cache (the DIP defence's parameters are 9 MiB at 64 images).
_ADAM_BUCKET_BYTES = 1 << 20


def _flat_buckets(parameters: Sequence[torch.Tensor], limit: int) -> list[tuple[torch.Tensor, int]]:
    """Move ``parameters`` into flat tensors of consecutive parameters, each under ``limit`` bytes (a larger parameter
    alone), every parameter becoming a view of one of them; returns each flat tensor with its number of parameters."""
    buckets: list[list[torch.Tensor]] = [[]]
    size = 0
    for parameter in parameters:
        nbytes = parameter.numel() * parameter.element_size()
        if buckets[-1] and size + nbytes > limit:
            buckets.append([])
            size = 0
        buckets[-1].append(parameter)
        size += nbytes
    flats = []
    for bucket in buckets:
        flat = torch.cat([parameter.detach().reshape(-1) for parameter in bucket])
        offset = 0
        for parameter in bucket:
            parameter.data = flat[offset : offset + parameter.numel()].view_as(parameter)
            offset += parameter.numel()
        flats.append((flat, len(bucket)))
    return flats


class _FitOptimiser:
    """One Adam step of a group of DIP networks per call of :meth:`step` (:func:`_adam`'s choice of kernels).

    On the CPU the parameters become views of a few flat tensors (:func:`_flat_buckets`, each under
    ``_ADAM_BUCKET_BYTES``) and Adam updates those: a dozen element-wise kernels per flat tensor instead of per
    parameter (DIP's small network has 68 parameter tensors, DIPDefend's 56), the same numbers to the bit (Adam is
    element-wise, and the single-tensor kernels round alike wherever an element falls).
    """

    def __init__(self, parameters: list[torch.Tensor], lr: float, device: torch.device) -> None:
        self.parameters = parameters
        self.flats = _flat_buckets(parameters, _ADAM_BUCKET_BYTES) if device.type == "cpu" else None
        self.adam = _adam([flat for flat, _ in self.flats] if self.flats is not None else parameters, lr, device)

    def step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (a scalar) to the parameters and update them."""
        if self.flats is None:
            loss.backward()
            self.adam.step()
            # Freed now, the gradients' memory is what the next group's gradients are allocated in.
            self.adam.zero_grad(set_to_none=True)
            return
        grads = iter(torch.autograd.grad(loss, self.parameters))
        for flat, count in self.flats:
            flat.grad = torch.cat([next(grads).reshape(-1) for _ in range(count)])
        self.adam.step()
        for flat, _ in self.flats:
            flat.grad = None


#: Bytes of input jitter drawn at once per group of networks (:class:`_Jitter`): several iterations' worth at CIFAR
#: size and batch 64, and under glibc's ``mmap`` threshold on the CPU.
_JITTER_BYTES = 8 << 20


class _Jitter:
    """The input jitter of :func:`dip_trace`, one ``randn`` of the noise input's ``shape`` per generator and
    iteration, drawn several iterations at a time per generator.

    A CPU generator's ``randn`` of ``m >= 16`` values draws ``m`` uniforms in order and maps them to normals 16 at a
    time (Box-Muller on elements ``j`` and ``j + 8`` of each block), drawing the last 16 afresh when ``m`` is not a
    multiple of 16. So when one iteration's draw is a multiple of 16 values, drawing ``k`` iterations at once
    gives the very numbers of ``k`` draws in a row and leaves the generator in the same state (tests check both);
    otherwise it draws one iteration at a time. It never draws past ``iterations``. Off the CPU, each block goes
    to the device in one pinned, non-blocking copy.
    """

    def __init__(self, generators: Sequence[torch.Generator], shape: tuple[int, ...], device: torch.device,
                 iterations: int) -> None:
        self.generators, self.shape, self.device, self.left = list(generators), tuple(shape), device, iterations
        size = math.prod(self.shape)
        per_iteration = max(1, len(self.generators) * size * torch.empty(0).element_size())
        self.block = max(1, _JITTER_BYTES // per_iteration) if size % 16 == 0 else 1
        self.drawn: torch.Tensor | None = None  # (n, k, *shape): the current block
        self.used = 0

    def next(self) -> torch.Tensor:
        """The next iteration's jitter ``(n, *shape)`` on the device (a view into the current block)."""
        if self.drawn is None or self.used == self.drawn.shape[1]:
            k = min(self.block, self.left)
            pinned = self.device.type == "cuda"
            block = torch.empty((len(self.generators), k, *self.shape), device="cpu", pin_memory=pinned)
            for row, generator in zip(block, self.generators, strict=True):
                # contiguous rows: the 16-value path
                torch.randn((k, *self.shape), generator=generator, out=row, device="cpu")
            self.drawn = block.to(self.device, non_blocking=True) if self.device.type != "cpu" else block
            self.left, self.used = self.left - k, 0
        self.used += 1
        return self.drawn[:, self.used - 1]


def dip_trace(
    images: torch.Tensor,
    config: SkipNetConfig,
    iterations: int,
    generators: Sequence[torch.Generator],
    lr: float = 0.01,
    noise_scale: float = 0.1,
    optimise_input: bool = False,
    on_iteration=None,
    input_jitter: float = 0.0,
    progress: bool = False,
) -> None:
    """Fit one DIP network per image to ``images`` (``(n, C, H, W)`` in ``[0, 1]``) with Adam on the MSE.

    Network ``i`` and its noise input ``U(0, noise_scale)`` come from ``generators[i]`` alone, and so does, with
    ``input_jitter > 0``, the Gaussian perturbation of standard deviation ``input_jitter`` added to its noise input
    afresh every iteration (DIP's ``reg_noise_std``: a network that must map nearby inputs to the same image fits
    noise later). Every iteration ``t`` (1-based), ``on_iteration(t, outputs, mse)`` receives the detached outputs
    ``(n, C, H, W)`` of its forward pass (the trace's ``t``-th image, made by the parameters after ``t - 1``
    updates) and the per-image MSE ``(n,)``.
    On CPU the networks are fitted in groups (see ``_CPU_TENSOR_BYTES``). Runs with gradients enabled whatever the
    caller's mode. ``progress`` shows a progress bar over the iterations (on stderr, removed when done).
    """
    n, c, h, w = images.shape
    check_image_size(config, h, w)
    device = images.device
    target = images.detach()
    with torch.enable_grad():
        groups = []
        for start, stop in _groups(n, config, c, device):
            with torch.device("cpu"):  # where the draws are, whatever the default device
                net = BatchedSkipNet(stop - start, config, out_channels=c)
            net.reset_parameters(generators[start:stop])
            net = net.to(device).train()
            noise = torch.stack([torch.rand((config.input_depth, h, w), generator=g, device="cpu") * noise_scale
                                 for g in generators[start:stop]])
            noise = noise.to(device).requires_grad_(optimise_input)
            optimiser = _FitOptimiser([*net.parameters(), *([noise] if optimise_input else [])], lr, device)
            jitter = _Jitter(generators[start:stop], noise.shape[1:], device, iterations) if input_jitter > 0 else None
            groups.append((net, noise, optimiser, target[start:stop], jitter))
        bar = tqdm(total=iterations, desc=f"DIP fit of {n} image{'s' if n != 1 else ''}", unit="it",
                   disable=not progress, leave=False)
        for t in range(1, iterations + 1):
            outputs, mses = [], []
            for net, noise, optimiser, group_target, jitter in groups:
                net_input = noise if jitter is None else noise + input_jitter * jitter.next()
                out = net(net_input)
                mse = ((out - group_target) ** 2).mean(dim=(1, 2, 3))
                optimiser.step(mse.sum())  # the sum gives each network exactly its own image's gradient
                outputs.append(out.detach())
                mses.append(mse.detach())
            if on_iteration is not None:
                on_iteration(t, torch.cat(outputs), torch.cat(mses))
            bar.update()
        bar.close()


def snapshot_iterations(iterations: Sequence[int]) -> list[int]:
    """The 1-based iterations whose trace images a snapshot function returns, checked: increasing, ``>= 1``."""
    wanted = [int(t) for t in iterations]
    if not wanted or wanted[0] < 1 or any(b <= a for a, b in zip(wanted, wanted[1:], strict=False)):
        raise ValueError("iterations must be increasing integers >= 1.")
    return wanted


def dip_snapshots(
    images: torch.Tensor,
    config: SkipNetConfig,
    iterations: Sequence[int],
    generators: Sequence[torch.Generator],
    lr: float = 0.01,
    noise_scale: float = 0.1,
    input_jitter: float = 0.0,
    progress: bool = False,
) -> torch.Tensor:
    """The trace images of :func:`dip_trace` at the given ``iterations`` (1-based, increasing), as
    ``(len(iterations), n, C, H, W)``; the fit runs to the last of them (``progress``: a bar over it)."""
    wanted = snapshot_iterations(iterations)
    taken, kept = set(wanted), []
    dip_trace(images, config, wanted[-1], generators, lr, noise_scale,
              on_iteration=lambda t, out, _: kept.append(out) if t in taken else None, input_jitter=input_jitter,
              progress=progress)
    return torch.stack(kept)
