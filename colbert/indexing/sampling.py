"""Which passages train the centroids, their embeddings, and the k-means / held-out split."""

from __future__ import annotations

import random

import numpy as np
import torch

from colbert.tap import tap

TYPICAL_DOCLEN = 120  # upstream's fixed guess, used only to size the sample


def sample_pids(num_passages: int, keys: list[bytes] | None = None) -> set[int]:
    """k = min(1 + int(16 * sqrt(120 N)), N) pids from the global Python RNG (seeded 12345 by the
    launcher); every passage is sampled when N <= 30,720.

    With `keys` (encode mode "exact": each passage's content key), the k passages of smallest key
    instead, so that the sample does not depend on the collection's order."""
    num_samples = min(1 + int(16 * np.sqrt(TYPICAL_DOCLEN * num_passages)), num_passages)
    if keys is not None:
        sampled = set(sorted(range(num_passages), key=keys.__getitem__)[:num_samples])
    else:
        sampled = set(random.sample(range(num_passages), num_samples))
    return tap("sample_pids", sampled, num_passages=num_passages)


def local_sample(collection, sampled_pids: set[int], rank: int, nranks: int,
                 keys: list[bytes] | None = None) -> list[tuple[int, str]]:
    """(pid, passage) of this rank's sampled passages, in collection order.

    With `keys` (exact mode): all sampled passages ordered by content key, rank r taking the r-th of
    nranks contiguous slices, so the gathered sample is in one order whatever the pids and ranks."""
    if keys is None:
        return [(pid, passage) for pid, passage in collection.enumerate(rank, nranks) if pid in sampled_pids]
    ordered = sorted(sampled_pids, key=lambda pid: (keys[pid], pid))
    bounds = np.linspace(0, len(ordered), nranks + 1).round().astype(int)
    return [(pid, collection[pid]) for pid in ordered[bounds[rank]:bounds[rank + 1]]]


def encode_sample(encoder, sample: list[tuple[int, str]], rank: int, nranks: int):
    pids = [pid for pid, _ in sample]
    embs, doclens = encoder.encode_passages([p for _, p in sample], site="sample", pids=pids)
    embs = tap("local_sample_embs", embs, rank=rank, nranks=nranks)
    doclens = tap("local_sample_doclens", doclens, rank=rank, nranks=nranks,
                  num_embeddings=embs.size(0) if embs is not None else None)
    return embs, doclens


def split_sample(sample: torch.Tensor):
    """Shuffle with the global torch RNG, hold out min(5%, 50k) rows for residual statistics."""
    sample = sample[torch.randperm(sample.size(0))]
    heldout_fraction = 0.05
    heldout_size = int(min(heldout_fraction * sample.size(0), 50_000))
    sample, sample_heldout = sample.split([sample.size(0) - heldout_size, heldout_size], dim=0)
    sample = tap("sample", sample)
    sample_heldout = tap("sample_heldout", sample_heldout)
    return sample, sample_heldout
