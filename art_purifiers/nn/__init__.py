"""Plain torch networks and functional ops used by the defences (no ART here)."""

from art_purifiers.nn.dip import DIP_PRESETS, BatchedSkipNet, SkipNetConfig
from art_purifiers.nn.edsr import EDSREncoder
from art_purifiers.nn.idfr import FeatureRestorer, InputDenoiser
from art_purifiers.nn.implicit import ImplicitRepresentation, query_grid
from art_purifiers.nn.liif import LocalImplicitDecoder, pixel_centres
from art_purifiers.nn.masked_vit import MaskedViTDenoiser, complementary_masks
from art_purifiers.nn.rcan import RCANEncoder
from art_purifiers.nn.rdn import RDNEncoder
from art_purifiers.nn.resampling import pixel_grid, shift_resample
from art_purifiers.nn.samplenet import SampleNet

__all__ = [
    "DIP_PRESETS",
    "BatchedSkipNet",
    "SkipNetConfig",
    "EDSREncoder",
    "FeatureRestorer",
    "InputDenoiser",
    "ImplicitRepresentation",
    "LocalImplicitDecoder",
    "MaskedViTDenoiser",
    "RCANEncoder",
    "RDNEncoder",
    "SampleNet",
    "complementary_masks",
    "pixel_centres",
    "pixel_grid",
    "query_grid",
    "shift_resample",
]
