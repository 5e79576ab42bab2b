"""Artifact kinds: what the tap knows about each type of value it saves, hashes, checks and loads.

Every function here dispatches on `kind_of`, the one place that decides which kind a value is:
tensor, bool, int, float, str, none, set, tuple, list, dict, or other. bool comes before int (a
bool is an int to Python, not to the manifest), and sets cover frozensets.

* describe: short text for messages, e.g. `tensor float16 (120, 96)`;
* summarize: the manifest's kind / dtype / shape;
* to_saveable: the snapshot torch.save writes (sets as sorted lists, see there);
* content_sha256: a hash of the value, not of its pickle;
* numeric_leaves: the numbers the registry's value facts constrain;
* accepts / from_saved: whether a stored value can stand for a registry kind, and that value in
  the kind's own type (a set saved as a sorted list comes back a set).
"""

from __future__ import annotations

import hashlib
import numbers
from typing import Any, Iterator

import torch

from colbert.tap.errors import TapWriteError

SEQUENCES = ("set", "tuple", "list")


def scalar_kind(value: Any, *, abstract: bool = False) -> str | None:
    """"bool", "int" or "float" for a Python number, else None. abstract=True also counts what the
    numbers ABCs admit (numpy scalars): compare looks at values it did not make."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Integral if abstract else int):
        return "int"
    if isinstance(value, numbers.Real if abstract else float):
        return "float"
    return None


def kind_of(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "tensor"
    scalar = scalar_kind(value)
    if scalar is not None:
        return scalar
    if isinstance(value, str):
        return "str"
    if value is None:
        return "none"
    if isinstance(value, (set, frozenset)):
        return "set"
    if isinstance(value, tuple):
        return "tuple"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "other"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def describe(value: Any) -> str:
    """Short human-readable type/dtype/shape, e.g. `tensor float16 (120, 96)` or `list[37]`."""
    kind = kind_of(value)
    if kind == "tensor":
        return f"tensor {dtype_name(value.dtype)} {tuple(value.shape)}"
    if kind == "bool":
        return f"bool {value}"
    if kind in ("int", "float"):
        return f"{type(value).__name__} {value!r}"
    if kind in SEQUENCES:
        name = type(value).__name__
        if kind != "set" and 0 < len(value) <= 4:
            return f"{name}({', '.join(describe(v) for v in value)})"
        return f"{name}[{len(value)}]"
    if kind == "dict":
        return f"dict[{len(value)}]"
    return type(value).__name__


def summarize(value: Any) -> dict[str, Any]:
    """kind / dtype / shape for the manifest. Containers get shape [len] and their element types."""
    kind = kind_of(value)
    if kind == "tensor":
        return {"kind": "tensor", "dtype": dtype_name(value.dtype), "shape": list(value.shape)}
    if kind == "bool":
        return {"kind": "bool", "dtype": None, "shape": []}
    if kind in ("int", "float"):
        return {"kind": kind, "dtype": None, "shape": [], "value": value}
    if kind == "set":
        return {"kind": "set", "dtype": None, "shape": [len(value)]}
    if kind in ("list", "tuple"):
        out: dict[str, Any] = {"kind": type(value).__name__, "dtype": None, "shape": [len(value)]}
        # A tuple of tensors (e.g. (ivf, ivf_lengths)) is small: list its elements. Long lists of
        # batches are not, and their element summaries would dwarf the manifest.
        if kind == "tuple" and len(value) <= 8:
            out["elements"] = [summarize(v) for v in value]
        return out
    if kind == "none":
        return {"kind": "none", "dtype": None, "shape": []}
    return {"kind": type(value).__name__, "dtype": None, "shape": []}


def to_saveable(value: Any, stage: str) -> Any:
    """A detached snapshot that `torch.load(weights_only=True)` can read back.

    Tensors become fresh contiguous CPU clones: a view would otherwise drag its whole base storage
    into the file, and a later in-place update by the pipeline must not change what was saved.
    """
    kind = kind_of(value)
    if kind == "tensor":
        return value.detach().to("cpu", copy=True).contiguous()
    if kind in ("none", "bool", "int", "float", "str"):
        return value
    if kind in ("list", "tuple"):
        items = [to_saveable(v, stage) for v in value]
        return items if kind == "list" else tuple(items)
    if kind == "set":
        # A sorted list, not a set: torch < 2.7 refuses sets under weights_only=True, and a tap
        # folder must load on every supported torch. `from_saved` turns it back.
        items = [to_saveable(v, stage) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if kind == "dict":
        return {k: to_saveable(v, stage) for k, v in value.items()}
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value.copy())
    raise TapWriteError(f"tap save: stage {stage!r} produced a {type(value).__name__}, which cannot be stored "
                        "so that torch.load(weights_only=True) reads it back (tensors, numbers, str, "
                        "and lists/tuples/sets/dicts of them are supported)")


def content_sha256(value: Any) -> str:
    """Hash of the value itself (dtype, shape, bytes), independent of the pickle/zip container,
    so two installs with different torch versions can still be compared by hash."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()


