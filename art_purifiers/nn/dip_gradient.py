"""The full gradient of a DIP fit: reverse-mode differentiation through every Adam step of
:func:`~art_purifiers.nn.dip.dip_trace`.

A DIP trace image depends on the input image ``x`` through every step of the fit: step ``t`` follows the gradient
of ``L = ||f_theta(z) - x||^2`` with respect to ``theta`` (and ``z`` when the noise input is optimised), and that
gradient depends on ``x``. :func:`differentiable_dip_trace` runs the fit as functions of tensors (the network
through ``torch.func.functional_call``, Adam written out of place with the same kernels, in the same order, as
``torch.optim.Adam``'s single-tensor update), so its forward pass gives the very numbers of ``dip_trace``, and its
backward pass differentiates through each step, second-order terms included (the inner gradient is taken with
``create_graph=True``). Memory is bounded by checkpointing: the forward pass keeps the fit's state (parameters,
noise input, Adam's two moments, the generators' states for the input jitter) every ``checkpoint_every``
iterations, and the backward pass recomputes one segment at a time, from the last one back.

Peak memory: ``T / k`` stored states of ``3 x`` the parameters (plus noise) each, and the double-backward graph of
one segment of ``k`` steps; time: one forward fit, one recomputed fit and the backward pass through it.
The recomputation uses convolutions that are differentiable twice (``F.unfold`` on CPU), whose products may round
differently from the forward pass's, and DIP's fit amplifies rounding differences, so a segment's recomputed
trajectory can drift from the forward's (the checkpoints themselves are the forward's; ``docs/defences/dip.md``
measures the effect on the gradient). Parameters that reach no output (:func:`dead_parameters`) are constants of
the backward graph.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from art_purifiers.checks import check_integer
from art_purifiers.nn.dip import (
    BatchedSkipNet,
    SkipNetConfig,
    _Conv,
    _Norm,
    _Scale,
    check_image_size,
    snapshot_iterations,
)

#: Adam's defaults in ``torch.optim.Adam``, which :func:`~art_purifiers.nn.dip.dip_trace` uses.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

#: ``select(t, outputs, mse)``: which record slots take iteration ``t``'s outputs, a ``(slots, n)`` bool tensor.
Selector = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def _sqrt(value: torch.Tensor) -> torch.Tensor:
    """``value.sqrt()`` (the same numbers) with a zero derivative where ``value`` is 0: a gradient element that is
    exactly 0 leaves Adam's second moment at 0, where the square root's derivative is infinite and times the zero
    gradient gives NaN; as a function of that gradient the moment's root is ``|g|``, whose subgradient at 0 is 0."""
    positive = value > 0
    return torch.where(positive, torch.where(positive, value, 1.0).sqrt(), 0.0)


def adam_update(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                step: int, lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adam's step ``step`` (1-based) out of place: ``(param, exp_avg, exp_avg_sq)`` after it, differentiable in
    every tensor. The kernels and their order are those of ``torch.optim.Adam(foreach=False, fused=False)``, so
    the numbers are the same to the bit."""
    beta1, beta2 = ADAM_BETAS
    exp_avg = torch.lerp(exp_avg, grad, 1 - beta1)
    exp_avg_sq = torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    denom = _sqrt(exp_avg_sq) / bias_correction2_sqrt + ADAM_EPS
    return torch.addcdiv(param, exp_avg, denom, value=-lr / bias_correction1), exp_avg, exp_avg_sq


def dead_parameters(net: BatchedSkipNet) -> set[str]:
    """Names of the parameters that no output depends on: the bias of a convolution (or of a batch norm)
    followed, through at most a convolution, by a batch norm, which subtracts every per-channel constant. Their
    loss gradients are rounding noise (often exactly zero), so the fit's updates of them are too."""
    dead = set()
    for name, module in net.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.Sequential) and len(module) > 1 and isinstance(module[0], _Conv) \
                and isinstance(module[1], _Norm):
            dead.add(f"{prefix}0.bias")
        if isinstance(module, _Scale) and module.up[0][0].kernel >= 1:
            dead.add(f"{prefix}join_norm.bias")  # a constant shift goes through the next convolution to its norm
    return dead


