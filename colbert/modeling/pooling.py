"""Hierarchical token pooling (pool_factor > 1): Ward clustering of each document's vectors."""

from __future__ import annotations

import torch


def pool_embeddings_hierarchical(D: torch.Tensor, doclens: list[int], pool_factor: int, protected_tokens: int = 0,
                                 clustering_mode: str = "hierarchical"):
    if clustering_mode != "hierarchical":
        raise ValueError(f"clustering_mode={clustering_mode!r}: only 'hierarchical' is supported")
    try:
        from scipy.cluster.hierarchy import fcluster, linkage
    except ImportError as e:
        raise ImportError("pool_factor > 1 needs scipy: pip install scipy") from e
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pooled, new_doclens = [], []
    offset = 0
    for doclen in doclens:
        doc = D[offset:offset + doclen].to(device)
        offset += doclen
        protected, doc = doc[:protected_tokens], doc[protected_tokens:]
        if doc.size(0) == 0:
            vectors = protected
        else:
            similarities = 1 - (doc @ doc.T)
            Z = linkage(similarities.float().cpu().numpy(), metric="euclidean", method="ward")
            clusters = max(doc.size(0) // pool_factor, 1)
            labels = torch.from_numpy(fcluster(Z, t=clusters, criterion="maxclust")).to(device)
            means = [doc[labels == c].mean(dim=0) for c in range(1, clusters + 1) if (labels == c).any()]
            vectors = torch.cat([torch.stack(means), protected]) if means else protected
        pooled.append(vectors)
        new_doclens.append(vectors.size(0))
    return torch.cat(pooled).to(D.dtype).cpu(), new_doclens
