"""Which passages train the centroids, their embeddings, and the k-means / held-out split."""

from __future__ import annotations

import random

import numpy as np
import torch

from colbert.tap import tap

TYPICAL_DOCLEN = 120  # upstream's fixed guess, used only to size the sample


def sample_pids(num_passages: int) -> set[int]:
    """k = min(1 + int(16 * sqrt(120 N)), N) pids from the global Python RNG (seeded 12345 by the
    launcher); every passage is sampled when N <= 30,720."""
    num_samples = min(1 + int(16 * np.sqrt(TYPICAL_DOCLEN * num_passages)), num_passages)
    sampled = set(random.sample(range(num_passages), num_samples))
    return tap("sample_pids", sampled, num_passages=num_passages)


def local_sample(collection, sampled_pids: set[int], rank: int, nranks: int) -> list[tuple[int, str]]:
    """(pid, passage) of this rank's sampled passages, in collection order."""
    return [(pid, passage) for pid, passage in collection.enumerate(rank, nranks) if pid in sampled_pids]


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
