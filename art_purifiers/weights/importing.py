"""Import the authors' published checkpoints (IRAD, DIR) into weight files of ours.

Each import reads the authors' file without running code from it (:mod:`art_purifiers.weights.checkpoints`), maps
every key of their state dict to ours by declared rules or drops it by a declared pattern (a key neither maps nor drops
is an error naming it), builds our network in the variant that computes what their code computes, loads the mapped
tensors strictly (a missing or mis-shaped key is an error naming it) and writes a safetensors file whose metadata holds
the networks' specs, the source files' sha256 and the key map. What the authors' code does that their papers do not say
is in docs/official.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from art_purifiers.nn.registry import create_network
from art_purifiers.weights import load_into, save_networks, sha256_of
from art_purifiers.weights.checkpoints import check_tensors, read_checkpoint, read_state_dict
from art_purifiers.weights.official import Rule, encoder_key_rules, encoder_spec, map_keys

#: The authors' DIR ViT (``pretrain_model.DIR_ViT``) -> :class:`~art_purifiers.nn.masked_vit.MaskedViTDenoiser`
#: (:func:`~art_purifiers.weights.official.map_keys` rules: whole-key patterns, the first match applies).
DIR_RULES: tuple[Rule, ...] = (
    (r"encoder\.patchify\.(.+)", r"patchify.\1"),
    (r"encoder\.cls_token", "cls_token"),
    (r"encoder\.pos_embedding", "encoder_position"),
    (r"encoder\.transformer\.(.+)", r"encoder.\1"),
    (r"encoder\.layer_norm\.(.+)", r"encoder_norm.\1"),
    (r"decoder\.mask_token", "mask_token"),
    (r"decoder\.pos_embedding", "decoder_position"),
    (r"decoder\.transformer\.(.+)", r"decoder.\1"),
    (r"conv1\.(weight|bias)", r"head.\1"),
)
#: Keys of the authors' DIR state dict that their forward pass never reads: a top-level patch embedding (the encoder
#: has its own) and the decoder's linear head (replaced by ``conv1`` in their last version).
DIR_DROPPED: tuple[str, ...] = (r"patchify\.(weight|bias)", r"decoder\.head\.(weight|bias)")
#: Their position embeddings are stored ``(tokens, 1, width)``, ours ``(1, tokens, width)``.
DIR_TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "encoder_position": lambda tensor: tensor.permute(1, 0, 2),
    "decoder_position": lambda tensor: tensor.permute(1, 0, 2),
}
#: The LIIF decoder's MLP (``imnet.``, the same in Reconstruction.pt and SampleNet.pt) -> ours (``decoder.``).
MLP_RULES: tuple[Rule, ...] = ((r"layers\.(\d+)\.(weight|bias)", r"mlp.\1.\2"),)
#: Value ranges of the authors' two DIR stages (docs/official.md): pre-training maps images to ``[-1, 1]`` and saves
#: the whole module; the adversarial stage feeds ``[0, 1]`` images, passes the output on unscaled and saves state dicts.
DIR_VALUE_RANGES = {"whole module": "symmetric", "state dict": "unit"}


def _map_parts(state: Mapping[str, torch.Tensor], source: Path,
               parts: Sequence[tuple[str, Sequence[Rule], Sequence[str], str]]) -> tuple[dict, list[str]]:
    """Map a state dict made of parts: each ``(their prefix, rules, drop patterns, our prefix)`` renames the keys
    under its prefix; a key under no part's prefix is an error naming it."""
    mapped, dropped, claimed = {}, [], set()
    for prefix, rules, patterns, ours in parts:
        keys = {key: value for key, value in state.items() if key.startswith(prefix)}
        claimed.update(keys)
        try:
            part, part_dropped = map_keys(keys, rules, patterns, prefix=prefix)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        mapped.update({ours + key: value for key, value in part.items()})
        dropped += part_dropped
    stray = [key for key in state if key not in claimed]
    if stray:
        raise ValueError(f"{source}: no rule maps and no drop pattern covers {len(stray)} key(s): {stray}.")
    return mapped, dropped


def _filled(network: nn.Module, state: Mapping[str, torch.Tensor], source: Path, part: str) -> nn.Module:
    check_tensors(dict(state), source)  # dense, finite
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            raise ValueError(f"{source}: {part} tensor {key!r} is {tensor.dtype}, not floating point.")
    return load_into(network, {key: tensor.float() for key, tensor in state.items()}, f"{source} ({part})").eval()


def _provenance(sources: Mapping[str, Path], rules: object, dropped: Mapping[str, list[str]], command: str,
                **details) -> dict:
    """What the metadata records of an import: the source files (name, sha256), the key map, the dropped keys."""
    return {"sources": {part: {"file": path.name, "sha256": sha256_of(path)} for part, path in sources.items()},
            "key_rules": rules, "dropped_keys": dict(dropped), "command": command, **details}


