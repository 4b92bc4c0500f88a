"""Weights: the registry of files shipped inside the package and the one loader every method uses.

Every shipped file is listed in ``registry.json`` with its method, sha256, architecture, licence, source and the
command that built it. :func:`load_weights` resolves a registered name or a user's file, refuses anything but
safetensors, checks the sha256 of shipped files and that every tensor is finite, and never unpickles anything.
:func:`load_into` fills a network strictly, turning missing, unexpected or mis-shaped tensors into one clear error.

A weight file says what networks it holds: its metadata maps each network's key (the prefix of its tensors) to the
network's spec ``{"name", "args"}`` (:mod:`art_purifiers.nn.registry`). :func:`save_networks` writes such a file and
:func:`load_networks` rebuilds every network of any method from it; files written before specs existed are read through
:mod:`art_purifiers.weights.legacy`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from art_purifiers.nn.registry import create_network

_PACKAGE = "art_purifiers.weights"
#: Fields every registry entry holds.
REGISTRY_FIELDS = ("file", "method", "sha256", "architecture", "license", "source", "built_by")


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def registry() -> dict[str, dict]:
    """The registry of shipped weights: ``{name: {"file", "method", "sha256", "license", ...}}``."""
    text = resources.files(_PACKAGE).joinpath("registry.json").read_text(encoding="utf-8")
    return json.loads(text)


def weights_path(name: str) -> Path:
    """Path of the shipped weight file registered as ``name``."""
    entries = registry()
    if name not in entries:
        raise KeyError(f"No shipped weights named {name!r}; available: {sorted(entries)}.")
    return Path(str(resources.files(_PACKAGE).joinpath(entries[name]["file"])))


def load_safetensors(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file on the CPU; the sha256 is checked when given, every tensor must be finite."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Only .safetensors weight files are loaded, got {path.name!r}.")
    if not path.is_file():
        raise FileNotFoundError(f"No weight file {path}.")
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256:
            raise ValueError(f"sha256 mismatch for {path}: expected {sha256}, got {actual}.")
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}).") from error
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{path}: tensor {key!r} holds NaN or infinite values.")
    return tensors


def read_metadata(path: str | Path) -> dict:
    """The metadata dictionary :func:`save_safetensors` stored with a file (``{}`` if none)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        return json.loads(header.get("art_purifiers", "{}"))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}).") from error


