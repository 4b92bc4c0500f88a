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


#: Bytes per image row of a batch's ``data``: 3 channels x 32 x 32 pixels.
_ROW_BYTES = 3 * 32 * 32


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 pickles ``bytes`` at protocol 2, restricted to that use (other codecs are
    never needed, and looking one up imports modules)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _admitted_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR-10 batch may name: what numpy arrays and ``bytes`` pickle through, in the module
    spellings of numpy 1 (``numpy.core``, the original files) and numpy 2 (``numpy._core``). None runs code beyond
    building an array or a byte string."""
    try:  # numpy 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric
    admitted: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        admitted[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if hasattr(numeric, "_frombuffer"):  # protocol 5 arrays
            admitted[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return admitted


class _RefusedGlobal(pickle.UnpicklingError):
    """A batch named a global that :class:`_BatchUnpickler` does not admit."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 python batches only: dicts, lists, ``bytes``, numbers and numpy arrays. Any other global
    (``os.system``, ``builtins.eval``, a class whose construction runs code...) is refused before it is looked up,
    so a crafted file cannot run code."""

    def __init__(self, handle, admitted: dict[tuple[str, str], object]) -> None:
        super().__init__(handle, encoding="bytes")  # the original files are Python 2 pickles of byte strings
        self._admitted = admitted

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._admitted[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def _unpickle_batch(path: Path) -> dict:
    """The dictionary pickled in ``path``, through :class:`_BatchUnpickler`.

    :raises ValueError: naming ``path``, for a refused global and for any file pickle cannot read (empty,
        truncated, garbage).
    """
    with open(path, "rb") as handle:
        try:
            batch = _BatchUnpickler(handle, _admitted_globals()).load()
        except _RefusedGlobal as error:
            raise ValueError(
                f"{path}: refused to unpickle the global {error}: a CIFAR-10 batch holds only dicts, lists, bytes and "
                "numpy arrays, so this file is not one (it may have been crafted to run code); nothing was run."
            ) from None
        # Any failure of the format (EOFError, UnpicklingError, ValueError, KeyError, ...) means the same thing.
        except Exception as error:
            raise ValueError(
                f"{path}: not a readable CIFAR-10 python batch (empty, truncated or corrupt: "
                f"{type(error).__name__}: {error})."
            ) from error
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: a CIFAR-10 batch is a dict, got {type(batch).__name__}.")
    return batch


def _batch_field(path: Path, batch: dict, name: str) -> object:
    """``batch[name]`` under its byte-string key (Python 2 files) or its string key (files written by Python 3)."""
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    raise ValueError(f"{path}: the CIFAR-10 batch has no {name!r} entry (keys: {sorted(map(repr, batch))}).")


def _batch_images(path: Path, batch: dict) -> np.ndarray:
    """The batch's images ``(N, 3, 32, 32)`` uint8, from its ``data`` ``(N, 3072)`` of integers in ``[0, 255]``."""
    data = _batch_field(path, batch, "data")
    valid = (isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == _ROW_BYTES
             and data.dtype.kind in "ui")
    if not valid:
        shape, dtype = getattr(data, "shape", None), getattr(data, "dtype", type(data).__name__)
        raise ValueError(f"{path}: data must be an (N, {_ROW_BYTES}) integer array (N images of 3x32x32 bytes), "
                         f"got shape {shape} and dtype {dtype}.")
    if data.dtype != np.uint8 and data.size and (data.min() < 0 or data.max() > 255):
        raise ValueError(f"{path}: data holds values outside [0, 255], so they are not pixel bytes.")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)


def _batch_labels(path: Path, batch: dict, count: int) -> np.ndarray:
    """The first ``count`` labels of the batch, int64 in ``[0, 9]`` (partial files keep the full label list but
    fewer image rows)."""
    labels = _batch_field(path, batch, "labels")
    labels = np.asarray(labels) if isinstance(labels, (list, tuple, np.ndarray)) else None
    if labels is None or labels.ndim != 1 or labels.dtype.kind not in "ui" or len(labels) < count:
        raise ValueError(f"{path}: labels must be a list of at least {count} integers (one per image row).")
    labels = labels[:count].astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise ValueError(f"{path}: labels must lie in [0, {len(CLASSES) - 1}].")
    return labels


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one python-layout batch file.

    Unpickled with only the globals numpy arrays need admitted (never an unrestricted ``pickle.load``: a crafted
    batch could run code), then checked; every problem is one ``ValueError`` naming the file.
    """
    batch = _unpickle_batch(path)
    images = _batch_images(path, batch)
    return images, _batch_labels(path, batch, len(images))


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
