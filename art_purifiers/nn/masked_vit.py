"""DIR's denoiser (Zhou et al., ICML 2023): a masked ViT fed K complementary random masks of the patch tokens; each
view is encoded from its visible tokens, decoded with every token at its own position, and the K reconstructions
are averaged. Plain modules: no classifier and no ART inside."""

from __future__ import annotations

import functools

import torch
from torch import nn

from art_purifiers.checks import check_choice, check_integer, check_number
from art_purifiers.nn.registry import register_network


def token_order(n: int, tokens: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random order of each image's tokens, ``(n, tokens)`` positions; drawn on the CPU from ``generator``."""
    return torch.argsort(torch.rand(n, tokens, generator=generator, device="cpu"), dim=1)


def complementary_masks(n: int, tokens: int, views: int = 2, ratio: float = 0.5,
                        generator: torch.Generator | None = None, order: torch.Tensor | None = None) -> torch.Tensor:
    """A random partition of each image's tokens among ``views`` views: ``(n, tokens)`` integers in
    ``[0, views)``, the view that sees each token (every token is visible in exactly one view, masked in the others).

    With two views, view 0 sees a share ``1 - ratio`` of the tokens (``ratio`` is its mask ratio) and view 1 the
    rest; with more, the views see equal shares (``ratio`` must then be ``1 - 1/views``). The views take the tokens
    of a random order (:func:`token_order`, drawn from ``generator`` unless ``order`` is given) in turn: view 0 its
    first ``view_sizes(...)[0]`` positions, view 1 the next, and so on.
    """
    views = check_integer("views", views, minimum=2)
    ratio = check_number("ratio", ratio, minimum=0, maximum=1, open_minimum=True, open_maximum=True)
    if views > 2 and abs(ratio - (1 - 1 / views)) > 1e-9:
        raise ValueError(f"With {views} complementary views each masks 1 - 1/{views} of the tokens; got ratio {ratio}.")
    counts = view_sizes(tokens, views, ratio)
    order = token_order(n, tokens, generator) if order is None else order
    assignment = torch.repeat_interleave(torch.arange(views, device="cpu"), torch.tensor(counts, device="cpu"))
    out = torch.empty(n, tokens, dtype=torch.long, device="cpu")
    out.scatter_(1, order.cpu(), assignment.expand(n, tokens).contiguous())
    return out


def view_sizes(tokens: int, views: int, ratio: float) -> list[int]:
    """Visible tokens of each view (each at least one)."""
    if views == 2:
        first = min(tokens - 1, max(1, round(tokens * (1 - ratio))))
        return [first, tokens - first]
    base = [tokens // views] * views
    for i in range(tokens - sum(base)):
        base[i] += 1
    if min(base) < 1:
        raise ValueError(f"{tokens} tokens cannot be split among {views} views.")
    return base


#: Output stages: ``linear`` (ours: LayerNorm, then a linear map of each token to its patch's pixels) and
#: ``token_conv`` (the authors' code: no decoder LayerNorm; a 1-D convolution whose channels are the tokens and whose
#: kernel and stride cut each token's width into its patch's ``C * p * p`` pixels, mixing tokens).
OUTPUTS = ("linear", "token_conv")
#: Order of a patch's pixels in a token's output: ``p1 p2 c`` (ours) or ``c p1 p2`` (the authors' code).
PATCH_LAYOUTS = ("p1 p2 c", "c p1 p2")
#: ``symmetric``: images enter as ``2x - 1`` and leave as ``(out + 1) / 2`` (ours, and the authors' pre-training);
#: ``unit``: ``[0, 1]`` images enter as they are and the output is returned unscaled (the authors' adversarial stage).
VALUE_RANGES = ("symmetric", "unit")
#: Where a view's encoded tokens are decoded: ``own`` (each at its own position) or ``first`` (the authors' code: the
#: k-th token of every view at the position of the first view's k-th token, in the draw's order).
VIEW_PLACEMENTS = ("own", "first")


@register_network("masked_vit_denoiser")
class MaskedViTDenoiser(nn.Module):
    """Restores an image from K complementary masked views of its patches.

    ``x`` ``(N, C, H, W)`` in ``[0, 1]`` is cut into ``patch_size`` patches (``H/p * W/p`` tokens of ``width``). For
    each view, its visible tokens (plus a class token) go through the shared encoder; the decoder receives every
    token position, the view's encoded tokens (see ``view_placement``) and a learned mask token elsewhere, and the
    output stage maps tokens to pixels. The output is the average of the K reconstructions, ``(N, C, H, W)``, not
    clipped. The defaults are ours; ``output="token_conv", patch_layout="c p1 p2", view_placement="first",
    norm_eps=1e-5`` (and ``value_range`` as trained) compute what the authors' public code computes (see
    docs/official.md).

    :param image_size: Side of the (square) images.
    :param patch_size: Side of a patch (paper 2).
    :param width: Token width (paper 192).
    :param heads: Attention heads (paper 3).
    :param encoder_depth: Encoder blocks (paper 8).
    :param decoder_depth: Decoder blocks (paper 2).
    :param channels: Image channels.
    :param output: One of :data:`OUTPUTS`.
    :param patch_layout: One of :data:`PATCH_LAYOUTS`.
    :param value_range: One of :data:`VALUE_RANGES`.
    :param view_placement: One of :data:`VIEW_PLACEMENTS`; ``first`` needs the draw's order in :meth:`forward`.
    :param norm_eps: Epsilon of the transformer blocks' LayerNorms (timm 1.x: 1e-6; timm 0.6, the authors': 1e-5).
    """

    def __init__(self, image_size: int = 32, patch_size: int = 2, width: int = 192, heads: int = 3,
                 encoder_depth: int = 8, decoder_depth: int = 2, channels: int = 3, output: str = "linear",
                 patch_layout: str = "p1 p2 c", value_range: str = "symmetric", view_placement: str = "own",
                 norm_eps: float = 1e-6) -> None:
        # Imported here: timm (with torchvision) takes seconds to load, and only this network needs it.
        from timm.models.vision_transformer import Block

        super().__init__()
        self._check_shape(image_size, patch_size, width, heads, channels)
        self.output = check_choice("output", output, OUTPUTS)
        self.patch_layout = check_choice("patch_layout", patch_layout, PATCH_LAYOUTS)
        self.value_range = check_choice("value_range", value_range, VALUE_RANGES)
        self.view_placement = check_choice("view_placement", view_placement, VIEW_PLACEMENTS)
        norm = functools.partial(nn.LayerNorm, eps=check_number("norm_eps", norm_eps, minimum=0, open_minimum=True))
        depths = [check_integer(name, depth, minimum=1)
                  for name, depth in (("encoder_depth", encoder_depth), ("decoder_depth", decoder_depth))]
        self.patchify = nn.Conv2d(channels, width, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.encoder_position = nn.Parameter(torch.zeros(1, self.tokens, width))
        self.encoder = nn.Sequential(*(Block(width, heads, norm_layer=norm) for _ in range(depths[0])))
        self.encoder_norm = nn.LayerNorm(width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.decoder_position = nn.Parameter(torch.zeros(1, self.tokens + 1, width))
        self.decoder = nn.Sequential(*(Block(width, heads, norm_layer=norm) for _ in range(depths[1])))
        self.head = self._output_stage()
        for parameter in (self.cls_token, self.encoder_position, self.mask_token, self.decoder_position):
            nn.init.trunc_normal_(parameter, std=0.02)

    def _check_shape(self, image_size: int, patch_size: int, width: int, heads: int, channels: int) -> None:
        self.image_size = check_integer("image_size", image_size, minimum=2)
        self.patch_size = check_integer("patch_size", patch_size, minimum=1, maximum=image_size)
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}.")
        self.width = check_integer("width", width, minimum=1)
        if width % check_integer("heads", heads, minimum=1):
            raise ValueError(f"width {width} is not a multiple of heads {heads}.")
        self.channels = check_integer("channels", channels, minimum=1)
        self.tokens = (image_size // patch_size) ** 2

    def _output_stage(self) -> nn.Module:
        pixels = self.patch_size * self.patch_size * self.channels
        if self.output == "linear":
            self.decoder_norm = nn.LayerNorm(self.width)
            return nn.Linear(self.width, pixels)
        if self.width % pixels:
            raise ValueError(f"The token_conv output cuts a token's width {self.width} into {pixels} pixels: "
                             "width must be a multiple of channels * patch_size ** 2.")
        stride = self.width // pixels
        return nn.Conv1d(self.tokens, self.tokens, stride, stride=stride)

    def forward(self, x: torch.Tensor, views: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        """The average reconstruction of ``x`` from the views ``views`` ``(N, tokens)`` (see
        :func:`complementary_masks`; every image must have the same number of tokens in each view). ``order``: the
        draw's token order the views were cut from, required by ``view_placement="first"``."""
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size or x.shape[1] != self.channels:
            raise ValueError(f"Expected images (N, {self.channels}, {self.image_size}, {self.image_size}), got "
                             f"{tuple(x.shape)}.")
        if views.shape != (x.shape[0], self.tokens):
            raise ValueError(f"Expected views of shape {(x.shape[0], self.tokens)}, got {tuple(views.shape)}.")
        symmetric = self.value_range == "symmetric"
        tokens = self.patchify(x * 2 - 1 if symmetric else x).flatten(2).transpose(1, 2) + self.encoder_position
        positions = self._view_positions(views.to(x.device), None if order is None else order.to(x.device))
        out = sum(self._reconstruct(tokens, visible, placed) for visible, placed in positions) / len(positions)
        return (out + 1) / 2 if symmetric else out

    def _view_positions(self, views: torch.Tensor, order: torch.Tensor | None) -> list[tuple[torch.Tensor, ...]]:
        """For each view, ``(its visible positions, the positions its encoded tokens are decoded at)``, ``(N, k)``."""
        n, count = views.shape[0], int(views.max()) + 1
        sizes = [(views == view).sum(1) for view in range(count)]
        if any(bool((size != size[0]).any()) for size in sizes):
            raise ValueError("Every image must have the same number of visible tokens in a view.")
        if self.view_placement == "own":  # positions in increasing order; the encoder does not depend on it
            visible = [torch.nonzero(views == view, as_tuple=False)[:, 1].view(n, -1) for view in range(count)]
            return [(index, index) for index in visible]
        if order is None or order.shape != views.shape:
            raise ValueError("view_placement='first' decodes by the draw's order: pass order=(N, tokens) positions.")
        starts = torch.cumsum(torch.tensor([0] + [int(size[0]) for size in sizes], device="cpu"), 0).tolist()
        visible = [order[:, starts[view]:starts[view + 1]] for view in range(count)]
        if any(bool((views.gather(1, index) != view).any()) for view, index in enumerate(visible)):
            raise ValueError("order does not match views: each view must take the next positions of the order.")
        return [(index, order[:, :index.shape[1]]) for index in visible]

    def _reconstruct(self, tokens: torch.Tensor, visible: torch.Tensor, placed: torch.Tensor) -> torch.Tensor:
        """One view: encode the ``visible`` tokens, decode every position (encoded tokens at ``placed``), map tokens
        to pixels."""
        n, total, width = tokens.shape
        kept = tokens.gather(1, visible[..., None].expand(-1, -1, width))
        encoded = self.encoder_norm(self.encoder(torch.cat([self.cls_token.expand(n, -1, -1), kept], dim=1)))
        full = self.mask_token.expand(n, total, width).clone()
        full = full.scatter(1, placed[..., None].expand(-1, -1, width), encoded[:, 1:])
        decoded = self.decoder(torch.cat([encoded[:, :1], full], dim=1) + self.decoder_position)[:, 1:]
        patches = self.head(self.decoder_norm(decoded)) if self.output == "linear" else self.head(decoded)
        return self._unpatchify(patches)

    def _unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        n, p, side, c = patches.shape[0], self.patch_size, self.image_size // self.patch_size, self.channels
        if self.patch_layout == "p1 p2 c":
            image = patches.view(n, side, side, p, p, c).permute(0, 5, 1, 3, 2, 4)
        else:
            image = patches.view(n, side, side, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return image.reshape(n, c, self.image_size, self.image_size)
