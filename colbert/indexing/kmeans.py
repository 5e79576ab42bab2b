"""k-means backends behind ColBERTConfig(kmeans_backend=...) / env COLBERT_KMEANS.

faiss      (default) upstream-identical: faiss.Kmeans(dim, K, niter, seed=123) on float32 input.
           Deterministic for a fixed faiss version, BLAS and thread count.
fastkmeans the `fastkmeans` package (FastKMeans, seed 123). Deterministic on CPU for a fixed version;
           its centroids differ from faiss's, so indexes are not upstream-identical.
torch      pure PyTorch Lloyd iterations, no extra dependency. Initial centroids drawn with a private
           torch.Generator seeded 123 (never the global RNG); empty clusters keep their previous
           centroid. Deterministic for a fixed torch version and thread count; differs from faiss.
"""

from __future__ import annotations

import os

import torch

from colbert.tap import tap

BACKENDS = ("faiss", "fastkmeans", "torch")
KMEANS_SEED = 123


def resolve_backend(config) -> str:
    backend = config.kmeans_backend or os.environ.get("COLBERT_KMEANS") or "faiss"
    if backend not in BACKENDS:
        raise ValueError(f"kmeans_backend={backend!r} (from {'config' if config.kmeans_backend else 'COLBERT_KMEANS'}); "
                         f"expected one of {', '.join(BACKENDS)}")
    return backend


def train_kmeans(sample: torch.Tensor, num_partitions: int, niters: int, backend: str = "faiss",
                 use_gpu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (postnorm float32 centroids, centroids in the codec's precision: fp16 on GPU, fp32 on CPU)."""
    if sample.size(0) < num_partitions:
        raise ValueError(f"k-means: {sample.size(0)} training embeddings for {num_partitions} centroids; "
                         "the collection is too small to index")
    if backend == "faiss":
        centroids = _faiss(sample, num_partitions, niters)
    elif backend == "fastkmeans":
        centroids = _fastkmeans(sample, num_partitions, niters)
    else:
        centroids = _torch_kmeans(sample, num_partitions, niters)
    centroids = tap("prenorm_centroids", centroids)
    centroids = tap("postnorm_centroids", normalize_centroids(centroids))
    return centroids, (centroids.half() if use_gpu else centroids.float())


def normalize_centroids(prenorm: torch.Tensor) -> torch.Tensor:
    """Unit-length centroids (postnorm_centroids from prenorm_centroids)."""
    return torch.nn.functional.normalize(prenorm, dim=-1)


def _faiss(sample: torch.Tensor, k: int, niters: int) -> torch.Tensor:
    try:
        import faiss
    except ImportError as e:
        raise ImportError("kmeans_backend='faiss' needs faiss-cpu (pip install faiss-cpu); or set "
                          "COLBERT_KMEANS=torch") from e
    dim = sample.size(-1)
    kmeans = faiss.Kmeans(dim, k, niter=niters, gpu=torch.cuda.is_available(), verbose=True, seed=KMEANS_SEED)
    kmeans.train(sample.float().numpy())
    return torch.from_numpy(kmeans.centroids)


def _fastkmeans(sample: torch.Tensor, k: int, niters: int) -> torch.Tensor:
    try:
        from fastkmeans import FastKMeans
    except ImportError as e:
        raise ImportError("kmeans_backend='fastkmeans' needs the fastkmeans package "
                          "(pip install fastkmeans --no-deps)") from e
    import numpy as np

    data = sample.float().numpy()
    km = FastKMeans(d=data.shape[1], k=k, niter=niters, gpu=torch.cuda.is_available(), seed=KMEANS_SEED,
                    verbose=False)
    # fastkmeans reseeds the global torch and numpy RNGs; keep the caller's streams untouched.
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        km.train(data)
    np.random.set_state(np_state)
    return torch.from_numpy(km.centroids).float()


def _torch_kmeans(sample: torch.Tensor, k: int, niters: int, block: int = 1 << 16) -> torch.Tensor:
    x = sample.float()
    gen = torch.Generator().manual_seed(KMEANS_SEED)
    centroids = x[torch.randperm(x.size(0), generator=gen)[:k]].clone()
    x_sq = (x * x).sum(dim=1)
    for _ in range(niters):
        assign = torch.empty(x.size(0), dtype=torch.long)
        c_sq = (centroids * centroids).sum(dim=1)
        for start in range(0, x.size(0), block):
            xb = x[start:start + block]
            d = x_sq[start:start + block, None] - 2 * xb @ centroids.T + c_sq[None, :]
            assign[start:start + block] = d.argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty, None]
    return centroids
