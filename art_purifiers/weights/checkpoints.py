"""Read the authors' PyTorch checkpoints (``torch.save`` files) without ever running code from them.

A checkpoint is first read with ``torch.load(..., weights_only=True)``, which admits tensors and plain containers
only. The authors' DIR files instead pickle whole modules (``torch.save(model)``); those are read a second time
through a restricted pickle module (:data:`RESTRICTED_PICKLE`) whose unpickler admits only

* torch's rebuild functions for plain dense tensors and parameters (called with their backward hooks dropped),
  torch's dtypes (values), ``torch.Size``, ``torch.Tensor``, ``torch.UntypedStorage``, ``collections.OrderedDict``
  and ``set``;
* module classes from an allowlist of namespaces (``torch.nn``, ``timm``, ``einops`` and the authors' own module
  names ``pretrain_model``, ``model``, ``lightweight_model``, ``__main__``) plus ``torch.device`` (a
  ``DataParallel`` saved on a GPU holds one). Every such name, class or not, is mapped to an *inert* container
  class of ours, created on the spot: nothing of theirs is imported, looked up or instantiated; the container only
  stores what it is given.

Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) is refused when the unpickler meets
its name, before it is looked up or called, and the whole read fails with one ``ValueError`` naming the file and the
global. :func:`module_state_dict` then flattens the inert module tree into the state dict
``nn.Module.state_dict()`` would have given, and :func:`read_state_dict` combines both and checks every tensor.
"""

from __future__ import annotations

import _compat_pickle
import collections
import functools
import pickle
import types
import warnings
from pathlib import Path

import torch
from torch import nn

#: Namespaces whose globals are admitted, each mapped to an inert container (module classes of the authors' files).
INERT_NAMESPACES = ("torch.nn", "timm", "einops", "pretrain_model", "model", "lightweight_model", "__main__")
#: Single globals outside those namespaces that are admitted the same way (mapped to an inert container).
INERT_GLOBALS = frozenset({("torch", "device")})
#: Keys under which a checkpoint dictionary may hold its state dict or its module, tried in this order.
STATE_KEYS = ("state_dict", "model", "sd", "net", "network")
#: Class names of wrappers whose only child is the real network, under ``module``.
WRAPPERS = ("DataParallel", "DistributedDataParallel")
_MAX_DEPTH = 64
_INTEGER_DTYPES = frozenset(getattr(torch, name) for name in ("uint8", "int8", "int16", "int32", "int64", "uint16",
                                                               "uint32", "uint64") if hasattr(torch, name))


class RefusedGlobal(pickle.UnpicklingError):
    """A checkpoint named a global that the restricted unpickler does not admit (its ``args[0]`` is the name)."""


class InertObject:
    """What every admitted module class (or other allowlisted name) of a checkpoint becomes.

    Its subclasses are made by :func:`_inert_class`, one per pickled name, and record that name in
    ``inert_name``. An instance only stores what pickle hands it: constructor arguments in ``inert_args`` /
    ``inert_kwargs``, its state in ``__dict__`` (a module's ``_parameters``, ``_buffers``, ``_modules``, ...),
    items and list elements in ``inert_items`` / ``inert_list``. It has no other behaviour.
    """

    inert_name = "InertObject"
    # torch.load of a legacy (non-zip) file compares a container class's source with the saved one and, when this is
    # true, writes a patch file: never.
    dump_patches = False

    def __new__(cls, *args, **kwargs):
        instance = object.__new__(cls)
        instance.__dict__["inert_args"] = args
        instance.__dict__["inert_kwargs"] = kwargs
        return instance

    def __init__(self, *args, **kwargs) -> None:
        self.__dict__["inert_args"] = args
        self.__dict__["inert_kwargs"] = kwargs

    def __setstate__(self, state) -> None:
        # pickle's BUILD: a dict, or (dict, slot dict) for objects with __slots__.
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
            if isinstance(slots, dict):
                self.__dict__.update({str(k): v for k, v in slots.items()})
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})
        elif state is not None:
            self.__dict__["inert_state"] = state

    def __setitem__(self, key, value) -> None:
        self.__dict__.setdefault("inert_items", {})[key] = value

    def append(self, value) -> None:
        self.__dict__.setdefault("inert_list", []).append(value)

    def extend(self, values) -> None:
        self.__dict__.setdefault("inert_list", []).extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.inert_name}>"


