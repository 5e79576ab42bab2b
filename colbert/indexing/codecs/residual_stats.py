"""Held-out residual statistics: bucket cutoffs/weights (quantiles) and the average |residual|."""

from __future__ import annotations

import torch

from colbert.indexing.codecs.residual_codec import ResidualCodec
from colbert.tap import tap


def compute_residual_stats(config, centroids: torch.Tensor, heldout: torch.Tensor):
    """On the CPU path `centroids` are the un-rounded float32 ones (upstream's quirk); the chunk codec
    later uses the fp16-rounded centroids read back from the index."""
    if heldout.size(0) == 0:
        raise ValueError("residual statistics: the held-out sample is empty (too few embeddings to index)")
    codec = ResidualCodec(config, centroids=centroids)
    heldout = heldout.cuda() if codec.use_gpu else heldout
    codes = codec.compress_into_codes(heldout, out_device=heldout.device)
    recon = codec.lookup_centroids(codes, out_device=heldout.device)
    residuals = heldout - recon
    avg_residual = torch.abs(residuals).mean(dim=0).cpu()

    num_options = 2 ** config.nbits
    quantiles = torch.arange(0, num_options, device=heldout.device) * (1 / num_options)
    cutoff_quantiles, weight_quantiles = quantiles[1:], quantiles + (0.5 / num_options)
    flat = residuals.float().flatten()
    bucket_cutoffs = tap("bucket_cutoffs", torch.quantile(flat, cutoff_quantiles))
    bucket_weights = tap("bucket_weights", torch.quantile(flat, weight_quantiles))
    avg_residual = tap("avg_residual", avg_residual.mean())
    return bucket_cutoffs, bucket_weights, avg_residual
