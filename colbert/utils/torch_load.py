"""One safe `torch.load` for every file this package reads, on every supported torch (1.13.1 on).

Two things move across that range:
* `mmap=` exists from torch 2.1; before that the file is read whole.
* `weights_only=True` refuses Python sets (and a few other builtins) before torch 2.7. Our own taps
  store sets as sorted lists (see `portable`), but a maintainer's hand-saved `torch.save(set(...))`
  must still load there. For that one refusal we retry with a restricted unpickler of our own that
  admits exactly what weights_only admits plus set/frozenset: tensors, storages, dtypes, containers
  and numbers. Anything that would import or call other code is still refused.
"""

from __future__ import annotations

import inspect
import pickle
import types
from functools import lru_cache
from typing import Any

import torch


@lru_cache(maxsize=1)
def torch_load_supports_mmap() -> bool:
    return "mmap" in inspect.signature(torch.load).parameters


def safe_load(path, *, mmap: bool = False) -> Any:
    """torch.load(path, map_location="cpu", weights_only=True[, mmap=True]) on any torch.

    Raises what torch.load raises; a weights_only refusal that our restricted unpickler cannot
    resolve either re-raises torch's own error, so callers keep one error path.
    """
    kwargs: dict[str, Any] = {"map_location": "cpu", "weights_only": True}
    if mmap and torch_load_supports_mmap():
        kwargs["mmap"] = True
    try:
        return torch.load(path, **kwargs)
    except pickle.UnpicklingError as refused:
        if not _is_weights_only_refusal(refused):
            raise
        try:
            return load_restricted(path)
        except Exception:  # torch's own message is the one to show, whatever our retry tripped on
            raise refused from None


def load_restricted(path) -> Any:
    """torch.load through an unpickler that admits tensors, containers, numbers and sets only."""
    return torch.load(path, map_location="cpu", pickle_module=_RESTRICTED, weights_only=False)


def _is_weights_only_refusal(e: Exception) -> bool:
    msg = str(e)
    return any(s in msg for s in ("Weights only load failed", "Unsupported global", "unsupported GLOBAL",
                                  "Unsupported class", "Unsupported operand"))


class _Disallowed(pickle.UnpicklingError):
    pass


_TORCH_REBUILDERS = frozenset({"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter",
                               "_rebuild_parameter_with_state", "_rebuild_sparse_tensor"})
_BUILTINS = frozenset({"set", "frozenset", "slice", "complex", "bytearray"})


class _Unpickler(pickle.Unpickler):
    # torch.load subclasses this and resolves storage classes itself before calling us.
    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name in _TORCH_REBUILDERS:
            return super().find_class(module, name)
        if module == "collections" and name == "OrderedDict":
            return super().find_class(module, name)
        if module in ("builtins", "__builtin__") and name in _BUILTINS:  # protocol 2 spells it __builtin__
            return super().find_class(module, name)
        if module == "_codecs" and name == "encode":  # bytes under pickle protocol 2
            return super().find_class(module, name)
        if module == "torch":
            obj = getattr(torch, name, None)
            if isinstance(obj, torch.dtype) or name in ("Size", "device") or name.endswith("Storage"):
                return obj
        raise _Disallowed(f"Unsupported global: GLOBAL {module}.{name} is not allowed (it could run code)")


def _restricted_load(file, **kwargs):
    return _Unpickler(file, **kwargs).load()


_RESTRICTED = types.ModuleType("colbert_restricted_pickle")
_RESTRICTED.Unpickler = _Unpickler
_RESTRICTED.load = _restricted_load
_RESTRICTED.__name__ = "colbert_restricted_pickle"
