"""art-purifiers: adversarial-purification defences as ART preprocessors.

Each input purifier is a :class:`~art_purifiers.base.PurifierPreprocessor`, ready for
``PyTorchClassifier(..., preprocessing_defences=[defence])``; every defence, purifier or model change, is a
:class:`~art_purifiers.deploy.Defence` with ``deploy(victim)``.
"""

from art_purifiers.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "GRADIENT_MODES": "art_purifiers.deploy",
    "Defence": "art_purifiers.deploy",
    "DefenceChain": "art_purifiers.deploy",
    "Deployment": "art_purifiers.deploy",
    "EmbeddingDefence": "art_purifiers.deploy",
    "PurifierPreprocessor": "art_purifiers.base",
    "ARTPreprocessor": "art_purifiers.defences",
    "DIPDefendPreprocessor": "art_purifiers.defences",
    "DIPPreprocessor": "art_purifiers.defences",
    "DIRPreprocessor": "art_purifiers.defences",
    "IDFRDefence": "art_purifiers.defences",
    "IDFRPreprocessor": "art_purifiers.defences",
    "IRADPreprocessor": "art_purifiers.defences",
    "ResamplingPreprocessor": "art_purifiers.defences",
}
__all__ = [*_EXPORTS, "__version__"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
