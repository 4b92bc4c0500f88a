"""Resumable attack progress: an ``.npz`` file (no pickles) holding the attacked inputs ``x`` beside the attack's own
arrays, written atomically, so that an interrupted attack resumes where it stopped and never on other inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_progress(path: Path | None, x: np.ndarray) -> dict[str, np.ndarray] | None:
    """The arrays saved at ``path`` for exactly these inputs ``x``; ``None`` without a file or when it was saved for
    other inputs. The caller checks its own arrays (shape, dtype, finite) before using them."""
    if path is None or not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as saved:
        if "x" not in saved.files or saved["x"].shape != x.shape or not np.array_equal(saved["x"], x):
            return None
        return {name: saved[name].copy() for name in saved.files if name != "x"}


def save_progress(path: Path | None, x: np.ndarray, **arrays: np.ndarray) -> None:
    """Save ``arrays`` for the inputs ``x`` at ``path`` (no-op for ``None``); a crash mid-write leaves the previous
    file intact."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, **arrays)
    tmp.replace(path)
