from __future__ import annotations

import torch


def insert_prefix_token(t: torch.Tensor, value: int) -> torch.Tensor:
    """Column 0, then a column of `value`, then the rest: the marker goes right after [CLS] in every
    row, padded rows included (upstream does the same, and the padded width depends on it)."""
    col = torch.full((t.size(0), 1), value, dtype=t.dtype, device=t.device)
    return torch.cat([t[:, :1], col, t[:, 1:]], dim=1)


def sort_by_length(ids: torch.Tensor, mask: torch.Tensor, bsize: int):
    if ids.size(0) <= bsize:
        return ids, mask, torch.arange(ids.size(0))
    # torch's default (unstable) sort, like upstream: tie order decides batch membership.
    indices = mask.sum(-1).sort().indices
    reverse_indices = indices.sort().indices
    return ids[indices], mask[indices], reverse_indices


def split_into_batches(ids: torch.Tensor, mask: torch.Tensor, bsize: int):
    return [(ids[o:o + bsize], mask[o:o + bsize]) for o in range(0, ids.size(0), bsize)]


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
