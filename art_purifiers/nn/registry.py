"""Every network registers itself once under a name; an instance records its spec ``{"name", "args"}``.

A weight file stores the spec of each network beside its tensors (see :func:`art_purifiers.weights.save_networks`), so
one loader, :func:`create_network`, rebuilds any network from its file, whichever method or variant it belongs to (the
pattern of timm's ``create_model`` and LIIF's ``models.make``).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping

from torch import nn

_NETWORKS: dict[str, type[nn.Module]] = {}


def register_network(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register a network under ``name`` and make each instance record ``network_spec``, the JSON
    spec ``{"name": name, "args": {...every constructor argument, defaults included...}}`` that rebuilds it."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if _NETWORKS.get(name, cls) is not cls:
            raise ValueError(f"A network named {name!r} is registered already ({_NETWORKS[name].__qualname__}).")
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kwargs) -> None:
            init(self, *args, **kwargs)
            if type(self) is cls:  # a registered subclass records its own spec
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                arguments = {key: value for key, value in list(bound.arguments.items())[1:]}
                self.network_spec = {"name": name, "args": _as_json(name, arguments)}

        cls.__init__ = recording_init
        cls.network_name = name
        _NETWORKS[name] = cls
        return cls

    return decorator


def _as_json(name: str, arguments: dict) -> dict:
    """``arguments`` as JSON values (tuples become lists); a value JSON cannot hold is a programming error."""
    try:
        return json.loads(json.dumps(arguments))
    except (TypeError, ValueError) as error:
        raise TypeError(f"The arguments of network {name!r} must be JSON values ({error}).") from error


def registered_networks() -> list[str]:
    """Names of the registered networks."""
    return sorted(_NETWORKS)


def create_network(spec: Mapping) -> nn.Module:
    """Build the network a spec ``{"name": NAME, "args": {...}}`` describes (randomly initialised).

    :raises ValueError: An unknown name, or arguments the network refuses, named in the message.
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ValueError(f"A network spec is a mapping {{'name': str, 'args': dict}}, got {spec!r}.")
    name, args = spec["name"], spec.get("args", {})
    if name not in _NETWORKS:
        raise ValueError(f"Unknown network {name!r}; registered: {registered_networks()}.")
    if not isinstance(args, Mapping):
        raise ValueError(f"The args of network {name!r} must be a mapping, got {args!r}.")
    try:
        return _NETWORKS[name](**args)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Network {name!r} refused its arguments {dict(args)} ({error}).") from error
