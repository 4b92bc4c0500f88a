"""DIR's denoiser (Zhou et al., ICML 2023): a masked ViT fed K complementary random masks of the patch tokens; each
view is encoded from its visible tokens, decoded with every token at its own position, and the K reconstructions
are averaged. Plain modules: no classifier and no ART inside."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from art_purifiers.checks import check_integer, check_number
from art_purifiers.nn.registry import register_network


def complementary_masks(n: int, tokens: int, views: int = 2, ratio: float = 0.5,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """A random partition of each image's tokens among ``views`` views: ``(n, tokens)`` integers in
    ``[0, views)``, the view that sees each token (every token is visible in exactly one view, masked in the others).

    With two views, view 0 sees a share ``1 - ratio`` of the tokens (``ratio`` is its mask ratio) and view 1 the
    rest; with more, the views see equal shares (``ratio`` must then be ``1 - 1/views``). Drawn on the CPU from
    ``generator``, one permutation per image.
    """
    views = check_integer("views", views, minimum=2)
    ratio = check_number("ratio", ratio, minimum=0, maximum=1, open_minimum=True, open_maximum=True)
    if views > 2 and abs(ratio - (1 - 1 / views)) > 1e-9:
        raise ValueError(f"With {views} complementary views each masks 1 - 1/{views} of the tokens; got ratio {ratio}.")
    counts = view_sizes(tokens, views, ratio)
    order = torch.argsort(torch.rand(n, tokens, generator=generator), dim=1)
    assignment = torch.repeat_interleave(torch.arange(views), torch.tensor(counts))
    out = torch.empty(n, tokens, dtype=torch.long)
    out.scatter_(1, order, assignment.expand(n, tokens).contiguous())
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


@register_network("masked_vit_denoiser")
class MaskedViTDenoiser(nn.Module):
    """Restores an image from K complementary masked views of its patches.

    ``x`` ``(N, C, H, W)`` in ``[0, 1]`` is cut into ``patch_size`` patches (``H/p * W/p`` tokens of ``width``). For
    each view, its visible tokens (plus a class token) go through the shared encoder; the decoder receives every
    token position, the view's encoded tokens at *their own* positions and a learned mask token elsewhere, and a
    linear head maps each token to its patch's pixels. The output is the average of the K reconstructions, ``(N, C,
    H, W)``, not clipped. (The public code decodes view 2's tokens at view 1's positions and maps tokens to pixels
    with a token-mixing 1-D convolution; see docs/defences/dir.md.)

    :param image_size: Side of the (square) images.
    :param patch_size: Side of a patch (paper 2).
    :param width: Token width (paper 192).
    :param heads: Attention heads (paper 3).
    :param encoder_depth: Encoder blocks (paper 8).
    :param decoder_depth: Decoder blocks (paper 2).
    :param channels: Image channels.
    """

    def __init__(self, image_size: int = 32, patch_size: int = 2, width: int = 192, heads: int = 3,
                 encoder_depth: int = 8, decoder_depth: int = 2, channels: int = 3) -> None:
        super().__init__()
        self.image_size = check_integer("image_size", image_size, minimum=2)
        self.patch_size = check_integer("patch_size", patch_size, minimum=1, maximum=image_size)
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}.")
        self.width = check_integer("width", width, minimum=1)
        if width % check_integer("heads", heads, minimum=1):
            raise ValueError(f"width {width} is not a multiple of heads {heads}.")
        self.channels = check_integer("channels", channels, minimum=1)
        self.tokens = (image_size // patch_size) ** 2
        self.patchify = nn.Conv2d(channels, width, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.encoder_position = nn.Parameter(torch.zeros(1, self.tokens, width))
        self.encoder = nn.Sequential(*(Block(width, heads) for _ in range(check_integer("encoder_depth", encoder_depth,
                                                                                          minimum=1))))
        self.encoder_norm = nn.LayerNorm(width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.decoder_position = nn.Parameter(torch.zeros(1, self.tokens + 1, width))
        self.decoder = nn.Sequential(*(Block(width, heads) for _ in range(check_integer("decoder_depth", decoder_depth,
                                                                                          minimum=1))))
        self.decoder_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, patch_size * patch_size * channels)
        for parameter in (self.cls_token, self.encoder_position, self.mask_token, self.decoder_position):
            nn.init.trunc_normal_(parameter, std=0.02)

    def forward(self, x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """The average reconstruction of ``x`` from the views ``views`` ``(N, tokens)`` (see
        :func:`complementary_masks`; every image must have the same number of tokens in each view)."""
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size or x.shape[1] != self.channels:
            raise ValueError(f"Expected images (N, {self.channels}, {self.image_size}, {self.image_size}), got "
                             f"{tuple(x.shape)}.")
        if views.shape != (x.shape[0], self.tokens):
            raise ValueError(f"Expected views of shape {(x.shape[0], self.tokens)}, got {tuple(views.shape)}.")
        tokens = self.patchify(x * 2 - 1).flatten(2).transpose(1, 2) + self.encoder_position
        views = views.to(x.device)
        count = int(views.max()) + 1
        out = sum(self._reconstruct(tokens, views == view) for view in range(count)) / count
        return (out + 1) / 2

    def _reconstruct(self, tokens: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """One view: encode the visible tokens, decode every position, map tokens to pixels."""
        n, total, width = tokens.shape
        per_image = visible.sum(1)
        if bool((per_image != per_image[0]).any()):
            raise ValueError("Every image must have the same number of visible tokens in a view.")
        index = torch.nonzero(visible, as_tuple=False)[:, 1].view(n, -1)  # visible positions, in order
        kept = tokens.gather(1, index[..., None].expand(-1, -1, width))
        encoded = self.encoder_norm(self.encoder(torch.cat([self.cls_token.expand(n, -1, -1), kept], dim=1)))
        full = self.mask_token.expand(n, total, width).clone()
        full = full.scatter(1, index[..., None].expand(-1, -1, width), encoded[:, 1:])
        decoded = self.decoder(torch.cat([encoded[:, :1], full], dim=1) + self.decoder_position)
        return self._unpatchify(self.head(self.decoder_norm(decoded[:, 1:])))

    def _unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        n, p, side = patches.shape[0], self.patch_size, self.image_size // self.patch_size
        image = patches.view(n, side, side, p, p, self.channels).permute(0, 5, 1, 3, 2, 4)
        return image.reshape(n, self.channels, self.image_size, self.image_size)