@functools.lru_cache(maxsize=4096)
def _inert_class(module: str, name: str) -> type:
    """A fresh :class:`InertObject` subclass standing for the pickled global ``module.name``."""
    return type(name if name.isidentifier() else "Inert", (InertObject,), {"inert_name": f"{module}.{name}",
                                                                         "__module__": __name__})


def _is_inert_name(module: str, name: str) -> bool:
    if (module, name) in INERT_GLOBALS:
        return True
    return any(module == space or module.startswith(f"{space}.") for space in INERT_NAMESPACES)


def _no_hooks(hooks) -> collections.OrderedDict:
    # Backward hooks are never restored: they would be callables chosen by the file.
    return collections.OrderedDict()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, bool(requires_grad),
                                           _no_hooks(backward_hooks), metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    if not isinstance(dtype, torch.dtype):
        raise pickle.UnpicklingError(f"a tensor's dtype must be a torch dtype, got {type(dtype).__name__}")
    return torch._utils._rebuild_tensor_v3(storage, storage_offset, size, stride, bool(requires_grad),
                                           _no_hooks(backward_hooks), dtype, metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    # Also stands for _rebuild_parameter_with_state: the Python attributes a parameter carried are dropped.
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"a parameter must wrap a tensor, got {type(data).__name__}")
    return torch._utils._rebuild_parameter(data, bool(requires_grad), _no_hooks(backward_hooks))


def _rebuild_from_type_v2(func, new_type, args, state):
    # A plain tensor that carried Python attributes: rebuilt as a plain tensor, its attributes dropped.
    if func not in (_rebuild_tensor_v2, _rebuild_tensor_v3) or new_type is not torch.Tensor:
        raise pickle.UnpicklingError("only plain tensors are rebuilt")
    return func(*args)


def _admitted_exact() -> dict[tuple[str, str], object]:
    """Globals admitted as themselves (or as our guarded stand-in)."""
    admitted: dict[tuple[str, str], object] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch._tensor", "Tensor"): torch.Tensor,
        ("torch", "Tensor"): torch.Tensor,
        ("torch", "Size"): torch.Size,
        # The storage of tensors rebuilt by _rebuild_tensor_v3 (dtypes such as uint16); torch.load reads it as bytes.
        ("torch.storage", "UntypedStorage"): torch.UntypedStorage,
        ("torch", "UntypedStorage"): torch.UntypedStorage,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
    }
    if hasattr(torch._utils, "_rebuild_tensor_v3"):
        admitted[("torch._utils", "_rebuild_tensor_v3")] = _rebuild_tensor_v3
    for name in dir(torch):
        value = getattr(torch, name)
        if isinstance(value, torch.dtype):
            admitted[("torch", name)] = value
    return admitted


_ADMITTED = _admitted_exact()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only the globals listed in this module's docstring; any other is refused (by
    raising :class:`RefusedGlobal`) before it is looked up."""

    def find_class(self, module: str, name: str) -> object:
        if not isinstance(module, str) or not isinstance(name, str):
            raise RefusedGlobal(f"{module!r}.{name!r}")
        module, name = _python3_name(module, name)
        found = _ADMITTED.get((module, name))
        if found is not None:
            return found
        if _is_inert_name(module, name):
            return _inert_class(module, name)
        raise RefusedGlobal(f"{module}.{name}")


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """The Python 3 spelling of a global pickle protocol 2 wrote the Python 2 way (``__builtin__.set``), as pickle's
    own ``find_class`` translates it; only a name, nothing is imported."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


def _restricted_loads(data: bytes, **kwargs):
    import io

    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


