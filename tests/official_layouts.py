"""Checkpoint files laid out the way the authors' code saves them, built from the key/shape manifests in
``tests/data/official`` (``{key: shape}``) with random tensors.

* :func:`save_whole_module`: a whole pickled module (``torch.save(model)``) as DIR's ``pretrain_model.py`` saves one,
  its classes (``DIR_ViT``, ``MAE_Encoder``, ``MAE_Decoder``, ``PatchShuffle``) living in a module named
  ``pretrain_model`` that exists in ``sys.modules`` only while the file is written, so a loader cannot import them;
  optionally wrapped in ``torch.nn.DataParallel``.
* :func:`save_state_dict`: a plain state dict, optionally in ``DataParallel`` layout (every key under ``module.``).
* :func:`save_irad_spec`: IRAD's ``Reconstruction.pt`` layout, ``{"model": {"name", "args", "sd": state_dict}}``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

OFFICIAL = Path(__file__).resolve().parent / "data" / "official"
#: The module name the DIR authors' classes are pickled under.
AUTHORS_MODULE = "pretrain_model"
#: The authors' class names, for the DIR ViT's root and its parts.
AUTHORS_CLASSES = ("DIR_ViT", "MAE_Encoder", "MAE_Decoder", "PatchShuffle")


def load_manifest(name: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of ``tests/data/official/<name>.json``."""
    with open(OFFICIAL / f"{name}.json", encoding="utf-8") as handle:
        return {key: tuple(shape) for key, shape in json.load(handle).items()}


def random_state(manifest: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the manifest's keys and shapes, filled with seeded normal noise (float32)."""
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) for key, shape in manifest.items()}


def save_state_dict(manifest: dict, path: str | Path, data_parallel: bool = False, seed: int = 0) -> dict:
    """Save a random state dict of the manifest's layout (keys under ``module.`` if ``data_parallel``) and return it
    without the prefix."""
    state = random_state(manifest, seed)
    torch.save({f"module.{k}" if data_parallel else k: v for k, v in state.items()}, path)
    return state


def save_irad_spec(manifest: dict, path: str | Path, name: str = "liif", args: dict | None = None,
                   seed: int = 0) -> dict:
    """Save ``{"model": {"name", "args", "sd"}}`` (IRAD's ``Reconstruction.pt``) and return the state dict."""
    state = random_state(manifest, seed)
    args = args if args is not None else {"encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}}}
    torch.save({"model": {"name": name, "args": args, "sd": state}}, path)
    return state


@contextlib.contextmanager
def authors_module(name: str = AUTHORS_MODULE, classes: tuple[str, ...] = AUTHORS_CLASSES) -> Iterator[dict]:
    """A module ``name`` holding ``nn.Module`` subclasses with the given class names, importable (in
    ``sys.modules``) only inside the ``with`` block; yields ``{class name: class}``."""
    if name in sys.modules:
        raise RuntimeError(f"a module {name!r} is already imported; the authors' classes must not be importable")
    module = types.ModuleType(name)
    made = {}
    for class_name in classes:
        made[class_name] = type(class_name, (nn.Module,), {"__module__": name, "__qualname__": class_name})
        setattr(module, class_name, made[class_name])
    sys.modules[name] = module
    try:
        yield made
    finally:
        del sys.modules[name]


def build_tree(manifest: dict, classes: dict[str, type], parts: Callable[[str], nn.Module | None],
               seed: int = 0) -> nn.Module:
    """A module whose ``state_dict()`` has exactly the manifest's keys and shapes, with random values.

    :param classes: ``{prefix: class}`` for the containers that are the authors' classes (``""`` is the root);
        other containers are plain ``nn.Module`` instances.
    :param parts: ``parts(prefix)`` returns a real module for a natural submodule (a timm ``Block``, a ``Conv2d``)
        or ``None``; its tensors must fit the manifest.
    """
    def container(prefix: str) -> nn.Module:
        made = classes.get(prefix, nn.Module)()
        nn.Module.__init__(made)
        return made

    root = container("")
    for key in manifest:
        node, prefix = root, ""
        *parents, leaf = key.split(".")
        for part in parents:
            prefix = f"{prefix}{part}"
            child = node._modules.get(part)
            if child is None:
                child = parts(prefix) or container(prefix)
                node.add_module(part, child)
            node, prefix = child, f"{prefix}."
        if leaf not in node._parameters and leaf not in node._buffers:
            node.register_parameter(leaf, nn.Parameter(torch.empty(manifest[key])))
    state = root.state_dict()
    if set(state) != set(manifest) or any(tuple(state[k].shape) != tuple(manifest[k]) for k in manifest):
        raise AssertionError(f"the built tree does not fit the manifest: {sorted(set(state) ^ set(manifest))[:6]}")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in state.values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return root


def dir_vit_parts(prefix: str) -> nn.Module | None:
    """The natural torch/timm modules of DIR's ViT (``pretrain_model.DIR_ViT``): timm ``Block(192, 3)`` for each
    transformer block, ``Sequential`` transformers, a patchifying ``Conv2d``, ``LayerNorm``, the ``Linear`` head and the
    ``Conv1d`` after the decoder."""
    from timm.models.vision_transformer import Block

    name = prefix.rsplit(".", 1)[-1]
    if prefix.endswith(".transformer"):
        return nn.Sequential()
    if ".transformer." in prefix and name.isdigit():
        return Block(192, 3)
    return {"patchify": nn.Conv2d(3, 192, 2, 2), "layer_norm": nn.LayerNorm(192), "head": nn.Linear(192, 12),
            "conv1": nn.Conv1d(256, 256, 16)}.get(name)


def save_whole_module(path: str | Path, manifest_name: str = "official_dir_vit_paper", data_parallel: bool = False,
                      seed: int = 0, extra: dict | None = None, **save_kwargs) -> dict[str, torch.Tensor]:
    """``torch.save(model, path)`` of DIR's ViT as the authors' code pickles it, and its state dict (cloned).

    :param extra: ``{dotted attribute path: value}`` set on the model before saving (``"encoder.shuffle.note"``),
        e.g. to embed a crafted object in an otherwise valid checkpoint.
    """
    manifest = load_manifest(manifest_name)
    with authors_module() as classes:
        model = build_tree(manifest, {"": classes["DIR_ViT"], "encoder": classes["MAE_Encoder"],
                                      "decoder": classes["MAE_Decoder"]}, dir_vit_parts, seed)
        shuffle = classes["PatchShuffle"]()
        nn.Module.__init__(shuffle)
        shuffle.ratio = 0.75
        model.encoder.add_module("shuffle", shuffle)
        for dotted, value in (extra or {}).items():
            *owner, attribute = dotted.split(".")
            target = model
            for part in owner:
                target = getattr(target, part)
            target.__dict__[attribute] = value
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        with warnings.catch_warnings():  # legacy saves look for the classes' source, which these have none of
            warnings.simplefilter("ignore", UserWarning)
            torch.save(nn.DataParallel(model) if data_parallel else model, path, **save_kwargs)
    return state
