"""Element-wise comparison of two tensors, chunk by chunk so memory stays bounded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from colbert.compare.tolerances import Profile, dtype_name, is_float_dtype, looser_dtype

DEFAULT_CHUNK_ELEMS = 1 << 22


@dataclass
class TensorStats:
    n_total: int = 0
    n_diff: int = 0  # elements not exactly equal (NaN == NaN)
    is_float: bool = False
    max_abs: float = 0.0
    sum_abs: float = 0.0
    n_finite: int = 0
    n_out: dict[str, int] = field(default_factory=dict)  # profile -> elements outside its tolerance
    tol: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def mean_abs(self) -> float | None:
        return self.sum_abs / self.n_finite if self.is_float and self.n_finite else (0.0 if self.is_float else None)


def row_blocks(t: torch.Tensor, chunk_elems: int) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges along dim 0 holding about chunk_elems elements each."""
    if t.dim() == 0:
        yield 0, 1
        return
    n = t.shape[0]
    per_row = max(1, t[0].numel()) if n else 1
    step = max(1, chunk_elems // per_row)
    for s in range(0, n, step):
        yield s, min(n, s + step)


def _block(t: torch.Tensor, s: int, e: int) -> torch.Tensor:
    return t.reshape(1) if t.dim() == 0 else t[s:e].reshape(-1)


def compare_tensors(a: torch.Tensor, b: torch.Tensor, profiles: list[Profile], chunk_elems: int = DEFAULT_CHUNK_ELEMS,
                    advance: Callable[[int], None] | None = None) -> TensorStats:
    """Shapes must be equal. Floats are compared in float64 (so a float16 side is never rounded to
    the other side's precision); the tolerance of the less precise dtype applies when they differ."""
    da, db = dtype_name(a.dtype), dtype_name(b.dtype)
    st = TensorStats(n_total=a.numel(), is_float=is_float_dtype(da) or is_float_dtype(db))
    judge = looser_dtype(da, db)
    for p in profiles:
        st.n_out[p.name] = 0
        st.tol[p.name] = p.tol(judge) if st.is_float else (0.0, 0.0)
    if a.is_complex() or b.is_complex():
        work = torch.complex128
    elif st.is_float:
        work = torch.float64
    elif a.dtype == torch.bool and b.dtype == torch.bool:
        work = torch.bool
    else:
        work = torch.int64
    bytes_per_row = (a.element_size() + b.element_size()) * (a[0].numel() if a.dim() and a.shape[0] else 1)
    same_dtype = a.dtype == b.dtype
    for s, e in row_blocks(a, chunk_elems):
        ra, rb = _block(a, s, e), _block(b, s, e)
        if same_dtype and torch.equal(ra, rb):
            # the common case between two runs; skip the float64 work. NaN != NaN in torch.equal,
            # so a block with NaNs takes the full path and still counts them as equal.
            if st.is_float:
                st.n_finite += int(torch.isfinite(ra).sum()) if not ra.is_complex() else ra.numel()
        elif st.is_float:
            _float_block(ra.to(work), rb.to(work), st)
        else:
            st.n_diff += int((ra.to(work) != rb.to(work)).sum())
        if advance is not None:
            advance(bytes_per_row * (e - s))
    if not st.is_float:
        for p in profiles:
            st.n_out[p.name] = st.n_diff
    return st


def _float_block(x: torch.Tensor, y: torch.Tensor, st: TensorStats) -> None:
    diff = (x - y).abs()
    ref = y.abs()
    if diff.is_complex() or ref.is_complex():
        diff, ref = diff.real, ref.real
    if bool(torch.isfinite(diff).all()):
        # both sides finite (float64 differences of narrower floats cannot overflow): one cheap path
        st.n_diff += int((diff != 0).sum())
        st.n_finite += diff.numel()
        st.sum_abs += float(diff.sum())
        if diff.numel():
            st.max_abs = max(st.max_abs, float(diff.max()))
        for name, (atol, rtol) in st.tol.items():
            st.n_out[name] += int((diff > atol + rtol * ref).sum())
        return
    both_nan = torch.isnan(x) & torch.isnan(y)
    eq = (x == y) | both_nan  # equal infinities count as equal, as in torch.allclose
    finite = torch.isfinite(x) & torch.isfinite(y)
    diff = torch.where(finite, diff, torch.zeros((), dtype=diff.dtype))
    st.n_diff += int((~eq).sum())
    st.n_finite += int(finite.sum())
    st.sum_abs += float(diff.sum())
    if diff.numel():
        st.max_abs = max(st.max_abs, float(diff.max()))
    if bool((~finite & ~eq).any()):
        st.max_abs = float("inf")
    for name, (atol, rtol) in st.tol.items():
        close = eq | (finite & (diff <= atol + rtol * ref))
        st.n_out[name] += int((~close).sum())
