"""The index plan: embedding-count estimate and number of centroids."""

from __future__ import annotations

import numpy as np
import torch

from colbert.tap import tap


def float32_mean(total: float, count: int) -> float:
    # Upstream carries the estimate in a float32 tensor (for all-reduce); the rounding reaches K.
    return torch.tensor([total / count], dtype=torch.float32).item()


def estimate_plan(num_passages: int, avg_doclen_est: float):
    avg_doclen_est = tap("avg_doclen_est", avg_doclen_est)
    num_embeddings_est = tap("num_embeddings_est", num_passages * avg_doclen_est)
    num_partitions = int(2 ** np.floor(np.log2(16 * np.sqrt(num_embeddings_est))))
    num_partitions = tap("num_partitions", num_partitions)
    return avg_doclen_est, num_embeddings_est, num_partitions
