"""Resumable attack progress: an ``.npz`` file (no pickles) holding the attacked inputs ``x``, the adversarial
examples so far ``x_adv`` and the attack's own arrays, written atomically, so that an interrupted attack resumes
where it stopped and never on other inputs."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np


def load_progress(path: Path | None, x: np.ndarray) -> dict[str, np.ndarray] | None:
    """The arrays saved at ``path`` for exactly these inputs ``x`` (``x_adv`` checked: finite float32 of ``x``'s shape);
    ``None`` without a file or when it was saved for other inputs. The caller checks its own arrays before use."""
    if path is None or not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if "x" not in saved.files or saved["x"].shape != x.shape or not np.array_equal(saved["x"], x):
                return None
            arrays = {name: saved[name].copy() for name in saved.files if name != "x"}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"Progress file {path} is not readable ({type(error).__name__}: {error}); delete it to "
                         "restart the attack from the beginning.") from None
    x_adv = arrays.get("x_adv")
    if x_adv is None or x_adv.shape != x.shape or x_adv.dtype != np.float32 or not np.isfinite(x_adv).all():
        raise ValueError(f"Progress file {path}: x_adv must be finite float32 of shape {x.shape}.")
    return arrays


def save_progress(path: Path | None, x: np.ndarray, x_adv: np.ndarray, **arrays: np.ndarray) -> None:
    """Save ``x_adv`` and ``arrays`` for the inputs ``x`` at ``path`` (no-op for ``None``); a crash mid-write leaves
    the previous file intact."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, x_adv=x_adv, **arrays)
    tmp.replace(path)