@dataclass(frozen=True)
class Weights:
    """A loaded weight file: its tensors (CPU), the metadata stored with it, where it came from."""

    tensors: dict[str, torch.Tensor]
    metadata: dict
    path: Path
    name: str | None = None

    def subset(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix.``, with the prefix removed."""
        return {k.removeprefix(f"{prefix}."): v for k, v in self.tensors.items() if k.startswith(f"{prefix}.")}


def resolve_registered(name_or_path: str | Path, method: str | None = None) -> str | None:
    """The registry name meant by ``name_or_path`` (``"cifar10"`` with ``method="irad"`` is ``irad_cifar10``),
    or ``None`` when it names no shipped file."""
    name, entries = str(name_or_path), registry()
    for candidate in (name, f"{method}_{name}" if method else None):
        if candidate in entries and (method is None or entries[candidate]["method"] == method):
            return candidate
    return None


def load_weights(name_or_path: str | Path, method: str | None = None) -> Weights:
    """Load shipped weights by registry name, or a user's ``.safetensors`` file by path.

    :param name_or_path: A registry name (``"irad_cifar10"``; ``"cifar10"`` with ``method="irad"``), or a path.
    :param method: The method the weights must belong to (``"irad"``, ``"victim"``, ...): a shipped file of
        another method is refused, and a user file must say this method in its metadata when it says any.
    :raises ValueError: Unknown name, wrong method, not safetensors, sha256 mismatch, non-finite tensors.
    """
    registered = resolve_registered(name_or_path, method)
    if registered is not None:
        entry = registry()[registered]
        path = weights_path(registered)
        return Weights(load_safetensors(path, entry["sha256"]), read_metadata(path), path, registered)
    path = Path(name_or_path)
    if not path.is_file():
        known = sorted(k for k, v in registry().items() if method is None or v["method"] == method)
        raise ValueError(f"No weights {str(name_or_path)!r}: neither a registered name ({known}) nor a file.")
    tensors, metadata = load_safetensors(path), read_metadata(path)
    stated = metadata.get("method")
    if method is not None and stated is not None and stated != method:
        raise ValueError(f"{path} holds {stated} weights, not {method} weights.")
    return Weights(tensors, metadata, path)


def load_into(network: nn.Module, tensors: dict[str, torch.Tensor], source: str | Path) -> nn.Module:
    """Load ``tensors`` into ``network`` strictly; a missing, unexpected or mis-shaped tensor is one clear error."""
    expected = network.state_dict()
    # Batch norm's step counter is absent from old checkpoints; torch fills it in itself.
    missing = sorted(k for k in set(expected) - set(tensors) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        groups = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        details = [f"{label}: {keys[:4]}{' ...' if len(keys) > 4 else ''}" for label, keys in groups if keys]
        raise ValueError(f"{source} does not fit {type(network).__name__} ({'; '.join(details)}).")
    network.load_state_dict(tensors, strict=not any(k.endswith("num_batches_tracked") for k in expected
                                                    if k not in tensors))
    return network


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


#: Version of the metadata layout :func:`save_networks` writes (files without it predate network specs).
FORMAT = 2


def save_networks(networks: dict[str, nn.Module], path: str | Path, metadata: dict) -> str:
    """Save registered networks in one safetensors file, each network's tensors under ``KEY.`` and its spec under
    ``metadata["networks"][KEY]``; return the file's sha256.

    :param networks: ``{key: network}``; every network must be registered (it carries ``network_spec``). The key
        ``""`` stores the one network of a file without a prefix (as victim files hold their classifier); it cannot
        be combined with other keys.
    :param metadata: The rest of the metadata: ``method`` (required), provenance, ...
    """
    if "method" not in metadata:
        raise ValueError("A weight file's metadata must name its method.")
    if "" in networks and len(networks) > 1:
        raise ValueError(f"The key '' (tensors without a prefix) holds a file's only network, not one of "
                         f"{sorted(networks)}.")
    specs, state = {}, {}
    for key, network in networks.items():
        spec = getattr(network, "network_spec", None)
        if spec is None:
            raise ValueError(f"Network {key!r} ({type(network).__name__}) is not a registered network.")
        specs[key] = spec
        state.update({f"{key}.{name}" if key else name: value for name, value in network.state_dict().items()})
    return save_safetensors(state, path, metadata={**metadata, "format": FORMAT, "networks": specs})


def network_specs(loaded: Weights, method: str | None = None) -> dict[str, dict]:
    """``{key: spec}`` of the networks a loaded file holds: from its metadata, or translated from the layout of a
    file written before specs existed."""
    specs = loaded.metadata.get("networks")
    if specs is None:
        from art_purifiers.weights.legacy import legacy_specs

        return legacy_specs(loaded, method)
    if not isinstance(specs, dict) or not specs:
        raise ValueError(f"{loaded.path}: its metadata's 'networks' must map keys to network specs, got {specs!r}.")
    return specs


def load_networks(name_or_path: str | Path, method: str | None = None) -> tuple[dict[str, nn.Module], dict]:
    """Every network of a weight file, built from its spec and filled strictly, and the file's metadata.

    :param name_or_path: As for :func:`load_weights`.
    :param method: The method the weights must belong to.
    :return: ``({key: network in eval mode}, metadata)``.
    :raises ValueError: Unreadable file, unknown network, arguments it refuses, tensors that do not fit it, or tensors
        that belong to no network.
    """
    import art_purifiers.models  # noqa: F401  (registers the victims' networks)
    import art_purifiers.nn  # noqa: F401  (registers the defences' networks)

    loaded = load_weights(name_or_path, method=method)
    specs = network_specs(loaded, method)
    networks, claimed = {}, set()
    for key, spec in specs.items():
        try:
            network = create_network(spec)
        except ValueError as error:
            raise ValueError(f"{loaded.path}: network {key!r}: {error}") from error
        state = loaded.subset(key) if key else dict(loaded.tensors)
        claimed.update(f"{key}.{name}" if key else name for name in state)
        networks[key] = load_into(network, state, f"{loaded.path} ({key or 'network'})").eval()
    stray = sorted(set(loaded.tensors) - claimed)
    if stray:
        more = " ..." if len(stray) > 4 else ""
        raise ValueError(f"{loaded.path}: tensors that belong to no network: {stray[:4]}{more}.")
    return networks, loaded.metadata