def _layer_count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return len({match.group(1) for key in state if (match := pattern.match(key))})


def _required(state: Mapping[str, torch.Tensor], source: Path, keys: Sequence[str], what: str) -> None:
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(f"{source} is not {what}: it lacks {missing}.")


def dir_spec(state: Mapping[str, torch.Tensor], source: Path, heads: int, value_range: str) -> dict:
    """Our spec of the authors' DIR ViT held by ``state`` (their keys); sizes come from the tensors' shapes, the
    attention heads (not stored) from ``heads``."""
    if any(key.startswith(("layer4.", "linear.")) for key in state):
        raise ValueError(f"{source} holds the ResNet-18 target trained with DIR, not the denoiser: convert it with "
                         "art-purifiers convert-victim.")
    _required(state, source, ("encoder.patchify.weight", "encoder.pos_embedding", "conv1.weight"), "a DIR ViT")
    width, channels, patch, _ = state["encoder.patchify.weight"].shape
    tokens = state["encoder.pos_embedding"].shape[0]
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"{source}: encoder.pos_embedding holds {tokens} positions, not a square grid of patches.")
    return {"name": "masked_vit_denoiser", "args": {
        "image_size": side * patch, "patch_size": patch, "width": width, "heads": heads,
        "encoder_depth": _layer_count(state, "encoder.transformer"),
        "decoder_depth": _layer_count(state, "decoder.transformer"), "channels": channels, "output": "token_conv",
        "patch_layout": "c p1 p2", "value_range": value_range, "view_placement": "first", "norm_eps": 1e-5}}


def import_dir(checkpoint: str | Path, output: str | Path, heads: int = 3, value_range: str = "auto",
               command: str = "") -> dict:
    """Import the authors' DIR denoiser (``model/pre_model.pt``, a whole pickled module, or a DataParallel state dict
    such as ``model/pre_trained.pth``) into a DIR weight file for :class:`~art_purifiers.defences.dir.DIRPreprocessor`.

    :param checkpoint: The authors' file.
    :param output: The ``.safetensors`` file to write.
    :param heads: Attention heads of their ViT (not stored in the file; their code uses 3).
    :param value_range: ``"auto"`` (a whole module: ``symmetric``, their pre-training; a state dict: ``unit``, their
        adversarial stage), ``"symmetric"`` or ``"unit"`` (see :data:`~art_purifiers.nn.masked_vit.VALUE_RANGES`).
    :return: A report: the output's sha256, the spec, the mapped and dropped keys.
    """
    source = Path(checkpoint)
    state, kind = read_state_dict(source)
    if value_range not in ("auto", "symmetric", "unit"):
        raise ValueError(f"value_range must be auto, symmetric or unit, got {value_range!r}.")
    stage = "whole module" if kind.startswith("whole module") else "state dict"
    chosen = DIR_VALUE_RANGES[stage] if value_range == "auto" else value_range
    spec = dir_spec(state, source, heads, chosen)
    mapped, dropped = _map_parts(state, source, [("", DIR_RULES, DIR_DROPPED, "")])
    mapped = {key: DIR_TRANSFORMS.get(key, lambda tensor: tensor)(tensor) for key, tensor in mapped.items()}
    network = _filled(create_network(spec), mapped, source, "denoiser")
    rules = [list(rule) for rule in DIR_RULES]
    how = "chosen" if value_range != "auto" else stage
    provenance = _provenance({"checkpoint": source}, rules, {"checkpoint": dropped}, command, kind=kind,
                             value_range=f"{chosen} ({how})")
    metadata = {"method": "dir", "masks": 2, "ratio": 0.5, "target": "the authors' jointly trained CIFAR ResNet-18",
                "import": provenance}
    sha256 = save_networks({"denoiser": network}, output, metadata)
    return {"output": str(output), "sha256": sha256, "spec": spec, "mapped": len(mapped), "dropped": dropped}


