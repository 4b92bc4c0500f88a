"""Weight files shipped inside the package, and safe (safetensors-only, sha256-checked) weight I/O.

Every shipped file is listed in ``registry.json`` with its sha256, licence and provenance (the command that
built it). :func:`load_weights` refuses a file whose hash differs and never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

_PACKAGE = "art_purifiers.weights"


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def registry() -> dict[str, dict]:
    """The registry of shipped weights: ``{name: {"file", "sha256", "license", "source", ...}}``."""
    text = resources.files(_PACKAGE).joinpath("registry.json").read_text(encoding="utf-8")
    return json.loads(text)


def weights_path(name: str) -> Path:
    """Path of the shipped weight file registered as ``name``."""
    entries = registry()
    if name not in entries:
        raise KeyError(f"No shipped weights named {name!r}; available: {sorted(entries)}.")
    return Path(str(resources.files(_PACKAGE).joinpath(entries[name]["file"])))


def load_safetensors(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file onto the CPU, checking its sha256 when one is given."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Only .safetensors weight files are loaded, got {path.name!r}.")
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256:
            raise ValueError(f"sha256 mismatch for {path}: expected {sha256}, got {actual}.")
    return load_file(str(path), device="cpu")


def read_metadata(path: str | Path) -> dict:
    """The metadata dictionary :func:`save_safetensors` stored with a file (``{}`` if none)."""
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    return json.loads(header.get("art_purifiers", "{}"))


def load_weights(name: str) -> dict[str, torch.Tensor]:
    """State dict of the shipped weights ``name`` (sha256 checked against the registry)."""
    return load_safetensors(weights_path(name), registry()[name]["sha256"])


def save_safetensors(state_dict: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> str:
    """Save a state dict as safetensors (contiguous CPU tensors) and return the file's sha256.

    ``metadata`` is stored as one JSON string under the key ``"art_purifiers"``: safetensors writes several
    metadata keys in an unspecified order, which would make the bytes (and the sha256) vary between runs.
    """
    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    header = {"art_purifiers": json.dumps(metadata or {}, sort_keys=True, default=str)}
    save_file(tensors, str(path), metadata=header)
    return sha256_of(path)
