"""art-purifiers: adversarial-purification defences as ART preprocessors.

Each defence is a :class:`~art_purifiers.base.PurifierPreprocessor`, ready for
``PyTorchClassifier(..., preprocessing_defences=[defence])``.
"""

from art_purifiers.base import GRADIENT_MODES, PurifierPreprocessor
from art_purifiers.defences import DIPDefendPreprocessor, DIPPreprocessor, IRADPreprocessor, ResamplingPreprocessor

__version__ = "0.1.0"

__all__ = [
    "GRADIENT_MODES",
    "DIPDefendPreprocessor",
    "DIPPreprocessor",
    "IRADPreprocessor",
    "PurifierPreprocessor",
    "ResamplingPreprocessor",
    "__version__",
]
