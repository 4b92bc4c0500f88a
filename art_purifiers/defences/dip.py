"""Deep-image-prior defences: the decision-space DIP reconstruction of Ding et al. (2021) and DIPDefend.

Both optimise one DIP network per input image (all images of a chunk together, see
:class:`~art_purifiers.nn.dip.BatchedSkipNet`). Their gradient is BPDA by default; ``gradient="full"``
differentiates through every step of the fit (:func:`~art_purifiers.nn.dip_gradient.differentiable_dip_trace`),
holding the defences' discrete choices (which trace images, which boundary points) fixed. Their randomness
(network weights and noise input) is drawn per image from the call's generator, so ``seed`` fixes it and EOT
over seeds is possible.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from art_purifiers.base import PurifierPreprocessor, module_on
from art_purifiers.checks import check_choice, check_integer, check_number
from art_purifiers.nn.dip import DIP_PRESETS, SkipNetConfig, check_image_size, dip_snapshots, dip_trace
from art_purifiers.nn.dip_gradient import differentiable_dip_snapshots, differentiable_dip_trace
from art_purifiers.nn.metrics import psnr, ssim

#: DIPDefend's CIFAR network: a 3-scale hourglass without skip connections, noise input of depth 1.
DIPDEFEND_NETWORK = SkipNetConfig(channels=(4, 8, 16), skip=(0, 0, 0), input_depth=1)


class TraceDecisions(NamedTuple):
    """The victim on a DIP trace of ``n`` inputs with ``S`` snapshots (:meth:`DIPPreprocessor.decide`)."""

    probs: torch.Tensor  #: (S, n, classes) softmax of the snapshots
    quality: torch.Tensor  #: (S, n) SSIM of each snapshot to its input
    input_labels: torch.Tensor  #: (n,) the victim's labels of the inputs


class _Slots(NamedTuple):
    """The images a DIP reconstruction averages, ``keep`` slots per input (:meth:`DIPPreprocessor._slots`)."""

    index: torch.Tensor  #: (keep, n) the snapshot of each slot (of a pair: its first snapshot)
    pair: torch.Tensor  #: (keep, n) bool: the slot holds the on-boundary image of snapshots index and index + 1
    used: torch.Tensor  #: (keep, n) bool: the slot is averaged
    count: torch.Tensor  #: (n,) slots used


class _DIPDefence(PurifierPreprocessor):
    """What both DIP defences share: per-image seeds, the network preset, the optimiser settings."""

    differentiable = False
    randomized = True
    needs_grad = True
    params = PurifierPreprocessor.params + ["network", "iterations", "lr", "noise_scale", "input_jitter"]

    #: Settings for a quick look (fewer iterations), merged into the defaults by :meth:`quick`.
    QUICK: dict = {}
    #: Gradient modes: BPDA, or the full gradient through the unrolled fit (discrete choices held fixed).
    GRADIENTS = ("bpda", "full")

    def __init__(self, network: str | SkipNetConfig, iterations: int, lr: float, noise_scale: float,
                 input_jitter: float, verbose: bool = False, checkpoint_every: int = 50, **kwargs) -> None:
        kwargs.setdefault("gradient", "bpda")
        kwargs.setdefault("batch_size", 64)
        super().__init__(**kwargs)
        self.verbose = verbose
        self.checkpoint_every = checkpoint_every
        self.network = network
        self.iterations = iterations
        self.lr = lr
        self.noise_scale = noise_scale
        self.input_jitter = input_jitter

    @classmethod
    def quick(cls, *args, **kwargs):
        """The defence with its quick-look settings :attr:`QUICK` (fewer iterations; ``kwargs`` override them): for
        trying the defence out, not for reported figures (its accuracy at these settings has not been measured)."""
        return cls(*args, **{**cls.QUICK, **kwargs})

    def settable(self) -> list[str]:
        """:attr:`params` and :attr:`objects`, ``verbose`` and ``checkpoint_every`` (they change progress display
        and the full gradient's memory, no output, so they are in neither ``repr`` nor the fingerprint)."""
        return [*super().settable(), "verbose", "checkpoint_every"]

    @property
    def full_gradient(self) -> bool:
        """Whether purification runs through the differentiable fit (``gradient="full"``)."""
        return self.gradient == "full"

    def _check_defence(self) -> None:
        if self.gradient == "exact":
            raise ValueError(
                f"{type(self).__name__} is not differentiable as a whole (its choice of trace images is discrete), "
                "so gradient='exact' is not available; use gradient='full' (backpropagation through the DIP fit, "
                "choices held fixed) or gradient='bpda' (identity backward pass)."
            )
        check_choice("gradient", self.gradient, self.GRADIENTS)

    @property
    def network_config(self) -> SkipNetConfig:
        return DIP_PRESETS[self.network] if isinstance(self.network, str) else self.network

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # Up front, naming the defence: too small an image would otherwise fail inside batch norm.
        check_image_size(self.network_config, x.shape[-2], x.shape[-1], type(self).__name__)
        seeds = torch.randint(0, 2**62, (len(x),), generator=generator, device="cpu").tolist()
        return self.purify_with_seeds(x, seeds)

    def purify_with_seeds(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Purify ``x`` ``(n, C, H, W)`` with image ``i``'s network and noise drawn from ``seeds[i]`` alone.

        The result for an image does not depend on the other images of the batch: on CPU with one thread it is
        bitwise the same (DIPDefend at its defaults but 1000 iterations: 0 between a batch of four and one at a time,
        where a fused Adam and a separate lone-network convolution had given up to 0.19). With several threads or
        on a GPU the matrix library may round a lone network's products differently, and DIP's optimisation
        amplifies such last-bit differences (see ``docs/defences/dip.md``)."""
        raise NotImplementedError

    def _generators(self, seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(int(s)) for s in seeds]

    def _check_params(self) -> None:
        super()._check_params()
        preset = isinstance(self.network, str) and self.network in DIP_PRESETS
        if not preset and not isinstance(self.network, SkipNetConfig):
            raise ValueError(f"network must be one of {sorted(DIP_PRESETS)} or a SkipNetConfig, got {self.network!r}.")
        self.iterations = check_integer("iterations", self.iterations, minimum=2)
        self.lr = check_number("lr", self.lr, minimum=0, open_minimum=True)
        self.noise_scale = check_number("noise_scale", self.noise_scale, minimum=0, open_minimum=True)
        self.input_jitter = check_number("input_jitter", self.input_jitter, minimum=0)
        if not isinstance(self.verbose, (bool, np.bool_)):
            raise ValueError(f"verbose must be True or False, got {self.verbose!r}.")
        self.verbose = bool(self.verbose)
        self.checkpoint_every = check_integer("checkpoint_every", self.checkpoint_every, minimum=1)


class DIPPreprocessor(_DIPDefence):
    """Decision-space DIP reconstruction (Ding et al., 2021, arXiv:2108.00180).

    For each image: fit a DIP network for ``iterations`` steps; classify ``snapshots`` images taken at equal
    intervals along the trace; find cross-boundary pairs (adjacent snapshots with different labels, past the
    ``warmup`` iteration, both with SSIM to the input above ``ssim_threshold``); on the segment between each
    pair, find the on-boundary image by a grid search (``grid`` steps) for the point where the two classes'
    probabilities are closest; keep the last ``keep`` of them (the last ``keep`` snapshots when there is no
    pair); move each by ``step`` times its difference to the input, away from the input, unless its label already
    differs from the input's label; return their average.

    The paper's numeric settings did not survive in its text: every one is a parameter. The defaults come from
    two sensitivity studies on CIFAR-10 training images against the bundled ResNet-20 (``benchmarks/
    dip_sensitivity.py``; ``docs/defences/dip.md``): on 32 images, the small network at 1500 iterations had the
    best mean of clean and oblivious PGD-20 accuracy among 3 networks x 5 iteration counts (the paper's Table 3
    grid); on 128 images and two seeds, DIP's input jitter (``reg_noise_std`` 1/30) with a late warm-up (700) and
    a small step (0.25) raised that mean from 63.5 to 78.9: with the jitter, adversarial traces fit their
    perturbation hundreds of iterations after clean traces stop crossing boundaries, so the warm-up separates
    them. DIP's usual Adam 0.01 and noise input, and the paper's 200 snapshots, are kept.

    | Paper link: https://arxiv.org/abs/2108.00180

    :param classifier: Required: the victim whose decisions guide the reconstruction, an ART classifier or a torch
        module taking ``[0, 1]`` images and returning logits (on the command line, the victim).
    :param network: ``"small"``, ``"medium"``, ``"large"`` or a :class:`~art_purifiers.nn.dip.SkipNetConfig`.
    :param iterations: DIP optimisation steps per image.
    :param snapshots: Trace images classified.
    :param lr: Adam learning rate.
    :param noise_scale: The noise input is ``U(0, noise_scale)``.
    :param input_jitter: Standard deviation of the Gaussian perturbation of the noise input drawn every iteration
        (DIP's ``reg_noise_std``); 0 disables it.
    :param warmup: Snapshots at or before this iteration are not used for pairs.
    :param ssim_threshold: Minimum SSIM to the input of both images of a pair.
    :param grid: Grid steps of the on-boundary search.
    :param keep: On-boundary images kept (the last ones).
    :param step: Size of the move away from the input.
    :param verbose: Show a progress bar over each chunk's DIP fit (default ``False``; the command line shows it
        unless ``--quiet``). It changes no output, so it is not in ``params``, ``repr`` or the fingerprint.
    :param checkpoint_every: With ``gradient="full"``, iterations between the fit states kept for the backward pass
        (``>= 1``; stored states against the graph of one segment, see ``docs/defences/dip.md``); changes no output.
    :param kwargs: Shared options of :class:`~art_purifiers.base.PurifierPreprocessor` (``seed``, ``batch_size``:
        default 64, ``gradient``: ``"bpda"`` (default) or ``"full"``, the gradient through every step of the fit
        with the defence's discrete choices held fixed, ...).
    """

    params = _DIPDefence.params + ["snapshots", "warmup", "ssim_threshold", "grid", "keep", "step"]
    objects = ["classifier"]
    #: Quick look (:meth:`quick`): 400 iterations instead of 1500, warm-up and snapshots in the same proportion
    #: (187 and 53), as in ``examples/dip.py``; see ``docs/defences/dip.md`` for its measured cost.
    QUICK = {"iterations": 400, "warmup": 187, "snapshots": 53}

    def __init__(self, classifier=None, network: str | SkipNetConfig = "small", iterations: int = 1500,
                 snapshots: int = 200, lr: float = 0.01, noise_scale: float = 0.1, input_jitter: float = 0.0333,
                 warmup: int = 700, ssim_threshold: float = 0.7, grid: int = 100, keep: int = 5, step: float = 0.25,
                 verbose: bool = False, checkpoint_every: int = 50, **kwargs) -> None:
        super().__init__(network, iterations, lr, noise_scale, input_jitter, verbose, checkpoint_every, **kwargs)
        self.classifier = classifier
        self.snapshots, self.warmup, self.ssim_threshold = snapshots, warmup, ssim_threshold
        self.grid, self.keep, self.step = grid, keep, step
        self._check_params()

    def _networks_to(self, device: torch.device) -> None:
        """The victim follows the input's device as the registered networks do (it is not registered, which would
        freeze the caller's model): a second instance, or a copy made by :meth:`configured`, is not the one ART
        moved."""
        super()._networks_to(device)
        if isinstance(self.classifier, nn.Module):
            self.classifier = module_on(self.classifier, device)

    #: Images per call of a torch victim on the CPU: the bundled ResNet-20 classified chunks of 32 CIFAR images in
    #: about half the time per image of chunks of 256 (on one thread its activations for 32 images stay in cache;
    #: see ``docs/defences/dip.md``). Other victims and devices take ``max(batch_size, 256)``.
    CPU_VICTIM_IMAGES = 32

    def _victim_chunks(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images`` ``(m, C, H, W)`` in the chunks the victim classifies, never a lone image split off a larger
        call: a victim may round a lone image's logits differently from the same image in a batch (ResNet-20 does,
        last bits), and which images end up alone should not depend on the chunk size."""
        cpu_module = images.device.type == "cpu" and isinstance(self.classifier, nn.Module)
        size = self.CPU_VICTIM_IMAGES if cpu_module else max(self.batch_size, 256)
        chunks = list(torch.split(images, size))
        if len(chunks) > 1 and len(chunks[-1]) == 1:
            chunks[-2:] = [images[-size - 1 :]]
        return chunks

    def _probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax of the victim on ``(m, C, H, W)`` images, in chunks (:meth:`_victim_chunks`)."""
        out = []
        for chunk in self._victim_chunks(images):
            if isinstance(self.classifier, nn.Module):
                with torch.no_grad():
                    logits = self.classifier(chunk)
            else:
                logits = torch.from_numpy(self.classifier.predict(chunk.detach().cpu().numpy())).to(chunk.device)
            out.append(F.softmax(logits.float(), dim=1))
        return torch.cat(out)

    def snapshot_iterations(self) -> np.ndarray:
        """The iterations (1-based) whose trace images are classified: equally spaced, ending at the last."""
        return np.unique(np.linspace(self.iterations / self.snapshots, self.iterations, self.snapshots).round())

    def purify_with_seeds(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        iterations = self.snapshot_iterations().astype(int)
        snaps = self.trace(x, seeds, iterations)
        if not self.full_gradient:
            return self.reconstruct(x, snaps, iterations)
        # The victim's decisions are made on the values; the gradient flows through the snapshots they select.
        return self.reconstruct(x, snaps, iterations, self.decide(x.detach(), snaps.detach()))

    def trace(self, x: torch.Tensor, seeds: list[int], iterations: np.ndarray) -> torch.Tensor:
        """Trace images ``(len(iterations), n, C, H, W)`` of the inputs ``x`` ``(n, C, H, W)`` at ``iterations``
        (1-based, increasing), image ``i``'s network and noise drawn from ``seeds[i]``: the fit of
        :meth:`purify_with_seeds`, at any iterations (the input of :meth:`reconstruct`); with
        ``gradient="full"``, differentiable with respect to ``x`` through the whole fit (the same values)."""
        if self.full_gradient:
            return differentiable_dip_snapshots(x, self.network_config, iterations, self._generators(seeds), self.lr,
                                                self.noise_scale, self.input_jitter, self.checkpoint_every)
        return dip_snapshots(x, self.network_config, iterations, self._generators(seeds), self.lr, self.noise_scale,
                             self.input_jitter, progress=self.verbose)

    def decide(self, x: torch.Tensor, snaps: torch.Tensor) -> TraceDecisions:
        """The victim's view of a trace: softmax of the snapshots ``snaps`` ``(S, n, C, H, W)``, their SSIM to the
        inputs ``x`` ``(n, C, H, W)`` and the inputs' labels (what :meth:`reconstruct` needs besides the images)."""
        s, n = snaps.shape[:2]
        probs = self._probabilities(snaps.flatten(0, 1)).view(s, n, -1)
        # A few snapshots at a time: SSIM's intermediate maps are several times the images' size.
        quality = torch.cat([ssim(chunk.flatten(0, 1), x.repeat(len(chunk), 1, 1, 1)).view(len(chunk), n)
                             for chunk in torch.split(snaps, max(1, 1024 // n))])
        return TraceDecisions(probs, quality, self._probabilities(x).argmax(-1))

    def reconstruct(self, x: torch.Tensor, snaps: torch.Tensor, iterations: np.ndarray,
                    decisions: TraceDecisions | None = None,
                    boundary: dict[tuple[int, int, int], torch.Tensor] | None = None) -> torch.Tensor:
        """The defence's output from its trace: ``snaps`` ``(S, n, C, H, W)`` are the trace images of the inputs
        ``x`` ``(n, C, H, W)`` at ``iterations`` (:meth:`snapshot_iterations`). A trace fitted once to the largest
        ``iterations`` serves every smaller setting (the fit does not depend on its length), which is how the
        sensitivity study in ``benchmarks/dip_sensitivity.py`` compares settings; it also passes ``decisions``
        (:meth:`decide` on these snapshots) and a ``boundary`` dictionary, where the on-boundary image of image
        ``i``'s pair of snapshots at iterations ``(a, b)`` is kept under ``(i, a, b)`` and reused (it depends on
        nothing else).

        All images are reconstructed together: one victim call (in chunks) for every on-boundary search of the
        batch, one for the kept images' labels, and one copy of the chosen pairs to the host (for the
        ``boundary`` keys), whatever ``n``."""
        if decisions is None:
            decisions = self.decide(x, snaps)
        labels = decisions.probs.argmax(-1)
        slots = self._slots(labels, decisions.quality, torch.as_tensor(np.asarray(iterations), device=labels.device))
        kept = self._kept(snaps, labels, slots, np.asarray(iterations), boundary)
        kept_labels = self._probabilities(kept.flatten(0, 1)).argmax(-1).view(slots.index.shape)
        # Move away from the input, except for images already classified differently from it.
        step = torch.where(kept_labels == decisions.input_labels.to(kept_labels.device), self.step, 0.0)
        moved = (kept + step[..., None, None, None] * (kept - x)).clamp(0, 1)
        # Unused slots add exact zeros: the sum, then the division, give each image's mean over its own slots to
        # the bit (what ``mean(0)`` over them computes on the CPU).
        total = torch.where(slots.used[..., None, None, None], moved, 0.0).sum(0)
        return total / slots.count.to(total.dtype).view(-1, 1, 1, 1)

    def _slots(self, labels: torch.Tensor, quality: torch.Tensor, iterations: torch.Tensor) -> _Slots:
        """Which images each input's reconstruction averages (:class:`_Slots`), from the snapshots' labels and
        SSIM ``(S, n)`` and their ``iterations`` ``(S,)``: the last ``keep`` cross-boundary pairs (adjacent
        snapshots with different labels, past the warm-up, both above the SSIM threshold), in trace order, or
        without any, the last ``keep`` snapshots. Device tensors only, no host synchronisation."""
        s, n = labels.shape
        good = quality > self.ssim_threshold
        crossing = (labels[1:] != labels[:-1]) & good[1:] & good[:-1] & (iterations[:-1] > self.warmup).view(-1, 1)
        pairs = crossing.sum(0).clamp(max=self.keep)  # (n,) pairs used
        after = crossing.flip(0).cumsum(0).flip(0)  # crossings at or after each position
        taken = crossing & (after <= self.keep)
        # A taken crossing's slot is its rank among the taken ones; the others go to a row that is dropped.
        rows = torch.where(taken, pairs - after, self.keep)
        positions = torch.arange(s - 1, device=labels.device).view(-1, 1).expand(s - 1, n)
        chosen = torch.zeros(self.keep + 1, n, dtype=torch.long, device=labels.device)
        chosen = chosen.scatter(0, rows, positions)[: self.keep]
        slot = torch.arange(self.keep, device=labels.device).view(-1, 1)
        last = min(self.keep, s)  # without a pair: the last snapshots, as many as there are up to keep
        has_pairs = pairs > 0
        index = torch.where(has_pairs, chosen, (s - last + slot).clamp(max=s - 1))
        used = torch.where(has_pairs, slot < pairs, slot < last)
        count = torch.where(has_pairs, pairs, last)
        return _Slots(index, used & has_pairs, used, count)

    def _kept(self, snaps: torch.Tensor, labels: torch.Tensor, slots: _Slots, iterations: np.ndarray,
              boundary: dict[tuple[int, int, int], torch.Tensor] | None) -> torch.Tensor:
        """The images each reconstruction averages, ``(keep, n, C, H, W)``: the chosen snapshots, with every pair
        slot replaced by the pair's on-boundary image (from ``boundary`` when there, else searched and stored)."""
        n = snaps.shape[1]
        images = torch.arange(n, device=snaps.device).expand_as(slots.index)
        kept = snaps[slots.index, images]
        slot, image = slots.pair.nonzero(as_tuple=True)
        if not len(slot):
            return kept
        first = slots.index[slot, image]
        # One copy to the host for the whole batch: the boundary keys are Python integers.
        keys = [(i, int(iterations[p]), int(iterations[p + 1])) for i, p in torch.stack([image, first], 1).tolist()]
        boundary = {} if boundary is None else boundary
        missing = [k for k, key in enumerate(keys) if key not in boundary]
        if missing:
            todo = torch.as_tensor(missing, device=snaps.device)
            p, i = first[todo], image[todo]
            found = self._on_boundary(snaps[p, i], snaps[p + 1, i], labels[p, i], labels[p + 1, i])
            boundary.update({keys[k]: point for k, point in zip(missing, found, strict=True)})
        return kept.index_put((slot, image), torch.stack([boundary[key] for key in keys]))

    #: Images of the on-boundary searches classified per victim call (``grid + 1`` per pair): 4096 CIFAR images
    #: are 48 MiB.
    LINE_IMAGES = 4096

    def _on_boundary(self, a: torch.Tensor, b: torch.Tensor, label_a: torch.Tensor,
                     label_b: torch.Tensor) -> torch.Tensor:
        """For each of ``m`` pairs (``a``, ``b`` ``(m, C, H, W)``, labels ``(m,)``), the point of the segment from
        ``b`` to ``a`` (grid search, ``grid + 1`` points) where the two labels' probabilities are closest, as
        ``(m, C, H, W)``; differentiable in ``a`` and ``b`` with the point's position held fixed."""
        alphas = torch.linspace(0, 1, self.grid + 1, device=a.device).view(-1, 1, 1, 1)
        best = []
        step = max(1, self.LINE_IMAGES // (self.grid + 1))
        for lo in range(0, len(a), step):
            hi = min(len(a), lo + step)
            # (pairs, grid + 1, C, H, W): the same element-wise products and sum as one segment alone.
            line = alphas * a[lo:hi, None].detach() + (1 - alphas) * b[lo:hi, None].detach()
            probs = self._probabilities(line.flatten(0, 1)).view(hi - lo, self.grid + 1, -1)
            gap = probs.gather(2, label_a[lo:hi].view(-1, 1, 1).expand(-1, self.grid + 1, 1)) \
                - probs.gather(2, label_b[lo:hi].view(-1, 1, 1).expand(-1, self.grid + 1, 1))
            best.append(gap.squeeze(2).abs().argmin(1))  # the first of equal gaps, as for one segment
        alpha = alphas.view(-1)[torch.cat(best)].view(-1, 1, 1, 1)
        return alpha * a + (1 - alpha) * b

    def _check_params(self) -> None:
        super()._check_params()
        # Refused here rather than at the first call, where None fails as an AttributeError deep in a fit.
        if not isinstance(self.classifier, nn.Module) and not callable(getattr(self.classifier, "predict", None)):
            hint = ("DIPPreprocessor needs the victim whose decisions guide it: DIPPreprocessor(classifier=victim). "
                    if self.classifier is None else "")
            raise ValueError(
                f"{hint}classifier must be a torch nn.Module taking [0, 1] images and returning logits, or an ART "
                f"classifier (an object with a predict method), got {type(self.classifier).__name__}."
            )
        # Bounds that depend on iterations name it, so the message says which value to change.
        self.snapshots = check_integer(f"snapshots (at most iterations={self.iterations})", self.snapshots,
                                       minimum=2, maximum=self.iterations)
        self.warmup = check_integer(f"warmup (below iterations={self.iterations})", self.warmup,
                                    minimum=0, maximum=self.iterations - 1)
        self.ssim_threshold = check_number("ssim_threshold", self.ssim_threshold, minimum=-1, maximum=1)
        self.grid = check_integer("grid", self.grid, minimum=1)
        self.keep = check_integer("keep", self.keep, minimum=1)
        self.step = check_number("step", self.step, minimum=0)


class HoltTurningPoint:
    """DIPDefend's stopping rule, online: second-order exponential smoothing of a per-image series, reporting
    where the smoothed value reaches a new maximum (see :class:`DIPDefendPreprocessor`)."""

    def __init__(self, smoothing: float) -> None:
        self.smoothing = smoothing
        self.t = 0
        self.first: torch.Tensor | None = None
        self.level: torch.Tensor | None = None
        self.trend: torch.Tensor | None = None
        self.best: torch.Tensor | None = None

    def update(self, value: torch.Tensor) -> torch.Tensor:
        """Feed ``y_t`` (one value per image); return where ``s_t`` exceeds every earlier ``s`` (all at ``t = 0``)."""
        lam = self.smoothing
        if self.t == 0:
            self.first = self.level = self.best = value
            self.t = 1
            return torch.ones_like(value, dtype=torch.bool)
        if self.t == 1:
            self.trend = value - self.first  # b_0 = y_1 - y_0, kept for t = 1 as in the reference code
            level = lam * value + (1 - lam) * (self.level + self.trend)
        else:
            level = lam * value + (1 - lam) * (self.level + self.trend)
            self.trend = lam * (level - self.level) + (1 - lam) * self.trend
        self.level, self.t = level, self.t + 1
        better = level > self.best
        self.best = torch.where(better, level, self.best)
        return better


class DIPDefendPreprocessor(_DIPDefence):
    """DIPDefend (Dai et al., ACM MM 2020): the DIP trace image at the turning point of the smoothed PSNR.

    The PSNR of every trace image to the input goes through second-order (Holt) exponential smoothing with
    factor ``smoothing``: ``s_0 = y_0``, ``b_0 = y_1 - y_0``, ``s_t = l y_t + (1 - l)(s_{t-1} + b_{t-1})``,
    ``b_t = l (s_t - s_{t-1}) + (1 - l) b_{t-1}`` (``b`` is not updated at ``t = 1``, as in the reference code),
    and the output is the trace image at the last iteration where ``s_t`` exceeds all earlier values. All
    ``iterations`` run. Defaults follow the reference CIFAR script: its 3-scale network without skip
    connections, noise and network both optimised, Adam 0.01, 4000 iterations, ``smoothing`` 0.002.

    | Paper link: https://doi.org/10.1145/3394171.3413898

    :param network: Preset name or :class:`~art_purifiers.nn.dip.SkipNetConfig` (default: DIPDefend's).
    :param iterations: DIP optimisation steps per image (all of them run; ``>= 2``).
    :param lr: Adam learning rate (``> 0``).
    :param noise_scale: The noise input is ``U(0, noise_scale)`` (``> 0``).
    :param input_jitter: Standard deviation of the per-iteration perturbation of the noise input (0, as in the
        reference, whose ``reg_noise_std`` is negative and so disabled).
    :param smoothing: The smoothing factor ``l`` (the reference's ``Lambda``), in ``(0, 1]``.
    :param verbose: Show a progress bar over each chunk's DIP fit (default ``False``; the command line shows it
        unless ``--quiet``). It changes no output, so it is not in ``params``, ``repr`` or the fingerprint.
    :param checkpoint_every: With ``gradient="full"``, iterations between the fit states kept for the backward pass
        (``>= 1``; stored states against the graph of one segment, see ``docs/defences/dip.md``); changes no output.
    :param kwargs: Shared options of :class:`~art_purifiers.base.PurifierPreprocessor` (``seed``, ``batch_size``:
        default 64, ``gradient``: ``"bpda"`` (default) or ``"full"``, the gradient through every step of the fit
        with the defence's discrete choices held fixed, ...).
    """

    params = _DIPDefence.params + ["smoothing"]
    #: Quick look (:meth:`quick`): 500 iterations instead of 4000; see ``docs/defences/dip.md`` for its measured cost.
    QUICK = {"iterations": 500}

    def __init__(self, network: str | SkipNetConfig = DIPDEFEND_NETWORK, iterations: int = 4000, lr: float = 0.01,
                 noise_scale: float = 0.1, input_jitter: float = 0.0, smoothing: float = 0.002, verbose: bool = False,
                 checkpoint_every: int = 50, **kwargs) -> None:
        super().__init__(network, iterations, lr, noise_scale, input_jitter, verbose, checkpoint_every, **kwargs)
        self.smoothing = smoothing
        self._check_params()

    def purify_with_seeds(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        if self.full_gradient:
            return self._purify_differentiably(x, seeds)
        turning = HoltTurningPoint(self.smoothing)
        best: list[torch.Tensor] = []

        def track(t: int, out: torch.Tensor, _: torch.Tensor) -> None:
            better = turning.update(psnr(out, x)).view(-1, 1, 1, 1)
            best[:] = [out.clone() if not best else torch.where(better, out, best[0])]

        dip_trace(x, self.network_config, self.iterations, self._generators(seeds), self.lr, self.noise_scale,
                  optimise_input=True, on_iteration=track, input_jitter=self.input_jitter, progress=self.verbose)
        return best[0]

    def _purify_differentiably(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """:meth:`purify_with_seeds` through :func:`~art_purifiers.nn.dip_gradient.differentiable_dip_trace`: the
        same turning point, whose trace image carries the gradient of the whole fit before it."""
        turning, target = HoltTurningPoint(self.smoothing), x.detach()

        def select(t: int, out: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            return turning.update(psnr(out, target)).view(1, -1)

        records = differentiable_dip_trace(x, self.network_config, self.iterations, self._generators(seeds), select,
                                           1, self.lr, self.noise_scale, optimise_input=True,
                                           input_jitter=self.input_jitter, checkpoint_every=self.checkpoint_every)
        return records[0]

    def _check_params(self) -> None:
        super()._check_params()
        self.smoothing = check_number("smoothing", self.smoothing, minimum=0, maximum=1, open_minimum=True)