def _liif_checkpoint(raw: object, source: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(LIIF args, state dict)`` of a ``Reconstruction.pt``: ``{"model": {"name": "liif", "args", "sd"}}``."""
    model = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(model, dict) or model.get("name") != "liif" or not isinstance(model.get("sd"), Mapping):
        raise ValueError(f"{source} is not an IRAD Reconstruction.pt: expected {{'model': {{'name': 'liif', 'args': "
                         "..., 'sd': state dict}}}.")
    args = model.get("args", {})
    imnet = args.get("imnet_spec") or {}
    if imnet.get("name") != "mlp" or imnet.get("args", {}).get("out_dim") != 3:
        raise ValueError(f"{source}: the LIIF decoder must be an 'mlp' with 3 outputs, got {imnet!r}.")
    return args, {key.removeprefix("module."): value for key, value in model["sd"].items()}


def _mlp_hidden(state: Mapping[str, torch.Tensor], source: Path) -> list[int]:
    """Hidden widths of a LIIF MLP from its tensors ``imnet.layers.{0,2,...}.weight``."""
    count = _layer_count(state, "imnet.layers")
    weights = [state.get(f"imnet.layers.{2 * i}.weight") for i in range(count)]
    if not weights or any(weight is None or weight.ndim != 2 for weight in weights):
        raise ValueError(f"{source}: the MLP's layers imnet.layers.{{0,2,4,...}}.weight are missing or not matrices.")
    return [int(weight.shape[0]) for weight in weights[:-1]]


def _liif_parts(encoder_name: str) -> list[tuple[str, Sequence[Rule], Sequence[str], str]]:
    """The parts of a LIIF state dict (``Reconstruction.pt``'s and ``SampleNet.pt``'s alike)."""
    rules, dropped = encoder_key_rules(encoder_name)
    return [("encoder.", rules, dropped, "encoder."), ("imnet.", MLP_RULES, (), "decoder.")]


def import_irad(reconstruction: str | Path, output: str | Path, samplenet: str | Path | None = None,
                command: str = "") -> dict:
    """Import the authors' IRAD checkpoints (``Reconstruction.pt`` and ``SampleNet.pt``) into an IRAD weight file for
    :class:`~art_purifiers.defences.irad.IRADPreprocessor`.

    The representation keeps the authors' LIIF spec (encoder ``edsr-baseline``, ``edsr``, ``rdn`` or ``rcan``; decoder
    options). SampleNet gets an encoder of its own (their SampleNet holds a copy of the encoder, reading the raw
    ``[0, 1]`` image) and shifts in LIIF's normalised units, as their code computes.

    :param reconstruction: ``Reconstruction.pt``: ``{"model": {"name": "liif", "args": {...}, "sd": state dict}}``.
    :param output: The ``.safetensors`` file to write.
    :param samplenet: ``SampleNet.pt``: ``{"model": state dict}``; without it the file holds the representation only
        (``sampler="none"`` or a naive sampler).
    :return: A report: the output's sha256, the specs, the mapped and dropped keys.
    """
    reconstruction = Path(reconstruction)
    args, state = _liif_checkpoint(read_checkpoint(reconstruction), reconstruction)
    encoder = encoder_spec(args.get("encoder_spec") or {})
    representation_spec = {"name": "implicit_representation", "args": {
        "hidden": _mlp_hidden(state, reconstruction), "encoder": encoder,
        "unfold": bool(args.get("feat_unfold", True)), "local_ensemble": bool(args.get("local_ensemble", True)),
        "cell_decode": bool(args.get("cell_decode", True))}}
    parts = _liif_parts(args["encoder_spec"]["name"])
    rules = {prefix: [list(rule) for rule in part_rules] for prefix, part_rules, _, _ in parts}
    mapped, dropped = _map_parts(state, reconstruction, parts)
    networks = {"representation": _filled(create_network(representation_spec), mapped, reconstruction,
                                          "representation")}
    sources, all_dropped = {"reconstruction": reconstruction}, {"reconstruction": dropped}
    if samplenet is not None:
        samplenet = Path(samplenet)
        networks["samplenet"], all_dropped["samplenet"] = _samplenet(samplenet, encoder, parts)
        sources["samplenet"] = samplenet
    metadata = {"method": "irad", "victim": "RobustBench's Standard WideResNet-28-10 (the paper's CIFAR-10 tables)",
                "import": _provenance(sources, rules, all_dropped, command, liif_args=_jsonable(args))}
    sha256 = save_networks(networks, output, metadata)
    return {"output": str(output), "sha256": sha256,
            "specs": {key: network.network_spec for key, network in networks.items()},
            "dropped": all_dropped}


def _samplenet(source: Path, encoder: dict, parts: list) -> tuple[nn.Module, list[str]]:
    """The authors' SampleNet (``{"model": state dict}``: its own copy of the encoder and an MLP with 2 outputs) as
    our SampleNet with its own encoder on the raw image and shifts in normalised units; and the dropped keys."""
    raw = read_checkpoint(source)
    state = raw.get("model") if isinstance(raw, dict) else None
    if not isinstance(state, Mapping):
        raise ValueError(f"{source} is not an IRAD SampleNet.pt: expected {{'model': state dict}}.")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    spec = {"name": "samplenet", "args": {"hidden": _mlp_hidden(state, source), "encoder": encoder,
                                          "units": "normalised"}}
    mapped, dropped = _map_parts(state, source, parts)
    return _filled(create_network(spec), mapped, source, "samplenet"), dropped


def _jsonable(value: object) -> object:
    """The authors' spec without tensors, for the metadata."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items() if not isinstance(item, torch.Tensor)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