#: The pickle module handed to ``torch.load(pickle_module=...)``: ``Unpickler``, ``load`` and ``loads`` restricted.
RESTRICTED_PICKLE = types.ModuleType("art_purifiers_restricted_pickle")
RESTRICTED_PICKLE.Unpickler = RestrictedUnpickler
RESTRICTED_PICKLE.load = _restricted_load
RESTRICTED_PICKLE.loads = _restricted_loads
RESTRICTED_PICKLE.UnpicklingError = pickle.UnpicklingError


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def read_checkpoint(path: str | Path) -> object:
    """What a ``torch.save``d file holds, read on the CPU without running code from it.

    Tensors and containers are read by ``torch.load(weights_only=True)``; a file that pickles modules is read again
    through :data:`RESTRICTED_PICKLE`, where every module is an :class:`InertObject`.

    :raises ValueError: One line naming the file: missing, empty, truncated or corrupt, or a refused global.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file.")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the checkpoint file is empty.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # more than tensors and containers (a whole module): read it through the restricted unpickler
    except Exception as error:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt; {_one_line(error)}).") \
            from None
    try:
        with warnings.catch_warnings():
            # Legacy files compare each module class's saved source with ours; the inert classes never match.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=False, pickle_module=RESTRICTED_PICKLE)
    except RefusedGlobal as error:
        raise ValueError(
            f"{path}: refused to unpickle the global {error.args[0]}: a checkpoint may hold only tensors, containers "
            "and module classes of torch.nn, timm, einops and the authors' modules, so this file is not one (it may "
            "have been crafted to run code); nothing was run."
        ) from None
    except Exception as error:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt; {_one_line(error)}).") \
            from None


def _is_inert_module(obj: object) -> bool:
    return isinstance(obj, InertObject) and isinstance(obj.__dict__.get("_modules"), dict) \
        and isinstance(obj.__dict__.get("_parameters"), dict)


def _class_name(obj: object) -> str:
    return obj.inert_name if isinstance(obj, InertObject) else f"{type(obj).__module__}.{type(obj).__qualname__}"


def _unwrap(obj: object) -> tuple[object, list[str]]:
    """The network inside (possibly nested) ``DataParallel`` wrappers, and the wrappers' class names."""
    wrappers = []
    while _is_inert_module(obj) and obj.inert_name.rsplit(".", 1)[-1] in WRAPPERS and "module" in obj._modules:
        wrappers.append(obj.inert_name.rsplit(".", 1)[-1])
        obj = obj._modules["module"]
    while isinstance(obj, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        wrappers.append(type(obj).__name__)
        obj = obj.module
    return obj, wrappers


def _holds_tensor(value: object, depth: int = 0) -> bool:
    """Whether a tensor is anywhere in ``value`` (dicts, lists, tuples, inert objects; a deep structure counts)."""
    if isinstance(value, torch.Tensor) or depth > _MAX_DEPTH:
        return True
    if isinstance(value, InertObject):
        value = value.__dict__
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, (list, tuple)) and any(_holds_tensor(item, depth + 1) for item in value)


def _walk(module: InertObject, prefix: str, out: dict, path: tuple[int, ...]) -> None:
    if id(module) in path or len(path) > _MAX_DEPTH:
        raise ValueError(f"the module tree loops or is deeper than {_MAX_DEPTH} levels at {prefix or 'its root'!r}")
    path = (*path, id(module))
    state = module.__dict__
    skipped = state.get("_non_persistent_buffers_set") or set()
    for field in ("_parameters", "_buffers"):
        entries = state.get(field) or {}
        if not isinstance(entries, dict):
            raise ValueError(f"{prefix}{field} of {module.inert_name} is a {type(entries).__name__}, not a dict")
        for name, value in entries.items():
            if value is None or (field == "_buffers" and name in skipped):
                continue
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
            out[f"{prefix}{name}"] = value.detach()
    for name, child in state["_modules"].items():
        if child is None:
            continue
        if isinstance(child, InertObject) and not _is_inert_module(child) and not _holds_tensor(child.__dict__):
            continue  # a parameter-free layer pickled by its own __getstate__ (einops' Rearrange: its pattern)
        if not _is_inert_module(child):
            raise ValueError(f"submodule {prefix}{name} is a {_class_name(child)}, not a module")
        _walk(child, f"{prefix}{name}.", out, path)


