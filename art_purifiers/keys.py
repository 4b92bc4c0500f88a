"""Fingerprints: stable hashes of everything that determines a cached artefact or names a defence.

A key is built from arrays (images, labels), tensors and modules (every weight byte, with names, dtypes and
shapes) and JSON-able settings, so that two artefacts share a key only if they were made from the same inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn


def update_with_tensor(digest, name: str, tensor: torch.Tensor) -> None:
    """Feed one named tensor (name, dtype, shape and raw bytes) to a hashlib digest."""
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def tensors_digest(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Hex sha256 of named tensors, in name order (so the order of a state dict does not matter)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        update_with_tensor(digest, name, tensor)
    return digest.hexdigest()


def fingerprint(*parts) -> str:
    """A short stable hash of arrays, tensors, modules, objects with a ``fingerprint()`` method (defences) and
    JSON-able settings, in the order given."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"array|{part.dtype}|{part.shape}|".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, torch.Tensor):
            update_with_tensor(digest, "tensor", part)
        elif isinstance(part, nn.Module):
            digest.update(f"module|{tensors_digest(part.state_dict().items())}".encode())
        elif callable(getattr(part, "fingerprint", None)):
            digest.update(f"defence|{part.fingerprint()}".encode())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]