class _Fit:
    """One DIP fit of ``n`` images as a function of tensors: the networks' structure, their initial state and the
    generators of the input jitter; :meth:`run` is the forward pass, :meth:`gradient` the backward pass."""

    def __init__(self, images: torch.Tensor, config: SkipNetConfig, iterations: int,
                 generators: Sequence[torch.Generator], select: Selector, slots: int, lr: float, noise_scale: float,
                 optimise_input: bool, input_jitter: float, checkpoint_every: int) -> None:
        n, c, h, w = images.shape
        device, dtype = images.device, images.dtype
        # Drawn in dip_trace's order: each generator gives its network's weights, then its noise input.
        with torch.device("cpu"):  # where the draws are, whatever the default device
            net = BatchedSkipNet(n, config, out_channels=c)
        net.reset_parameters(generators)
        self.net = net.to(device=device, dtype=dtype).train()
        noise = torch.stack([torch.rand((config.input_depth, h, w), generator=g, device="cpu") * noise_scale
                             for g in generators])
        self.noise = noise.to(device=device, dtype=dtype)
        # The state is two flat tensors, live and dead parameters (the noise input last among the live ones when it
        # is optimised): Adam's element-wise kernels give the same numbers on one tensor as on many, in far fewer
        # operations, and the dead ones stay out of the graph.
        dead = dead_parameters(self.net)
        named = list(self.net.named_parameters())
        self.layout = [[(name, p.shape) for name, p in named if name not in dead],
                       [(name, p.shape) for name, p in named if name in dead]]
        flats = [[p.detach().reshape(-1) for name, p in named if (name in dead) == is_dead] for is_dead in (0, 1)]
        flats[0] += [self.noise.reshape(-1)] if optimise_input else []
        self.initial = [torch.cat(f) if f else self.noise.new_zeros(0) for f in flats]
        self.dead = [False, True]
        self.graph_net = copy.deepcopy(self.net)
        for module in self.graph_net.modules():
            if isinstance(module, _Conv):
                module.twice_differentiable = True
        self.generators, self.iterations, self.select, self.slots = list(generators), iterations, select, slots
        self.lr, self.optimise_input, self.input_jitter = lr, optimise_input, input_jitter
        self.checkpoint_every = checkpoint_every
        self.checkpoints: dict[int, tuple[list[torch.Tensor], list[torch.ByteTensor]]] = {}
        self.when: torch.Tensor | None = None

    def _jitter(self, generators: Sequence[torch.Generator]) -> torch.Tensor | None:
        if self.input_jitter <= 0:
            return None
        jitter = torch.stack([torch.randn(self.noise.shape[1:], generator=g, device="cpu") for g in generators])
        return jitter.to(device=self.noise.device, dtype=self.noise.dtype)

    def _outputs(self, net: BatchedSkipNet, theta: list[torch.Tensor], jitter: torch.Tensor | None) -> torch.Tensor:
        """The networks' images ``(n, C, H, W)`` for parameters (and noise) ``theta``."""
        params = {}
        for flat, layout in zip(theta, self.layout, strict=True):
            sizes = [shape.numel() for _, shape in layout]
            pieces = torch.split(flat, [*sizes, flat.numel() - sum(sizes)])
            params.update({name: piece.view(shape) for (name, shape), piece in zip(layout, pieces, strict=False)})
        noise = theta[0][theta[0].numel() - self.noise.numel():].view(self.noise.shape) if self.optimise_input \
            else self.noise
        net_input = noise if jitter is None else noise + self.input_jitter * jitter
        return functional_call(net, params, (net_input,))

    def _step(self, state: list[torch.Tensor], t: int, out: torch.Tensor, target: torch.Tensor,
              create_graph: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Per-image MSE of ``out`` and the state (``theta + m + v``) after Adam's step ``t`` on their sum."""
        size = len(state) // 3
        theta, m, v = state[:size], state[size : 2 * size], state[2 * size :]
        mse = ((out - target) ** 2).mean(dim=(1, 2, 3))
        grads = torch.autograd.grad(mse.sum(), theta, create_graph=create_graph, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(theta, grads, strict=True)]
        updated = []
        for dead, args in zip(self.dead, zip(theta, grads, m, v, strict=True), strict=True):
            # A dead parameter's update is rounding noise that reaches no output: a constant of the graph (its
            # second-order terms would be 0 / 0 where that noise is exactly zero).
            with torch.enable_grad() if create_graph and not dead else torch.no_grad():
                updated.append(adam_update(*args, t, self.lr))
        return mse, [u[0] for u in updated] + [u[1] for u in updated] + [u[2] for u in updated]

    def run(self, images: torch.Tensor) -> torch.Tensor:
        """The forward pass: the records ``(slots, n, C, H, W)`` of the fit to ``images``, keeping checkpoints."""
        target = images.detach()
        state = [*self.initial, *(torch.zeros_like(p) for p in self.initial),
                 *(torch.zeros_like(p) for p in self.initial)]
        size = len(self.initial)
        records = target.new_zeros(self.slots, *target.shape)
        when = torch.zeros(self.slots, len(target), dtype=torch.long, device=target.device)
        with torch.enable_grad():
            for t in range(1, self.iterations + 1):
                if (t - 1) % self.checkpoint_every == 0:
                    self.checkpoints[t - 1] = (state, [g.get_state() for g in self.generators])
                jitter = self._jitter(self.generators)
                theta = [p.detach().requires_grad_() for p in state[:size]]
                out = self._outputs(self.net, theta, jitter)
                mse, state = self._step([*theta, *state[size:]], t, out, target, create_graph=False)
                out, mse = out.detach(), mse.detach()
                slot, image = self.select(t, out, mse).to(target.device).nonzero(as_tuple=True)
                records[slot, image] = out[image]
                when[slot, image] = t
        self.when = when
        return records

    def gradient(self, images: torch.Tensor, grad_records: torch.Tensor) -> torch.Tensor:
        """The backward pass: ``d <grad_records, records> / d images``, segment by segment from the last record with
        a non-zero gradient back to the start."""
        needed = (grad_records != 0).flatten(2).any(-1) & (self.when > 0)
        grad_x = torch.zeros_like(images)
        if not bool(needed.any()):
            return grad_x
        last = int(self.when[needed].max())
        adjoint = None
        for start in sorted((s for s in self.checkpoints if s < last), reverse=True):
            stop = min(start + self.checkpoint_every, last)
            leaves, x, objective = self._segment(images, grad_records, needed, start, stop, stop == last, adjoint)
            grads = torch.autograd.grad(objective, [*leaves, x], allow_unused=True)
            adjoint = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads[:-1], strict=True)]
            if grads[-1] is not None:
                grad_x += grads[-1]
        return grad_x

    def _segment(self, images: torch.Tensor, grad_records: torch.Tensor, needed: torch.Tensor, start: int, stop: int,
                 final: bool, adjoint: list[torch.Tensor] | None):
        """Recompute iterations ``start + 1 .. stop`` from the checkpoint at ``start`` with their graph; return the
        leaves (state at ``start`` and the input) and ``<grads, records> + <adjoint, state at stop>``."""
        state, generator_states = self.checkpoints[start]
        leaves = [s.detach().requires_grad_() for s in state]
        x = images.detach().requires_grad_()
        generators = [torch.Generator(device="cpu") for _ in generator_states]
        for generator, saved in zip(generators, generator_states, strict=True):
            generator.set_state(saved)
        size = len(state) // 3
        objective = images.new_zeros(())
        state = list(leaves)
        with torch.enable_grad():
            for t in range(start + 1, stop + 1):
                # Dead parameters were updated as constants; the inner gradient still needs them as leaves.
                state[:size] = [s if s.requires_grad else s.detach().requires_grad_() for s in state[:size]]
                out = self._outputs(self.graph_net, state[:size], self._jitter(generators))
                taken = ((self.when == t) & needed)[..., None, None, None]
                if bool(taken.any()):
                    objective = objective + ((grad_records * taken).sum(0) * out).sum()
                if not (final and t == stop):  # the last record's own step changes nothing recorded
                    state = self._step(state, t, out, x, create_graph=True)[1]
            if adjoint is not None:
                objective = objective + sum((a * s).sum() for a, s in zip(adjoint, state, strict=True))
        return leaves, x, objective


