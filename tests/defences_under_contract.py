"""The defences that the ART contract suite (``test_contract.py``) checks.

A new defence joins the suite by adding one :class:`ContractCase` here: a factory taking ``gradient`` (and
keyword overrides), and the gradient modes it supports. Factories must be cheap (tiny presets). Input purifiers
(``PurifierPreprocessor``) go in :data:`CASES` and meet the preprocessor contract too; defences that change the
model go in :data:`MODEL_CASES`; both meet the deployment contract (``test_contract.TestDeployment``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from conftest import TinyCNN
from torch import nn

from art_purifiers import IRADPreprocessor, ResamplingPreprocessor
from art_purifiers.base import PurifierPreprocessor
from art_purifiers.defences.art import ARTPreprocessor
from art_purifiers.defences.dip import DIPDefendPreprocessor, DIPPreprocessor
from art_purifiers.defences.dir import DIRPreprocessor
from art_purifiers.defences.idfr import IDFRDefence, IDFRPreprocessor
from art_purifiers.deploy import Defence, DefenceChain, EmbeddingDefence
from art_purifiers.nn import ImplicitRepresentation, SampleNet, SkipNetConfig
from art_purifiers.nn.idfr import FeatureRestorer, InputDenoiser
from art_purifiers.nn.masked_vit import MaskedViTDenoiser
from art_purifiers.training.dir import DIRTrainingConfig
from art_purifiers.training.dir import export_weights as export_dir_weights
from art_purifiers.training.idfr import IDFRTrainingConfig
from art_purifiers.training.idfr import export_weights as export_idfr_weights
from art_purifiers.training.irad import IRADTrainingConfig, export_weights
from art_purifiers.weights import save_networks

TINY_IRAD = IRADTrainingConfig(blocks=1, features=8, hidden=(16,), samplenet_hidden=(16,), max_shift=1.0)
TINY_DIP = SkipNetConfig(channels=(4, 8), skip=(2, 2))


@cache
def dip_victim() -> nn.Module:
    torch.manual_seed(1)
    return TinyCNN().eval()


def tiny_dip(**kwargs) -> DIPPreprocessor:
    return DIPPreprocessor(dip_victim(), TINY_DIP, iterations=6, snapshots=3, warmup=0, grid=4, keep=2, **kwargs)


def tiny_dipdefend(**kwargs) -> DIPDefendPreprocessor:
    return DIPDefendPreprocessor(TINY_DIP, iterations=6, smoothing=0.5, **kwargs)


@cache
def tiny_irad_weights() -> Path:
    """An IRAD weight file with tiny, randomly initialised networks (the contract needs no trained weights)."""
    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp(prefix="art_purifiers_test_")) / "irad_tiny.safetensors"
    representation = ImplicitRepresentation(TINY_IRAD.blocks, TINY_IRAD.features, TINY_IRAD.hidden)
    samplenet = SampleNet(TINY_IRAD.features, TINY_IRAD.samplenet_hidden, TINY_IRAD.max_shift)
    export_weights(representation, samplenet, TINY_IRAD, path)
    return path


TINY_IDFR_WIDTHS = (4, 4, 8, 8, 8, 8, 8, 8)


@cache
def tiny_idfr_weights() -> Path:
    """An IDFR weight file: a tiny denoiser (non-zero last layer, so it changes the image) and a restorer for
    64-dimensional embeddings (TinyCNN's and the CIFAR ResNets')."""
    torch.manual_seed(0)
    denoiser = InputDenoiser(widths=TINY_IDFR_WIDTHS)
    nn.init.normal_(denoiser.layer9.weight, std=0.01)
    restorer = FeatureRestorer(64)
    path = Path(tempfile.mkdtemp(prefix="art_purifiers_test_")) / "idfr_tiny.safetensors"
    export_idfr_weights(denoiser, restorer, IDFRTrainingConfig(), path, "TinyCNN")
    return path


TINY_DIR = DIRTrainingConfig(patch_size=8, width=24, heads=2, encoder_depth=1, decoder_depth=1)


@cache
def tiny_dir_weights() -> Path:
    """A DIR weight file with a tiny, randomly initialised masked ViT (patch 8: 16 tokens)."""
    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp(prefix="art_purifiers_test_")) / "dir_tiny.safetensors"
    export_dir_weights(MaskedViTDenoiser(**TINY_DIR.architecture()), TINY_DIR, path, "TinyCNN")
    return path


@cache
def tiny_authors_variant_weights() -> tuple[Path, Path]:
    """IRAD and DIR weight files in the authors' variants, as import-weights writes them (tiny, random): a SampleNet
    with its own encoder on the raw image and shifts in normalised units; a masked ViT with the token-mixing output,
    channel-major patches, unscaled ``[0, 1]`` values and the second view decoded at the first view's positions."""
    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="art_purifiers_test_"))
    encoder = {"name": "edsr", "args": {"blocks": 1, "features": 8}}
    networks = {"representation": ImplicitRepresentation(hidden=(16,), encoder=encoder),
                "samplenet": SampleNet(hidden=(16,), max_shift=1.0, encoder=encoder, units="normalised")}
    save_networks(networks, folder / "irad.safetensors", {"method": "irad"})
    denoiser = MaskedViTDenoiser(image_size=32, patch_size=4, width=48, heads=2, encoder_depth=1, decoder_depth=1,
                                 output="token_conv", patch_layout="c p1 p2", value_range="unit",
                                 view_placement="first", norm_eps=1e-5)
    save_networks({"denoiser": denoiser}, folder / "dir.safetensors", {"method": "dir"})
    return folder / "irad.safetensors", folder / "dir.safetensors"


