"""Tolerance profiles: how close two floating-point tensors must be to count as a match.

Integer, bool and non-numeric values are always compared exactly; profiles only matter for floats.
A profile maps a float dtype to (atol, rtol), applied as in torch.allclose:
|a - b| <= atol + rtol * |b|.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Profile:
    name: str
    per_dtype: dict[str, tuple[float, float]] = field(default_factory=dict)  # dtype -> (atol, rtol)
    fallback: tuple[float, float] = (0.0, 0.0)
    description: str = ""

    def tol(self, dtype: str) -> tuple[float, float]:
        return self.per_dtype.get(dtype, self.fallback)


def _uniform(name: str, atol: float, rtol: float, description: str) -> Profile:
    return Profile(name, {d: (atol, rtol) for d in FLOAT_DTYPES}, (atol, rtol), description)


# bitsandbytes' test suite tolerances; it defines no float64 row, and a float64 value that is
# "as good as float32" is what the maintainer's script accepted, so float64 borrows float32's.
_BNB = {"float64": (1e-6, 1e-5), "float32": (1e-6, 1e-5), "bfloat16": (1e-3, 1e-2), "float16": (1e-4, 1e-3)}

# torch.testing.assert_close defaults (torch.testing._comparison._DTYPE_PRECISIONS, stored there as
# (rtol, atol)); copied so that the profile does not move silently with a torch upgrade.
_TORCH = {"float64": (1e-7, 1e-7), "float32": (1e-5, 1.3e-6), "bfloat16": (1e-5, 1.6e-2), "float16": (1e-5, 1e-3)}

PROFILES: dict[str, Profile] = {
    "default": _uniform("default", 1e-8, 1e-5, "torch.allclose defaults, every float dtype"),
    "bnb": Profile("bnb", dict(_BNB), _BNB["float32"], "bitsandbytes test tolerances per dtype"),
    "torch": Profile("torch", dict(_TORCH), _TORCH["float32"], "torch.testing.assert_close defaults per dtype"),
    "exact": _uniform("exact", 0.0, 0.0, "bit-for-bit values (NaN equals NaN, -0.0 equals 0.0)"),
}

PROFILE_NAMES = tuple(PROFILES) + ("custom",)


def custom_profile(atol: float | None, rtol: float | None) -> Profile:
    a, r = float(atol or 0.0), float(rtol or 0.0)
    return _uniform("custom", a, r, f"--atol {a:g} --rtol {r:g}, every float dtype")


def resolve_profiles(names: list[str] | None, atol: float | None = None, rtol: float | None = None) -> list[Profile]:
    """The first profile decides the verdict and the exit code; the others are extra columns.

    With no --profile, `default` and `bnb` side by side (the maintainer's tables); --atol/--rtol alone
    mean "judge by my tolerances".
    """
    custom_given = atol is not None or rtol is not None
    if not names:
        names = ["custom"] if custom_given else ["default", "bnb"]
    flat: list[str] = []
    for n in names:
        for part in n.split(","):
            part = part.strip()
            if part and part not in flat:
                flat.append(part)
    out = []
    for n in flat:
        if n == "custom":
            if not custom_given:
                raise ValueError("profile 'custom' needs --atol and/or --rtol")
            out.append(custom_profile(atol, rtol))
        elif n in PROFILES:
            out.append(PROFILES[n])
        else:
            raise ValueError(f"unknown tolerance profile {n!r}; choose from {', '.join(PROFILE_NAMES)}")
    if custom_given and all(p.name != "custom" for p in out):
        out.append(custom_profile(atol, rtol))
    return out


def dtype_name(dtype: torch.dtype | str | None) -> str | None:
    if dtype is None:
        return None
    if isinstance(dtype, str):
        return dtype
    return str(dtype).removeprefix("torch.")


def is_float_dtype(dtype: str | None) -> bool:
    return dtype is not None and (dtype.startswith("float") or dtype.startswith("bfloat") or dtype.startswith("complex"))


def looser_dtype(a: str | None, b: str | None) -> str | None:
    """When the two sides disagree on dtype, judge with the less precise one's tolerance."""
    order = {"bfloat16": 0, "float16": 1, "float32": 2, "float64": 3}
    cands = [d for d in (a, b) if d in order]
    if not cands:
        return a or b
    return min(cands, key=order.__getitem__)