class _UnrolledFit(torch.autograd.Function):
    """``records = fit(images)`` with the backward pass of :meth:`_Fit.gradient`."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, fit: _Fit) -> torch.Tensor:
        ctx.fit = fit
        ctx.save_for_backward(images)
        return fit.run(images)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (images,) = ctx.saved_tensors
        return ctx.fit.gradient(images, grad), None


def differentiable_dip_trace(
    images: torch.Tensor,
    config: SkipNetConfig,
    iterations: int,
    generators: Sequence[torch.Generator],
    select: Selector,
    slots: int,
    lr: float = 0.01,
    noise_scale: float = 0.1,
    optimise_input: bool = False,
    input_jitter: float = 0.0,
    checkpoint_every: int = 50,
) -> torch.Tensor:
    """The fit of :func:`~art_purifiers.nn.dip.dip_trace` (same arguments, same numbers on CPU in float32) as a
    differentiable function of ``images`` ``(n, C, H, W)``, recording chosen trace images.

    Every iteration ``t`` (1-based), ``select(t, outputs, mse)`` gets the detached outputs ``(n, C, H, W)`` and the
    per-image MSE ``(n,)`` and returns a ``(slots, n)`` bool tensor: where true, slot ``s`` of image ``i`` takes
    this iteration's image (replacing what it held). The choice is held fixed in the backward pass (straight
    through): the gradient of a slot flows into the trace image it holds, through every step of the fit before it.
    The fit runs in ``images``' dtype (float64 for gradient checks).

    :param checkpoint_every: Iterations between the stored states (``k``, ``>= 1``): memory ``~ iterations / k``
        states plus one segment's graph of ``k`` steps.
    :return: The records ``(slots, n, C, H, W)`` (zeros in slots never selected).
    """
    n, _, h, w = images.shape
    check_image_size(config, h, w)
    if len(generators) != n:
        raise ValueError(f"Need one generator per image ({n}), got {len(generators)}.")
    fit = _Fit(images, config, check_integer("iterations", iterations, minimum=1), generators, select,
               check_integer("slots", slots, minimum=1), lr, noise_scale, optimise_input, input_jitter,
               check_integer("checkpoint_every", checkpoint_every, minimum=1))
    return _UnrolledFit.apply(images, fit)


def differentiable_dip_snapshots(
    images: torch.Tensor,
    config: SkipNetConfig,
    iterations: Sequence[int],
    generators: Sequence[torch.Generator],
    lr: float = 0.01,
    noise_scale: float = 0.1,
    input_jitter: float = 0.0,
    checkpoint_every: int = 50,
) -> torch.Tensor:
    """:func:`~art_purifiers.nn.dip.dip_snapshots` (trace images at increasing 1-based ``iterations``, as
    ``(len(iterations), n, C, H, W)``), differentiable with respect to ``images`` through the whole fit."""
    wanted = snapshot_iterations(iterations)
    slot_of = torch.tensor(wanted, device="cpu")  # beside the CPU-side bookkeeping, whatever the default device

    def select(t: int, outputs: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return (slot_of == t).view(-1, 1).expand(len(wanted), len(outputs))

    return differentiable_dip_trace(images, config, wanted[-1], generators, select, len(wanted), lr, noise_scale,
                                    input_jitter=input_jitter, checkpoint_every=checkpoint_every)
