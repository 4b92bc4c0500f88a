"""Defence specs (``NAME[:key=value,...]``) parsed and checked without importing torch or ART, so that the command
line refuses a bad ``--defence`` at once. The full check, against the live registry, runs when defences are built
(:func:`art_purifiers.defences.make_defence`); a test keeps the tables below equal to the classes' signatures."""

from __future__ import annotations

import ast

#: Options every input purifier takes (those of :class:`~art_purifiers.base.PurifierPreprocessor`).
BASE_OPTIONS = frozenset({"gradient", "batch_size", "clip_values", "channels", "channels_first", "seed",
                          "device_type", "apply_fit", "apply_predict"})
#: Parameters of the built-in defences, by registered name.
BUILTIN_PARAMETERS: dict[str, frozenset[str]] = {
    "resampling": BASE_OPTIONS | {"interpolation", "sampler", "magnitude", "padding_mode"},
    "irad": BASE_OPTIONS | {"weights", "sampler", "magnitude"},
    "dip": BASE_OPTIONS | {"classifier", "network", "iterations", "lr", "noise_scale", "input_jitter", "snapshots",
                           "warmup", "grid", "keep", "ssim_threshold", "step", "verbose", "checkpoint_every"},
    "dipdefend": BASE_OPTIONS | {"network", "iterations", "lr", "noise_scale", "input_jitter", "smoothing",
                                 "verbose", "checkpoint_every"},
    "idfr": BASE_OPTIONS | {"weights", "restorer", "encoder", "head"},
    "dir": BASE_OPTIONS | {"weights", "masks", "ratio"},
}
#: ART preprocessors accepted as ``art:CLASS`` (their options are checked when they are built).
ART_DEFENCE_NAMES = ("JpegCompression", "FeatureSqueezing", "SpatialSmoothing", "TotalVarMin")


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_defence_spec(spec: str) -> tuple[str, dict]:
    """``"resampling:interpolation=nearest,magnitude=1.5"`` -> ``("resampling", {...})``;
    ``"art:JpegCompression:quality=75"`` -> ``("art", {"preprocessor": "JpegCompression", "quality": 75})``."""
    name, _, arguments = spec.partition(":")
    kwargs = {}
    if name.strip() == "art":
        preprocessor, _, arguments = arguments.partition(":")
        kwargs["preprocessor"] = preprocessor.strip()
    for item in filter(None, (part.strip() for part in arguments.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Defence argument {item!r} in {spec!r} is not of the form key=value.")
        kwargs[key.strip()] = _value(value.strip())
    return name.strip(), kwargs


def check_builtin_spec(spec: str) -> None:
    """Refuse a spec whose name is not a built-in defence or whose parameters the defence does not have."""
    name, kwargs = parse_defence_spec(spec)
    if name == "art":
        if kwargs["preprocessor"] not in ART_DEFENCE_NAMES:
            raise ValueError(f"ART preprocessor must be one of {sorted(ART_DEFENCE_NAMES)}, "
                             f"got {kwargs['preprocessor']!r}.")
        return
    if name not in BUILTIN_PARAMETERS:
        raise ValueError(f"Unknown defence {name!r}; available: {sorted(BUILTIN_PARAMETERS)} and "
                         f"art:{sorted(ART_DEFENCE_NAMES)}.")
    unknown = sorted(set(kwargs) - BUILTIN_PARAMETERS[name])
    if unknown:
        raise ValueError(f"Unknown parameter(s) {unknown} for defence {name!r}; its parameters: "
                         f"{sorted(BUILTIN_PARAMETERS[name])}.")
