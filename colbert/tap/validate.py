"""Reading stored artifacts safely and checking that they fit the stage they would replace.

Everything a swap injects goes through `load_artifact` (weights_only=True: no code runs while
unpickling) and `fit_artifact` (kind, dtype and shape against the registry and the live value, then
the registry's value facts: ranges, finiteness, power of two, sums, order; see `check_values`).
What each kind of value is and how it is described lives in colbert/tap/kinds.py, shared with the
manifest, so the manifest and error messages agree.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from typing import Any

import torch

from colbert.tap.errors import TapLoadError, TapMismatchError, TapUnsafeError
from colbert.tap.kinds import accepts, describe, dtype_name, from_saved, kind_of, numeric_leaves
from colbert.tap.stages import get_stage
from colbert.utils.torch_load import safe_load


def load_artifact(path: str, stage: str | None = None) -> Any:
    """torch.load with weights_only=True; every failure becomes a TapLoadError naming the file."""
    what = f"stage {stage!r} " if stage else ""
    if not os.path.exists(path):
        raise TapLoadError(f"tap swap: {what}artifact file {path} does not exist")
    try:
        return safe_load(path)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "Unsupported global" in msg or "unsupported GLOBAL" in msg:
            found = _first_line_with(msg, ("GLOBAL", "global"))
            raise TapUnsafeError(
                f"tap swap: refused to load {what}from {path}: the file is a pickle that would "
                f"import or call code ({found}); only tensors, numbers, strings and lists/tuples/"
                "sets/dicts of them are accepted (torch.load weights_only=True). If you trust the "
                "file, re-save its value with torch.save after loading it yourself.") from None
        raise TapLoadError(f"tap swap: {what}artifact {path} is corrupt or not a torch.save file: {msg}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError,
            AttributeError, TypeError) as e:
        raise TapLoadError(f"tap swap: {what}artifact {path} is corrupt or not a torch.save file: "
                           f"{type(e).__name__}: {e}") from None


def _first_line_with(msg: str, needles: tuple[str, ...]) -> str:
    for line in msg.splitlines():
        if any(n in line for n in needles):
            return line.strip()
    return "unsupported global"


def _mismatch(stage: str, path: str, expected: str, found: str, hint: str = "") -> TapMismatchError:
    return TapMismatchError(f"tap swap: stage {stage!r}: stored artifact {path} does not fit: expected "
                            f"{expected}, found {found}{hint}")


def fit_artifact(stage: str, stored: Any, live: Any, path: str, *, allow_cast: bool = False,
                 facts: dict[str, Any] | None = None) -> Any:
    """Return `stored` in the form the pipeline expects at `stage`, or raise TapMismatchError.

    The live value decides shapes and (for tensors) dtype: it is what the next stage consumes.
    The registry decides the kind, and the dtype where there is no live tensor to compare with.
    Hand-made taps stored sets as lists and tuples as lists; those are converted, nothing else is.
    Then the values themselves must satisfy the stage's value facts (`check_values`); `facts` is
    the tap point's ctx, which carries the numbers those facts name (num_partitions, ...).
    """
    fitted = _fit_artifact(stage, stored, live, path, allow_cast)
    check_values(stage, fitted, path, facts)
    return fitted


def _fit_artifact(stage: str, stored: Any, live: Any, path: str, allow_cast: bool) -> Any:
    spec = get_stage(stage)
    if not accepts(spec.kind, stored):
        raise _mismatch(stage, path, f"a {spec.kind} (registry: {spec.shape})", describe(stored))
    if live is None:
        if spec.kind == "tensor" and spec.dtype and dtype_name(stored.dtype) != spec.dtype:
            if not allow_cast:
                raise _mismatch(stage, path, f"tensor {spec.dtype}", describe(stored),
                                "; set COLBERT_TAP_CAST=1 to cast")
            stored = stored.to(getattr(torch, spec.dtype))
        return from_saved(spec.kind, stored)
    if (spec.variable_length and isinstance(stored, torch.Tensor) and isinstance(live, torch.Tensor)
            and stored.dim() == live.dim() == 1):
        # a pid list whose length is itself a result (e.g. how many passages survive pruning):
        # another run's list may be longer or shorter; dtype and device still must fit
        live = torch.empty(stored.shape, dtype=live.dtype, device=live.device)
    return _fit(stage, path, stored, live, "", allow_cast, registry_dtype=spec.dtype if spec.kind == "tensor" else None)


def check_values(stage: str, value: Any, path: str, facts: dict[str, Any] | None = None) -> None:
    """Raise TapMismatchError when `value` breaks one of the stage's value facts (colbert/tap/stages.py:
    low, high, finite, power_of_two, total, order): a value of the right type, dtype and shape can
    still send the pipeline into a ZeroDivisionError, a faiss assertion or silent nonsense."""
    spec = get_stage(stage)
    facts = facts or {}
    leaves = list(numeric_leaves(value))
    if not leaves:
        return
    if spec.finite:
        for x in leaves:
            bad = _non_finite(x)
            if bad:
                raise _mismatch(stage, path, "finite numbers", bad)
    low, low_text = _bound(spec.low, facts)
    high, high_text = _bound(spec.high, facts)
    if low is not None or high is not None:
        lo, hi = _min_max(leaves)
        if (low is not None and lo < low) or (high is not None and hi > high):
            want = f"in [{low_text}, {high_text}]" if low is not None and high is not None else (
                f">= {low_text}" if low is not None else f"<= {high_text}")
            found = f"{_num(lo)}" if lo == hi else f"values from {_num(lo)} to {_num(hi)}"
            raise _mismatch(stage, path, f"values {want} (registry: {spec.shape})", found)
    if spec.power_of_two:
        for x in leaves:
            v = x.item() if isinstance(x, torch.Tensor) and x.numel() == 1 else x
            if not isinstance(v, int) or v < 1 or v & (v - 1):
                raise _mismatch(stage, path, f"a power of two (registry: {spec.shape})", describe(v))
    total, total_text = _bound(spec.total, facts)
    if total is not None:
        got = sum(int(x.sum().item()) if isinstance(x, torch.Tensor) else x for x in leaves)
        if got != total:
            raise _mismatch(stage, path, f"numbers summing to {total_text}", f"a sum of {_num(got)}")
    if spec.order is not None:
        for x in leaves:
            if isinstance(x, torch.Tensor) and x.dim() == 1 and x.numel() > 1:
                step = x[1:] >= x[:-1] if spec.order == "ascending" else x[1:] <= x[:-1]
                if not bool(step.all()):
                    at = int((~step).nonzero()[0].item())
                    raise _mismatch(stage, path, f"{spec.order} order (registry: {spec.shape})",
                                    f"{_num(x[at].item())} then {_num(x[at + 1].item())} at positions {at}, {at + 1}")


def _non_finite(x: Any) -> str:
    if isinstance(x, float):
        return "" if math.isfinite(x) else f"float {x!r}"
    if isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex()):
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            nan = int(torch.isnan(x).sum().item())
            return f"{describe(x)} with {nan} NaN and {x.numel() - int(finite.sum().item()) - nan} inf of {x.numel()}"
    return ""


def _min_max(leaves: list) -> tuple[float, float]:
    lo = hi = None
    for x in leaves:
        a, b = (x.min().item(), x.max().item()) if isinstance(x, torch.Tensor) else (x, x)
        lo = a if lo is None or a < lo else lo
        hi = b if hi is None or b > hi else hi
    return lo, hi


_FACT = re.compile(r"([A-Za-z_]\w*)(-1)?")


def _bound(spec: float | str | None, facts: dict[str, Any]) -> tuple[float | None, str]:
    """A stage's bound as a number (None: unchecked) and as text for the message."""
    if spec is None or not isinstance(spec, str):
        return spec, "" if spec is None else _num(spec)
    m = _FACT.fullmatch(spec)
    if m is None:
        raise ValueError(f"tap stage registry: bound {spec!r} is neither a number nor 'fact' / 'fact-1'")
    fact = facts.get(m.group(1))
    if isinstance(fact, bool) or not isinstance(fact, (int, float)):
        return None, spec
    value = fact - 1 if m.group(2) else fact
    return value, f"{_num(value)} ({spec}, {m.group(1)}={_num(fact)})" if m.group(2) else f"{_num(value)} ({spec})"


