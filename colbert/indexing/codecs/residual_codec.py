"""ResidualCodec: nearest-centroid codes plus nbits-per-dimension bucketised residuals.

The residual bit layout (it must match upstream's files) is defined in residual_bits.py; the
codec packs with it and decompresses through its 256-entry table of the buckets each byte holds.
"""

from __future__ import annotations

import os

import torch

from colbert.indexing import index_files as files
from colbert.indexing.codecs.residual_bits import bucket_bits, byte_buckets, pack_bits
from colbert.search import extensions
from colbert.tap import tap
from colbert.utils.io import atomic_torch_save
from colbert.utils.torch_load import safe_load

COMPRESS_SLICE = 1 << 18
LOOKUP_SLICE = 1 << 20
DECOMPRESS_SLICE = 1 << 15


class ResidualEmbeddings:
    def __init__(self, codes: torch.Tensor, residuals: torch.Tensor):
        if codes.dim() != 1 or residuals.dim() != 2 or residuals.dtype != torch.uint8 or codes.size(0) != residuals.size(0):
            raise ValueError(f"ResidualEmbeddings: expected codes (E,) and uint8 residuals (E, packed); got codes "
                             f"{tuple(codes.shape)} {codes.dtype}, residuals {tuple(residuals.shape)} {residuals.dtype}")
        self.codes = codes.to(torch.int32)
        self.residuals = residuals

    def __len__(self):
        return self.codes.size(0)

    def save(self, index_path: str, chunk: int):
        atomic_torch_save(self.codes, os.path.join(index_path, files.chunk_file(files.CODES, chunk)))
        atomic_torch_save(self.residuals, os.path.join(index_path, files.chunk_file(files.RESIDUALS, chunk)))


class ResidualCodec:
    Embeddings = ResidualEmbeddings

    def __init__(self, config, centroids, avg_residual=None, bucket_cutoffs=None, bucket_weights=None):
        self.use_gpu = config.total_visible_gpus > 0
        self.dim, self.nbits = config.dim, config.nbits
        if self.dim % 8 != 0 or self.dim % (8 * self.nbits) != 0:
            raise ValueError(f"dim={self.dim} must be a multiple of 8 * nbits = {8 * self.nbits}")
        if self.use_gpu:
            self.centroids = centroids.cuda().half()
        else:
            self.centroids = centroids.float()
        self.avg_residual = avg_residual
        if torch.is_tensor(self.avg_residual) and self.use_gpu:
            self.avg_residual = self.avg_residual.cuda().half()
        self.bucket_cutoffs = bucket_cutoffs
        self.bucket_weights = bucket_weights
        if torch.is_tensor(bucket_cutoffs) and self.use_gpu:
            self.bucket_cutoffs = bucket_cutoffs.cuda()
        if torch.is_tensor(bucket_weights):
            self.bucket_weights = bucket_weights.cuda().half() if self.use_gpu else bucket_weights.float()
        self.byte_buckets = byte_buckets(self.nbits).to(self.centroids.device) if bucket_weights is not None else None

    @classmethod
    def load(cls, index_path: str):
        from colbert.infra.config import ColBERTConfig

        config = ColBERTConfig.load_from_index(index_path)
        centroids = safe_load(os.path.join(index_path, files.CENTROIDS))
        avg_residual = safe_load(os.path.join(index_path, files.AVG_RESIDUAL))
        bucket_cutoffs, bucket_weights = safe_load(os.path.join(index_path, files.BUCKETS))
        if avg_residual.dim() == 0:
            avg_residual = avg_residual.item()
        return cls(config, centroids, avg_residual, bucket_cutoffs, bucket_weights)

    def save(self, index_path: str):
        assert self.avg_residual is not None and torch.is_tensor(self.bucket_cutoffs)
        centroids = tap("centroids", self.centroids.half())
        avg_residual = self.avg_residual if torch.is_tensor(self.avg_residual) else torch.tensor([self.avg_residual])
        atomic_torch_save(centroids, os.path.join(index_path, files.CENTROIDS))
        atomic_torch_save((self.bucket_cutoffs, self.bucket_weights), os.path.join(index_path, files.BUCKETS))
        atomic_torch_save(avg_residual, os.path.join(index_path, files.AVG_RESIDUAL))
        return centroids

    # -- compression -------------------------------------------------------------------------
    def compress(self, embs: torch.Tensor) -> ResidualEmbeddings:
        codes, residuals = [], []
        for batch in embs.split(COMPRESS_SLICE):
            batch = batch.cuda().half() if self.use_gpu else batch
            codes_ = self.compress_into_codes(batch, out_device=batch.device)
            centroids_ = self.lookup_centroids(codes_, out_device=batch.device)
            residuals.append(self.binarize(batch - centroids_).cpu())
            codes.append(codes_.cpu())
        return ResidualEmbeddings(torch.cat(codes), torch.cat(residuals))

    def compress_into_codes(self, embs: torch.Tensor, out_device="cpu") -> torch.Tensor:
        codes = []
        bsize = (1 << 29) // self.centroids.size(0)
        for batch in embs.split(bsize):
            if self.use_gpu:
                scores = self.centroids @ batch.T.cuda().half()
            else:
                scores = self.centroids @ batch.T.to(self.centroids.device).float()
            # upstream's scores.max(dim=0).indices; on the CPU a row-sweep kernel gives the same indices
            # ~11x faster (torch's strided reduction costs more than the product); CUDA keeps torch's op
            codes.append(extensions.column_argmax(scores).to(device=out_device))
            # Before the next block's product exists: else two (K x bsize) float32 blocks are alive at
            # once, 2 x 2 GB at K = 16,384 (upstream never names the product, so it holds one).
            del scores
        return torch.cat(codes)

    def lookup_centroids(self, codes: torch.Tensor, out_device="cpu") -> torch.Tensor:
        parts = [self.centroids[c.to(self.centroids.device)].to(device=out_device) for c in codes.split(LOOKUP_SLICE)]
        return torch.cat(parts)

    def binarize(self, residuals: torch.Tensor) -> torch.Tensor:
        buckets = torch.bucketize(residuals.float(), self.bucket_cutoffs).to(dtype=torch.uint8)
        bits = bucket_bits(buckets, self.nbits)
        if bits.is_cuda:  # upstream's GPU branch packs on the GPU: the packbits CUDA kernel, same bit order
            packed = extensions.packbits(bits)
        else:
            packed = pack_bits(bits)
        return packed.reshape(residuals.size(0), self.dim // 8 * self.nbits)

    # -- decompression -------------------------------------------------------------------------
    def decompress(self, compressed: ResidualEmbeddings) -> torch.Tensor:
        out = []
        for codes, residuals in zip(compressed.codes.split(DECOMPRESS_SLICE),
                                    compressed.residuals.split(DECOMPRESS_SLICE)):
            codes, residuals = codes.to(self.centroids.device), residuals.to(self.centroids.device)
            centroids = self.lookup_centroids(codes, out_device=self.centroids.device)
            residuals_ = self.decompress_residuals(residuals).to(centroids.dtype)
            out.append(torch.nn.functional.normalize(centroids + residuals_, dim=-1))
        return torch.cat(out) if out else torch.empty(0, self.dim)

    def decompress_residuals(self, binary_residuals: torch.Tensor) -> torch.Tensor:
        assert binary_residuals.dtype == torch.uint8
        idx = self.byte_buckets[binary_residuals.long()].reshape(binary_residuals.size(0), -1)
        return self.bucket_weights[idx.long()]