class ConvPurifier(PurifierPreprocessor):
    """Test double: a frozen residual convolution, so the contract also covers defences holding networks."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        torch.manual_seed(0)
        conv = nn.Conv2d(3, 3, 3, padding=1)
        nn.init.normal_(conv.weight, std=0.05)
        self.register_network("denoiser", conv)
        self._check_params()

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x + 0.1 * torch.tanh(self.denoiser(x))


def near_identity(dimension: int = 64) -> nn.Linear:
    """A linear map close to the identity on embeddings: a model-changing defence's test double with weights."""
    torch.manual_seed(2)
    layer = nn.Linear(dimension, dimension)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dimension) + 0.05 * torch.randn(dimension, dimension))
        layer.bias.mul_(0.1)
    return layer


def embedding_identity(gradient: str = "exact", **_) -> EmbeddingDefence:
    """Test double of a model-changing defence: the identity between the victim's encoder and head."""
    return EmbeddingDefence(nn.Identity(), gradient=gradient)


def embedding_linear(gradient: str = "exact", **_) -> EmbeddingDefence:
    return EmbeddingDefence(near_identity(), gradient=gradient)


def purifier_then_embedding(gradient: str = "exact", **kwargs) -> DefenceChain:
    """An input purifier and a model change together, as IDFR deploys them."""
    return DefenceChain([ConvPurifier(gradient=gradient, **kwargs), embedding_linear(gradient)])


@dataclass(frozen=True)
class ContractCase:
    name: str
    factory: Callable[..., Defence]
    gradients: tuple[str, ...] = ("exact", "bpda")


CASES = [
    ContractCase("resampling-bilinear-invariant", lambda **kw: ResamplingPreprocessor("bilinear", "invariant", **kw)),
    ContractCase("resampling-nearest-invariant", lambda **kw: ResamplingPreprocessor("nearest", "invariant", **kw)),
    ContractCase("resampling-bilinear-variant", lambda **kw: ResamplingPreprocessor("bilinear", "variant", **kw)),
    ContractCase("resampling-nearest-variant", lambda **kw: ResamplingPreprocessor("nearest", "variant", **kw)),
    ContractCase("conv-purifier-test-double", ConvPurifier),
    ContractCase("irad-samplenet", lambda **kw: IRADPreprocessor(tiny_irad_weights(), "samplenet", **kw)),
    ContractCase("irad-no-sampling", lambda **kw: IRADPreprocessor(tiny_irad_weights(), "none", **kw)),
    ContractCase("irad-variant", lambda **kw: IRADPreprocessor(tiny_irad_weights(), "variant", **kw)),
    ContractCase("irad-authors-variant", lambda **kw: IRADPreprocessor(tiny_authors_variant_weights()[0], **kw)),
    ContractCase("dir-authors-variant", lambda **kw: DIRPreprocessor(tiny_authors_variant_weights()[1], **kw)),
    ContractCase("dip", tiny_dip, gradients=("bpda", "full")),
    ContractCase("dipdefend", tiny_dipdefend, gradients=("bpda", "full")),
    ContractCase("idfr-denoiser", lambda **kw: IDFRPreprocessor(tiny_idfr_weights(), **kw)),
    ContractCase("dir", lambda **kw: DIRPreprocessor(tiny_dir_weights(), **kw)),
    ContractCase("dir-three-views", lambda **kw: DIRPreprocessor(tiny_dir_weights(), masks=3, ratio=2 / 3, **kw)),
    ContractCase("art-jpeg", lambda **kw: ARTPreprocessor("JpegCompression", options={"quality": 50}, **kw),
                 gradients=("bpda",)),
    ContractCase("art-feature-squeezing", lambda **kw: ARTPreprocessor("FeatureSqueezing", options={"bit_depth": 4},
                                                                       **kw), gradients=("bpda",)),
    ContractCase("art-spatial-smoothing", lambda **kw: ARTPreprocessor("SpatialSmoothing", **kw), gradients=("bpda",)),
    ContractCase("art-total-variation", lambda **kw: ARTPreprocessor("TotalVarMin", options={"max_iter": 2}, **kw),
                 gradients=("bpda",)),
]

#: Defences that change the model (not preprocessors), alone or chained with a purifier.
MODEL_CASES = [
    ContractCase("embedding-identity", embedding_identity),
    ContractCase("embedding-linear", embedding_linear),
    ContractCase("purifier-then-embedding", purifier_then_embedding),
    ContractCase("idfr", lambda **kw: IDFRDefence(tiny_idfr_weights(), **kw)),
]

#: (case, gradient mode) pairs, with readable ids, for ``pytest.mark.parametrize``.
CASE_MODES = [(case, mode) for case in CASES for mode in case.gradients]
CASE_MODE_IDS = [f"{case.name}-{mode}" for case, mode in CASE_MODES]
#: Every defence, preprocessor or not, with each of its gradient modes: the deployment contract.
DEPLOY_MODES = [(case, mode) for case in CASES + MODEL_CASES for mode in case.gradients]
DEPLOY_MODE_IDS = [f"{case.name}-{mode}" for case, mode in DEPLOY_MODES]