def _strip_module_prefix(state: dict) -> dict:
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _find_state(obj: object, depth: int = 0) -> tuple[dict, str]:
    obj, wrappers = _unwrap(obj)
    wrapped = "".join(f" in {name}" for name in reversed(wrappers))
    if _is_inert_module(obj):
        out: dict = {}
        _walk(obj, "", out, ())
        return out, f"whole module ({obj.inert_name}{wrapped})"
    if isinstance(obj, nn.Module):  # torch's own modules, only when torch admitted them as safe globals
        return dict(obj.state_dict()), f"whole module ({_class_name(obj)}{wrapped})"
    if isinstance(obj, dict) and depth < 4:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return _strip_module_prefix(dict(obj)), "state dict"
        for key in STATE_KEYS:
            if key in obj:
                return _find_state(obj[key], depth + 1)
        keys = sorted(map(str, obj))
        shown = f"{keys[:8]}{' ...' if len(keys) > 8 else ''}"
        if not any(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"holds no tensors (a dict with keys {shown})")
        raise ValueError(f"a dict with neither only tensors nor any of the keys {list(STATE_KEYS)} (keys: {shown})")
    raise ValueError(f"holds a {_class_name(obj)}, neither a module nor a state dict")


def module_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """The state dict of what :func:`read_checkpoint` returned, named as ``nn.Module.state_dict()`` would name it.

    An inert module tree is walked through ``_parameters``, ``_buffers`` (non-persistent ones skipped) and
    ``_modules`` with dotted prefixes, ``None`` entries skipped; a ``DataParallel`` wrapper is looked through. A dict of
    tensors is the state dict itself, possibly under ``state_dict``, ``model`` or ``sd`` (IRAD's ``Reconstruction.pt``
    nests ``{"model": {"name", "args", "sd"}}``); a ``module.`` prefix on every key is stripped.

    :raises ValueError: No module or state dict found, a loop in the module tree, or a parameter that is no tensor.
    """
    return _find_state(obj)[0]


def check_tensors(state: dict, source: str | Path) -> None:
    """Refuse (one ``ValueError`` naming ``source``) an empty state dict, non-string keys, and tensors that are not
    dense floating or integer tensors or hold NaN or infinite values."""
    if not state:
        raise ValueError(f"{source}: the checkpoint holds no tensors.")
    for key, tensor in state.items():
        if not isinstance(key, str):
            raise ValueError(f"{source}: state dict key {key!r} is not a string.")
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
            raise ValueError(f"{source}: {key!r} is not a dense tensor.")
        dtype = tensor.dtype
        if not (dtype.is_floating_point or dtype in _INTEGER_DTYPES) or tensor.is_quantized:
            raise ValueError(f"{source}: tensor {key!r} has dtype {dtype}, neither floating point nor integer.")
        if dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{source}: tensor {key!r} holds NaN or infinite values.")


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict a checkpoint holds, and what kind of file it was.

    :return: ``(state_dict, kind)``, kind ``"state dict"`` or ``"whole module (CLASS)"`` with the root module's
        pickled class name (``"whole module (pretrain_model.DIR_ViT)"``; a ``DataParallel`` wrapper is looked through
        and named: ``"whole module (pretrain_model.DIR_ViT in DataParallel)"``).
    :raises ValueError: One line naming the file: missing, empty, truncated or corrupt file, refused global, no
        tensors, a tensor that is not floating point or integer, or one holding NaN or infinite values.
    """
    obj = read_checkpoint(path)
    try:
        state, kind = _find_state(obj)
    except ValueError as error:
        raise ValueError(f"{path}: {error}.") from None
    check_tensors(state, path)
    return state, kind
