"""Network specs of weight files written before files carried them (format 1): each method stored its architecture
as flat metadata keys, and victims none at all. The shipped files of that time keep their bytes and sha256; this
module reads their layout once, so that :func:`art_purifiers.weights.load_networks` stays the only loader."""

from __future__ import annotations

from collections.abc import Callable

from art_purifiers.weights import Weights, registry


def _irad(loaded: Weights) -> dict[str, dict]:
    config = loaded.metadata
    features = config["features"]
    specs = {"representation": {"name": "implicit_representation",
                                "args": {"blocks": config["blocks"], "features": features, "hidden": config["hidden"]}}}
    if loaded.subset("samplenet"):
        args = {"feature_dim": features, "hidden": config["samplenet_hidden"], "max_shift": config.get("max_shift")}
        specs["samplenet"] = {"name": "samplenet", "args": args}
    return specs


def _dir(loaded: Weights) -> dict[str, dict]:
    keys = ("image_size", "patch_size", "width", "heads", "encoder_depth", "decoder_depth", "channels")
    return {"denoiser": {"name": "masked_vit_denoiser", "args": {key: loaded.metadata[key] for key in keys}}}


def _idfr(loaded: Weights) -> dict[str, dict]:
    config = loaded.metadata
    specs = {"denoiser": {"name": "idfr_input_denoiser",
                          "args": {"channels": config["channels"], "widths": config["denoiser_widths"]}}}
    if loaded.subset("restorer"):
        specs["restorer"] = {"name": "idfr_feature_restorer",
                             "args": {"dimension": config["embedding"], "skips": config["restorer_skips"]}}
    return specs


def _victim(loaded: Weights) -> dict[str, dict]:
    from art_purifiers.models.published import cifar_resnet_args

    # Victim files hold the bare CIFAR ResNet's tensors without a prefix (key "").
    return {"": {"name": "cifar_resnet", "args": cifar_resnet_args(loaded.tensors)}}


_LEGACY: dict[str, Callable[[Weights], dict[str, dict]]] = {"irad": _irad, "dir": _dir, "idfr": _idfr,
                                                           "victim": _victim}


def legacy_specs(loaded: Weights, method: str | None) -> dict[str, dict]:
    """``{key: spec}`` for a file without specs, from its method's flat metadata keys.

    :raises ValueError: The file names no known method, or its metadata lacks a key its method's layout needs.
    """
    stated = loaded.metadata.get("method") or (registry()[loaded.name]["method"] if loaded.name else None)
    old_victim = str(loaded.metadata.get("architecture", "")).startswith("cifar_resnet")
    if stated is None and method == "victim" and old_victim:
        stated = "victim"  # convert-victim wrote no method before victims had specs
    if stated is None and method is not None:
        article = "an" if method[0] in "aeioux" else "a"
        raise ValueError(f"{loaded.path} is not {article} {method.upper()} weight file: its metadata names neither its "
                         "networks nor its method.")
    if stated not in _LEGACY:
        raise ValueError(f"{loaded.path} names no networks in its metadata and no method whose old layout is known "
                         f"({sorted(_LEGACY)}).")
    if method is not None and stated != method:
        raise ValueError(f"{loaded.path} holds {stated} weights, not {method} weights.")
    try:
        return _LEGACY[stated](loaded)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{loaded.path}: the {stated} architecture in its metadata is incomplete ({error}).") \
            from error