def _num(x: Any) -> str:
    if isinstance(x, float):
        return str(int(x)) if x.is_integer() and abs(x) < 2 ** 53 else f"{x:.7g}"
    return str(x)


def _fit(stage: str, path: str, stored: Any, live: Any, where: str, allow_cast: bool,
         registry_dtype: str | None = None) -> Any:
    at = f" at {where}" if where else ""
    kind = kind_of(live)
    if kind == "tensor":
        if not accepts("tensor", stored):
            raise _mismatch(stage, path, describe(live) + at, describe(stored))
        if tuple(stored.shape) != tuple(live.shape):
            raise _mismatch(stage, path, f"shape {tuple(live.shape)}{at} (the live value's)",
                            f"shape {tuple(stored.shape)} ({describe(stored)})")
        if stored.dtype != live.dtype:
            reg = f"; registry expects {registry_dtype}" if registry_dtype else ""
            if not allow_cast:
                raise _mismatch(stage, path, f"dtype {dtype_name(live.dtype)}{at} (the live value's{reg})",
                                f"dtype {dtype_name(stored.dtype)}", "; set COLBERT_TAP_CAST=1 to cast")
            stored = stored.to(live.dtype)
        if stored.device != live.device:
            stored = stored.to(live.device)
        return stored
    if kind in ("int", "float"):
        if not accepts(kind, stored):
            raise _mismatch(stage, path, ("an int" if kind == "int" else "a float") + at, describe(stored))
        return from_saved(kind, stored)
    if kind == "set":
        if not accepts("set", stored):
            raise _mismatch(stage, path, f"a set of {len(live)}{at}", describe(stored))
        as_set = set(stored)
        if len(as_set) != len(live):
            raise _mismatch(stage, path, f"a set of {len(live)} elements{at} (the live value's)",
                            f"{len(as_set)} distinct elements ({describe(stored)})")
        if live:
            want = type(next(iter(live)))
            bad = next((x for x in as_set if type(x) is not want), None)
            if bad is not None:
                raise _mismatch(stage, path, f"elements of type {want.__name__}{at}",
                                f"an element {bad!r} of type {type(bad).__name__}")
        return type(live)(as_set)
    if kind in ("list", "tuple"):
        if kind_of(stored) not in ("list", "tuple"):
            raise _mismatch(stage, path, f"a {type(live).__name__} of {len(live)}{at}", describe(stored))
        if len(stored) != len(live):
            raise _mismatch(stage, path, f"a {type(live).__name__} of length {len(live)}{at} (the live value's)",
                            f"length {len(stored)} ({describe(stored)})")
        items = [_fit(stage, path, s, l, f"{where}[{i}]", allow_cast) for i, (s, l) in enumerate(zip(stored, live))]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        if kind_of(stored) != "dict" or set(stored) != set(live):
            raise _mismatch(stage, path, f"a dict with keys {sorted(map(str, live))}{at}", describe(stored))
        return {k: _fit(stage, path, stored[k], v, f"{where}[{k!r}]", allow_cast) for k, v in live.items()}
    # bool, None, str, and a live type we do not know how to check: accept only the identical type.
    if type(stored) is not type(live):
        raise _mismatch(stage, path, describe(live) + at, describe(stored))
    return stored
