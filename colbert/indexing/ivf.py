"""Inverted file: which passages hold an embedding assigned to each centroid (index_files.IVF)."""

from __future__ import annotations

import os

import torch
import ujson

from colbert.indexing import index_files as files
from colbert.tap import tap
from colbert.utils.io import atomic_torch_save


def build_ivf(chunk_codes: list[torch.Tensor], num_partitions: int):
    codes = torch.cat([c.long() for c in chunk_codes]) if chunk_codes else torch.zeros(0, dtype=torch.long)
    codes = tap("presort_codes", codes, num_partitions=num_partitions)
    values, ivf = sort_codes(codes)
    values = tap("values", values, num_partitions=num_partitions)
    ivf = tap("ivf", ivf, num_embeddings=codes.numel())
    ivf_lengths = torch.bincount(values, minlength=num_partitions)
    if ivf_lengths.size(0) != num_partitions:
        raise ValueError(f"ivf: codes reach centroid {ivf_lengths.size(0) - 1}, but the index has {num_partitions}")
    ivf_lengths = tap("ivf_lengths", ivf_lengths, num_embeddings=codes.numel())
    return ivf, ivf_lengths


def sort_codes(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, ivf): codes sorted ascending and the permutation (upstream's unstable sort: the order of
    equal codes is the kernel's)."""
    return codes.sort()


def read_all_doclens(index_path: str) -> list[int]:
    doclens = []
    for _, name in files.chunks_of(index_path, files.DOCLENS):
        with open(os.path.join(index_path, name)) as f:
            doclens.extend(ujson.load(f))
    return doclens


def optimize_ivf(ivf: torch.Tensor, ivf_lengths: torch.Tensor, all_doclens: list[int]):
    """Embedding-level ivf -> per-centroid sorted unique pids (int32), plus zero padding so that a
    window of the longest list starting at the last list stays in bounds."""
    num_partitions = ivf_lengths.size(0)
    doclens = torch.tensor(all_doclens, dtype=torch.long)
    num_passages = doclens.size(0)
    emb2pid = torch.repeat_interleave(torch.arange(num_passages, dtype=torch.int32), doclens)
    if emb2pid.size(0) != ivf.size(0):
        raise ValueError(f"ivf: doclens sum to {emb2pid.size(0)} embeddings, but the codes hold {ivf.size(0)}")
    ivf_pids = emb2pid[ivf].long()
    centroid_of = torch.repeat_interleave(torch.arange(num_partitions, dtype=torch.long), ivf_lengths)
    # One sort of (centroid, pid) keys gives each centroid's sorted unique pids in one pass.
    keys = torch.unique(centroid_of * max(num_passages, 1) + ivf_pids)
    pid_ivf = (keys % max(num_passages, 1)).to(torch.int32)
    pid_lengths = torch.bincount(keys // max(num_passages, 1), minlength=num_partitions).to(torch.long)
    offsets = torch.zeros(num_partitions + 1, dtype=torch.long)
    torch.cumsum(pid_lengths, dim=0, out=offsets[1:])
    max_stride = int(pid_lengths.max().item()) if num_partitions else 0
    if int(offsets[-2].item()) + max_stride > pid_ivf.size(0):
        pid_ivf = torch.cat((pid_ivf, torch.zeros(max_stride, dtype=torch.int32)))
    pid_ivf = tap("pid_ivf", pid_ivf, num_passages=num_passages)
    pid_lengths = tap("pid_ivf_lengths", pid_lengths, num_passages=num_passages)
    return pid_ivf, pid_lengths


def save_ivf(index_path: str, pid_ivf: torch.Tensor, pid_lengths: torch.Tensor) -> None:
    atomic_torch_save((pid_ivf, pid_lengths), os.path.join(index_path, files.IVF))