def _feed(h: Any, v: Any) -> None:
    kind = kind_of(v)
    if kind == "tensor":
        t = v.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # buffer protocol: no copy
    elif kind in ("list", "tuple"):
        h.update(f"{'L' if kind == 'list' else 'U'}{len(v)}:".encode())
        for x in v:
            _feed(h, x)
    elif kind == "set":
        h.update(f"S{len(v)}:".encode())
        for x in sorted(v, key=repr):
            _feed(h, x)
    elif kind == "dict":
        h.update(f"D{len(v)}:".encode())
        for k in sorted(v, key=repr):
            _feed(h, k)
            _feed(h, v[k])
    else:
        h.update(f"{type(v).__name__}:{v!r};".encode())


def numeric_leaves(value: Any) -> Iterator[Any]:
    """The tensors (non-bool, non-empty) and Python numbers inside a value, depth first. A container of
    plain numbers is yielded as its numbers, so bounds see each one."""
    kind = kind_of(value)
    if kind == "tensor":
        if value.dtype != torch.bool and value.numel():
            yield value
    elif kind in ("int", "float"):
        yield value
    elif kind in SEQUENCES:
        for v in value:
            yield from numeric_leaves(v)
    elif kind == "dict":
        for v in value.values():
            yield from numeric_leaves(v)


def _scalar_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.numel() == 1 and x.dim() <= 1


def _int_scalar_tensor(x: Any) -> bool:
    return _scalar_tensor(x) and not x.dtype.is_floating_point and x.dtype != torch.bool


# What a stored value may be, for each kind it is to stand for. Hand-made taps store sets and tuples
# as lists (and our own saves sets as sorted lists); numbers may come as one-element tensors.
_STORED_AS = {"set": ("set", "list", "tuple"), "tuple": ("tuple", "list"), "int": ("int",),
              "float": ("int", "float"), "tensor": ("tensor",), "list": ("list",)}


def accepts(kind: str, stored: Any) -> bool:
    """Whether `stored` can stand for a value of `kind` (a registry kind, or `kind_of` a live value).
    A kind not listed accepts anything; callers that need more compare the types themselves."""
    if kind not in _STORED_AS:
        return True
    if kind_of(stored) in _STORED_AS[kind]:
        return True
    return (kind == "int" and _int_scalar_tensor(stored)) or (kind == "float" and _scalar_tensor(stored))


def from_saved(kind: str, stored: Any) -> Any:
    """`stored` (which `accepts(kind, ...)`) as a value of `kind`: sets and tuples from lists, numbers
    from one-element tensors."""
    if kind == "set":
        return set(stored)
    if kind == "tuple":
        return tuple(stored)
    if kind == "int" and isinstance(stored, torch.Tensor):
        return int(stored.item())
    if kind == "float":
        return float(stored.item() if isinstance(stored, torch.Tensor) else stored)
    return stored
