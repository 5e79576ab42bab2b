"""Variable-length rows packed end to end (e.g. the pid list of each centroid), looked up by id.

Same results as upstream's StridedTensor without its sliding-window views: those exist for
speed on the GPU and their stride choice draws from the global torch RNG, which a search should not
disturb. CPU lookups use the segmented_lookup kernel; CUDA tensors use one torch gather.
"""

from __future__ import annotations

import torch

from colbert.search import extensions


class StridedTensor:
    def __init__(self, packed: torch.Tensor, lengths: torch.Tensor, use_gpu: bool = False):
        if lengths.dim() != 1:
            raise ValueError(f"StridedTensor: lengths must be 1-D, got shape {tuple(lengths.shape)}")
        lengths = lengths.long()
        if lengths.numel() and int(lengths.min()) < 0:
            raise ValueError("StridedTensor: negative length")
        total = int(lengths.sum())
        if total > packed.size(0):
            raise ValueError(f"StridedTensor: lengths sum to {total} rows but packed has {packed.size(0)}")
        self.tensor = packed
        self.lengths = lengths
        self.offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=self.offsets[1:])
        self.use_gpu = use_gpu
        if use_gpu:
            self.tensor, self.lengths, self.offsets = packed.cuda(), self.lengths.cuda(), self.offsets.cuda()

    def __len__(self) -> int:
        return self.lengths.numel()

    def lookup(self, ids) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (rows of every id concatenated in the order of ids, the length of each id's rows)."""
        ids = torch.as_tensor(ids)
        if ids.dim() == 0:
            ids = ids.reshape(1)
        if ids.dim() != 1 or ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"StridedTensor.lookup: ids must be a 1-D integer tensor, got {ids.dtype} "
                             f"{tuple(ids.shape)}")
        ids = ids.to(self.lengths.device).long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(self)):
            raise IndexError(f"StridedTensor.lookup: ids must lie in [0, {len(self)})")
        lengths = self.lengths[ids]
        if self.tensor.is_cuda:
            return gather_rows(self.tensor, self.offsets, self.lengths, ids), lengths
        return extensions.segmented_lookup(self.tensor, self.offsets, self.lengths, ids), lengths

    def as_padded_tensor(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ((n, max_len, *inner) rows zero-padded, bool mask (n, max_len[, 1...]) of real rows)."""
        n = len(self)
        width = int(self.lengths.max()) if n else 0
        inner = tuple(self.tensor.shape[1:])
        out = torch.zeros((n, width, *inner), dtype=self.tensor.dtype, device=self.tensor.device)
        mask = torch.arange(width, device=self.lengths.device).unsqueeze(0) < self.lengths.unsqueeze(1)
        if n and width:
            rows, _ = self.lookup(torch.arange(n, device=self.lengths.device))
            out[mask] = rows
        return out, mask.reshape(n, width, *([1] * len(inner)))


def gather_rows(packed: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor, ids: torch.Tensor):
    """segmented_lookup in plain torch (one gather), for CUDA tensors where there is no CPU kernel:
    rows offsets[i] .. offsets[i] + lengths[i] - 1 of packed for each i in ids, concatenated."""
    ids = ids.long()
    lens = lengths[ids]
    first_out = torch.cumsum(lens, 0) - lens
    rows = torch.arange(int(lens.sum()), device=packed.device) + torch.repeat_interleave(offsets[ids] - first_out, lens)
    return packed[rows]
