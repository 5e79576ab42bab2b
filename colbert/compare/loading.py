"""Reading artifacts safely, and splitting a loaded value into the leaves that rows compare."""

from __future__ import annotations

import hashlib
import json
import numbers
from pathlib import Path
from typing import Any

import torch

from colbert.tap.kinds import SEQUENCES, describe, dtype_name, kind_of, scalar_kind
from colbert.utils.torch_load import safe_load


class LoadError(Exception):
    """An artifact that could not be read; the message names the file."""


def load_pt(path: Path) -> Any:
    """safe_load (weights_only), memory-mapped where torch and the file format allow.

    mmap keeps memory bounded on big indexes: pages are read as the chunked comparison touches
    them. Files in the legacy (non-zip) format cannot be mapped, so they are read whole.
    """
    try:
        return safe_load(path, mmap=True)
    except Exception as first:
        try:
            return safe_load(path)
        except Exception as second:
            msg = str(second).strip().splitlines()[0] if str(second).strip() else type(second).__name__
            if "weights_only" in str(second) or "Unsupported global" in str(second):
                msg = "refused by weights_only=True (the file holds arbitrary Python objects): " + msg
            raise LoadError(f"cannot load {path}: {type(second).__name__}: {msg}") from first


class IntegrityError(LoadError):
    """A file the run's manifest lists is missing, or its bytes are not the ones the run wrote."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(art) -> None:
    """Check a manifest-listed file against the sha256 the run recorded for it."""
    expected = getattr(art, "sha256", None)
    if expected is None:
        return
    if not art.path.exists():
        raise IntegrityError(f"{art.path}: listed in the run's manifest but missing")
    if not expected:
        return
    try:
        got = file_sha256(art.path)
    except OSError as e:
        raise LoadError(f"cannot read {art.path}: {e.strerror or e}") from None
    if got != expected:
        raise IntegrityError(f"{art.path}: sha256 {got[:12]}... is not the {expected[:12]}... its manifest records "
                             "(the file was changed or replaced after the run wrote it)")


def load_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except Exception as e:
        raise LoadError(f"cannot read {path}: {type(e).__name__}: {e}") from e


def load_artifact(art) -> Any:
    verify(art)
    if art.kind in ("json", "doclens"):
        return load_json(art.path)
    if art.kind == "file":
        return art.path
    value = load_pt(art.path)
    if art.element is not None:
        if not isinstance(value, (tuple, list)) or len(value) <= art.element:
            raise LoadError(f"{art.path}: expected a tuple with element {art.element}, got {describe_type(value)}")
        value = value[art.element]
    return value


def describe_type(v: Any) -> str:
    kind = kind_of(v)
    if kind == "tensor":
        return describe(v)
    if kind in ("list", "tuple"):
        return f"{type(v).__name__} of {len(v)}"
    return type(v).__name__


def is_number(v: Any) -> bool:
    return isinstance(v, numbers.Number) and not isinstance(v, torch.Tensor)


def is_number_seq(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(is_number(x) for x in v)


def leaves(value: Any, path: str = "") -> list[tuple[str, Any, bool]]:
    """(path, leaf, inside_container) for every comparable piece of `value`.

    Sequences of plain numbers (doclens, sample doclens) stay whole: they are one list row, not
    thousands of scalar rows. Sets stay whole: their order carries no meaning.
    """
    out: list[tuple[str, Any, bool]] = []

    def walk(v: Any, p: str) -> None:
        if isinstance(v, (list, tuple)) and v and not is_number_seq(v):
            for i, x in enumerate(v):
                walk(x, f"{p}[{i}]")
        elif isinstance(v, dict) and v:
            for k, x in v.items():
                walk(x, f"{p}[{k!r}]")
        else:
            out.append((p, v, p != ""))

    walk(value, path)
    return out


# Numbers are classified by the numbers ABCs (abstract=True): compare reads values it did not make.
def leaf_kind(v: Any, inside: bool) -> str:
    kind = kind_of(v)
    if kind == "tensor":
        return "tuple element" if inside else "tensor"
    if kind == "set":
        return "set"
    scalar = scalar_kind(v, abstract=True)
    if scalar is not None:
        return scalar
    if kind in ("list", "tuple"):
        return "list"
    if isinstance(v, Path):
        return "file"
    return type(v).__name__


def leaf_dtype(v: Any) -> str | None:
    kind = kind_of(v)
    if kind == "tensor":
        return dtype_name(v.dtype)
    if kind in SEQUENCES:
        kinds = {leaf_kind(x, False) for x in v}
        return next(iter(kinds)) if len(kinds) == 1 else ("mixed" if kinds else None)
    return scalar_kind(v, abstract=True)


def leaf_shape(v: Any) -> str | None:
    kind = kind_of(v)
    if kind == "tensor":
        return "(" + ", ".join(str(s) for s in v.shape) + ("," if v.dim() == 1 else "") + ")"
    if kind in SEQUENCES:
        return f"len {len(v)}"
    if isinstance(v, Path):
        try:
            return f"{v.stat().st_size} B"
        except OSError:
            return None
    return None
