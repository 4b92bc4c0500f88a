"""CIFAR-10 loaders and the test sample bundled with the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from art_purifiers.data.cifar10 import (
    CLASSES,
    load_cifar10,
    load_cifar10_uint8,
    resolve_batches_dir,
    resolve_cifar10_root,
    user_data_folder,
)

__all__ = [
    "CLASSES",
    "load_cifar10",
    "load_cifar10_uint8",
    "load_sample",
    "load_test_images",
    "resolve_batches_dir",
    "resolve_cifar10_root",
    "user_data_folder",
    "SAMPLE_INDICES",
]

#: CIFAR-10 test-set indices of the bundled sample.
SAMPLE_INDICES = range(200)
_SAMPLE_FILE = "cifar10_test_sample.npz"


def load_sample(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The bundled CIFAR-10 sample: test images 0..199, float32 ``(N, 3, 32, 32)`` in ``[0, 1]``, int64 labels.

    :param n: Keep only the first ``n`` images.
    """
    with resources.files(__name__).joinpath(_SAMPLE_FILE).open("rb") as handle:
        archive = np.load(handle)
        images, labels = archive["images"], archive["labels"].astype(np.int64)
    if n is not None:
        if n > len(labels):
            raise ValueError(f"The bundled sample has {len(labels)} images; for more, pass a CIFAR-10 data root.")
        images, labels = images[:n], labels[:n]
    return images.astype(np.float32) / 255.0, labels


def load_test_images(data_root: str | Path | None = None, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 test images ``0..n-1``: from ``data_root`` when given, else from the bundled sample."""
    if data_root is None:
        return load_sample(n)
    return load_cifar10(data_root, "test", None if n is None else range(n))
