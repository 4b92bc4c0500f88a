"""The authors' IRAD/LIIF encoders as data: which of our networks each one is, and how their tensors are renamed.

A LIIF state dict (IRAD's ``Reconstruction.pt``) holds an ``encoder_spec`` ``{"name", "args"}`` naming one encoder of
the authors' registry (``edsr-baseline``, ``edsr``, ``rdn``, ``rcan``) and the encoder's tensors under ``encoder.``.
Three functions turn them into one of our networks, without running or unpickling the authors' code here:

* :func:`encoder_spec` gives our spec ``{"name", "args"}``, which
  :func:`~art_purifiers.nn.registry.create_network` builds;
* :func:`encoder_key_rules` gives the ordered regex rename rules and the patterns of the tensors that are dropped
  (their forward never uses them: the mean shifts);
* :func:`map_keys` applies them and refuses any key that is neither renamed nor dropped.

Example, for ``sd`` the LIIF model's state dict and ``spec`` its ``encoder_spec``::

    network = create_network(encoder_spec(spec))
    rules, dropped = encoder_key_rules(spec["name"])
    tensors, _ = map_keys({k: v for k, v in sd.items() if k.startswith("encoder.")}, rules, dropped,
                          prefix="encoder.")
    network.load_state_dict(tensors)

Every pattern is matched with :func:`re.fullmatch` against the key relative to the encoder (``prefix`` removed); a
replacement may use the pattern's groups (``\\1``). The first matching rule applies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: A rename rule ``(pattern, replacement)``.
Rule = tuple[str, str]

_WEIGHT = r"(weight|bias)"


@dataclass(frozen=True)
class OfficialEncoder:
    """One encoder of the authors' registry.

    :param network: Name of our registered network.
    :param arguments: ``our argument -> (authors' argument, authors' default)``.
    :param fixed: Our arguments with a fixed value (the authors' code hard-wires them).
    :param ignored: Authors' arguments that only shape the upsampler or the mean shift, both unused without upsampling.
    :param rules: Ordered rename rules, authors' key -> our key.
    :param dropped: Patterns of the authors' keys that are dropped.
    """

    network: str
    arguments: Mapping[str, tuple[str, object]]
    fixed: Mapping[str, object]
    ignored: tuple[str, ...]
    rules: tuple[Rule, ...]
    dropped: tuple[str, ...]


_MEAN_SHIFTS = (r"sub_mean\." + _WEIGHT, r"add_mean\." + _WEIGHT)

_EDSR_RULES: tuple[Rule, ...] = (
    (r"head\.0\." + _WEIGHT, r"head.\1"),  # their head is a one-conv Sequential
    (r"body\.(\d+)\." + _WEIGHT, r"body.\1.\2"),  # closing conv
    (r"body\.(\d+)\.body\.([02])\." + _WEIGHT, r"body.\1.body.\2.\3"),  # conv-ReLU-conv blocks
)

_RDN_RULES: tuple[Rule, ...] = (
    (r"SFENet1\." + _WEIGHT, r"shallow1.\1"),
    (r"SFENet2\." + _WEIGHT, r"shallow2.\1"),
    (r"RDBs\.(\d+)\.convs\.(\d+)\.conv\.0\." + _WEIGHT, r"dense_blocks.\1.layers.\2.\3"),
    (r"RDBs\.(\d+)\.LFF\." + _WEIGHT, r"dense_blocks.\1.fusion.\2"),
    (r"GFF\.([01])\." + _WEIGHT, r"global_fusion.\1.\2"),
)

_RCAB = r"body\.(\d+)\.body\.(\d+)\.body\."
_RCAN_RULES: tuple[Rule, ...] = (
    (r"head\.0\." + _WEIGHT, r"head.\1"),
    (_RCAB + r"0\." + _WEIGHT, r"groups.\1.blocks.\2.conv1.\3"),
    (_RCAB + r"2\." + _WEIGHT, r"groups.\1.blocks.\2.conv2.\3"),
    (_RCAB + r"3\.conv_du\.0\." + _WEIGHT, r"groups.\1.blocks.\2.attention.reduce.\3"),
    (_RCAB + r"3\.conv_du\.2\." + _WEIGHT, r"groups.\1.blocks.\2.attention.expand.\3"),
    (r"body\.(\d+)\.body\.(\d+)\." + _WEIGHT, r"groups.\1.conv.\3"),  # closing conv of a group
    (r"body\.(\d+)\." + _WEIGHT, r"conv.\2"),  # closing conv of the body
)

#: The authors' encoders, by their registry name.
OFFICIAL_ENCODERS: dict[str, OfficialEncoder] = {
    "edsr-baseline": OfficialEncoder(
        network="edsr",
        arguments={"blocks": ("n_resblocks", 16), "features": ("n_feats", 64), "res_scale": ("res_scale", 1.0)},
        fixed={"in_channels": 3}, ignored=("scale", "rgb_range"), rules=_EDSR_RULES, dropped=_MEAN_SHIFTS),
    "edsr": OfficialEncoder(
        network="edsr",
        arguments={"blocks": ("n_resblocks", 32), "features": ("n_feats", 256), "res_scale": ("res_scale", 0.1)},
        fixed={"in_channels": 3}, ignored=("scale", "rgb_range"), rules=_EDSR_RULES, dropped=_MEAN_SHIFTS),
    "rdn": OfficialEncoder(
        network="rdn",
        arguments={"features": ("G0", 64), "kernel_size": ("RDNkSize", 3), "config": ("RDNconfig", "B")},
        fixed={"in_channels": 3}, ignored=("scale",), rules=_RDN_RULES, dropped=()),
    "rcan": OfficialEncoder(
        network="rcan",
        arguments={"groups": ("n_resgroups", 10), "blocks": ("n_resblocks", 20), "features": ("n_feats", 64),
                   "reduction": ("reduction", 16)},
        fixed={"in_channels": 3}, ignored=("scale", "rgb_range"), rules=_RCAN_RULES, dropped=_MEAN_SHIFTS),
}


def _official(name) -> OfficialEncoder:
    if name not in OFFICIAL_ENCODERS:
        raise ValueError(f"Unknown encoder {name!r} of the authors' registry; known: {sorted(OFFICIAL_ENCODERS)}.")
    return OFFICIAL_ENCODERS[name]


def encoder_spec(authors_spec: Mapping) -> dict:
    """Our network spec ``{"name", "args"}`` for the authors' encoder spec ``{"name", "args"}``.

    The authors' defaults fill missing arguments, as their factories do, except ``no_upsampling``: it must be given and
    true (an encoder with upsampler is no LIIF encoder).

    :raises ValueError: An unknown encoder name (the known ones listed), ``no_upsampling`` false or missing, or an
        argument the authors' factory does not take.
    """
    if not isinstance(authors_spec, Mapping) or not isinstance(authors_spec.get("name"), str):
        raise ValueError(f"An encoder spec is a mapping {{'name': str, 'args': dict}}, got {authors_spec!r}.")
    name = authors_spec["name"]
    entry = _official(name)
    args = dict(authors_spec.get("args") or {})
    if args.pop("no_upsampling", False) is not True:
        raise ValueError(f"Encoder {name!r} must have no_upsampling=True (a LIIF encoder keeps the spatial size and "
                         f"has no upsampler), got {authors_spec.get('args')!r}.")
    known = {authors for authors, _ in entry.arguments.values()}
    accepted = known | set(entry.ignored) | {"no_upsampling"}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ValueError(f"Encoder {name!r} takes no argument(s) {unknown}; it takes {sorted(accepted)}.")
    ours = {mine: args.get(authors, default) for mine, (authors, default) in entry.arguments.items()}
    if entry.network == "edsr":
        ours["res_scale"] = float(ours["res_scale"])
    return {"name": entry.network, "args": {**ours, **entry.fixed}}


def encoder_key_rules(authors_name: str) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """``(rules, dropped)`` for the authors' encoder ``authors_name``: ordered rename rules ``(pattern, replacement)``
    and the patterns of keys that are dropped, both relative to the encoder (no ``encoder.`` prefix).

    :raises ValueError: An unknown encoder name (the known ones listed).
    """
    entry = _official(authors_name)
    return entry.rules, entry.dropped


def map_keys(state: Mapping[str, object], rules: Sequence[Rule], dropped: Sequence[str], *,
             prefix: str = "") -> tuple[dict[str, object], list[str]]:
    """Rename the authors' tensors to ours: ``(mapped_state, dropped_keys)``.

    Each key loses ``prefix``, then is dropped if a pattern of ``dropped`` matches it, or else renamed by the first rule
    whose pattern matches it. ``dropped_keys`` are the original keys, in the order of ``state``.

    :raises ValueError: Keys that no rule maps and no drop pattern covers (a key without ``prefix`` included), all
        named; or two keys renamed to the same one.
    """
    compiled_rules = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    compiled_dropped = [re.compile(pattern) for pattern in dropped]
    mapped: dict[str, object] = {}
    sources: dict[str, str] = {}
    dropped_keys: list[str] = []
    unmapped: list[str] = []
    for key, value in state.items():
        if not key.startswith(prefix):
            unmapped.append(key)
            continue
        name = key[len(prefix):]
        if any(pattern.fullmatch(name) for pattern in compiled_dropped):
            dropped_keys.append(key)
            continue
        for pattern, replacement in compiled_rules:
            match = pattern.fullmatch(name)
            if match:
                target = match.expand(replacement)
                break
        else:
            unmapped.append(key)
            continue
        if target in sources:
            raise ValueError(f"Keys {sources[target]!r} and {key!r} are both renamed to {target!r}.")
        sources[target] = key
        mapped[target] = value
    if unmapped:
        where = f" (prefix {prefix!r})" if prefix else ""
        raise ValueError(f"No rule maps and no drop pattern covers {len(unmapped)} key(s){where}: {unmapped}.")
    return mapped, dropped_keys
