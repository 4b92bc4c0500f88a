"""art-purifiers: adversarial-purification defences as ART preprocessors.

Each input purifier is a :class:`~art_purifiers.base.PurifierPreprocessor`, ready for
``PyTorchClassifier(..., preprocessing_defences=[defence])``; every defence, purifier or model change, is a
:class:`~art_purifiers.deploy.Defence` with ``deploy(victim)``. Every registered method's adapter is exported here
too (:func:`~art_purifiers.methods.register_method`).
"""

from art_purifiers import methods
from art_purifiers.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "GRADIENT_MODES": "art_purifiers.deploy",
    "Defence": "art_purifiers.deploy",
    "DefenceChain": "art_purifiers.deploy",
    "Deployment": "art_purifiers.deploy",
    "EmbeddingDefence": "art_purifiers.deploy",
    "PurifierPreprocessor": "art_purifiers.base",
    "ARTPreprocessor": "art_purifiers.defences.art",
}


def _exports() -> dict[str, object]:
    """The package's own exports and those of every registered method (read on each access)."""
    return {**methods.exports(), **_EXPORTS}


_lazy = lazy_exports(__name__, _exports)


def __getattr__(name: str):
    if name == "__all__":  # names registered after the import are exported too
        return [*_exports(), "__version__"]
    return _lazy(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_exports()})
