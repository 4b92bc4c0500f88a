"""CIFAR-10 from the python-layout pickles, full or partial (no md5 check, unlike torchvision)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
FOLDER_NAMES = ("cifar-10-batches-py", "cifar-10-batches-py-partial")
#: CIFAR-10 class names, by label.
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: Environment variable naming a CIFAR-10 root, used by :func:`resolve_cifar10_root`.
ROOT_ENV = "ART_PURIFIERS_CIFAR10"
#: Where CIFAR-10 comes from (the python version), for the message when none is found.
DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def user_data_folder() -> Path:
    """The user cache folder for CIFAR-10: ``$XDG_CACHE_HOME/art-purifiers/data/cifar10`` (default
    ``~/.cache/...``)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "art-purifiers" / "data" / "cifar10"


def resolve_batches_dir(root: str | Path) -> Path:
    """The folder holding ``data_batch_*``/``test_batch``: ``root`` itself or its ``cifar-10-batches-py`` folder (as
    torchvision and the official archive lay it out)."""
    root = Path(root)
    for candidate in (root, *(root / name for name in FOLDER_NAMES)):
        if (candidate / "test_batch").is_file() or (candidate / "data_batch_1").is_file():
            return candidate
    raise FileNotFoundError(f"No CIFAR-10 python batches under {root} (looked for test_batch / data_batch_1 there "
                            f"and in {' and '.join(FOLDER_NAMES)}/). {_WHERE_TO_GET_IT}")


def resolve_cifar10_root(data_root: str | Path | None = None) -> Path:
    """The CIFAR-10 folder to read: ``data_root`` when given, else ``$ART_PURIFIERS_CIFAR10``, else the user cache
    folder (:func:`user_data_folder`). The library never searches the working directory for data.

    :raises FileNotFoundError: With what to download and where, when none of them holds the batches.
    """
    if data_root is not None:
        return resolve_batches_dir(data_root)
    if os.environ.get(ROOT_ENV):
        return resolve_batches_dir(os.environ[ROOT_ENV])
    if user_data_folder().is_dir():
        return resolve_batches_dir(user_data_folder())
    raise FileNotFoundError(f"No CIFAR-10 data: pass --data-root (or data_root=), set ${ROOT_ENV}, or place it in "
                            f"{user_data_folder()}. {_WHERE_TO_GET_IT}")


_WHERE_TO_GET_IT = (f"Download {DOWNLOAD_URL} and extract it (it holds cifar-10-batches-py/), or let torchvision's "
                    "CIFAR10(root, download=True) write it, then point at that folder.")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    # Partial files keep the full label list but fewer image rows.
    labels = np.asarray(batch[b"labels"], dtype=np.int64)[: data.shape[0]]
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10_uint8(
    root: str | Path, split: str = "test", indices: np.ndarray | list[int] | range | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of a split, in file order.

    :param root: Folder with the batches, or its parent (``cifar-10-batches-py[-partial]`` inside).
    :param split: ``"train"`` or ``"test"``.
    :param indices: Positions to keep within the split as loaded (partial folders: the rows present).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    folder = resolve_batches_dir(root)
    files = [folder / name for name in (TRAIN_FILES if split == "train" else TEST_FILES)]
    parts = [_read_batch(path) for path in files if path.is_file()]
    if not parts:
        raise FileNotFoundError(f"No {split} batches in {folder}.")
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if indices is not None:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(labels)):
            raise IndexError(f"indices out of range: the {split} split here has {len(labels)} images.")
        images, labels = images[indices], labels[indices]
    return images, labels


def load_cifar10(
    root: str | Path, split: str = "test", indices: np.ndarray | list[int] | range | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`load_cifar10_uint8` but images as float32 NCHW in ``[0, 1]``."""
    images, labels = load_cifar10_uint8(root, split, indices)
    return images.astype(np.float32) / 255.0, labels
