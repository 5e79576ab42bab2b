"""ResidualCodec: nearest-centroid codes plus nbits-per-dimension bucketised residuals.

Bit layout (must match upstream's files): for each dimension the bucket index is emitted least
significant bit first; the resulting bit stream is packed 8 bits per byte, first bit in the most
significant position. Decompression inverts that with a 256-entry table per byte.
"""

from __future__ import annotations

import os

import torch

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

    def save(self, path_prefix: str):
        atomic_torch_save(self.codes, f"{path_prefix}.codes.pt")
        atomic_torch_save(self.residuals, f"{path_prefix}.residuals.pt")


def reversed_bit_map(nbits: int) -> torch.Tensor:
    """For each byte: its nbits-wide groups kept in place, the bits inside each group reversed."""
    out = []
    for b in range(256):
        z = 0
        for group in range(8 // nbits):
            shift = group * nbits
            chunk = (b >> shift) & ((1 << nbits) - 1)
            rev = int(format(chunk, f"0{nbits}b")[::-1], 2)
            z |= rev << shift
        out.append(z)
    return torch.tensor(out, dtype=torch.uint8)


def decompression_lookup_table(nbits: int) -> torch.Tensor:
    """Row r: the base-2**nbits digits of r, most significant first (8 // nbits of them)."""
    base, width = 1 << nbits, 8 // nbits
    rows = [[(r // base ** (width - 1 - i)) % base for i in range(width)] for r in range(256)]
    return torch.tensor(rows, dtype=torch.uint8)


def pack_bits_msb_first(bits: torch.Tensor) -> torch.Tensor:
    """Flat 0/1 uint8 tensor (length divisible by 8) -> packed bytes, first bit in the MSB."""
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return (bits.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


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
        device = self.centroids.device
        self.arange_bits = torch.arange(0, self.nbits, dtype=torch.uint8, device=device)
        self.reversed_bit_map = reversed_bit_map(self.nbits).to(device)
        self.decompression_lookup_table = (decompression_lookup_table(self.nbits).to(device)
                                           if bucket_weights is not None else None)

    @classmethod
    def load(cls, index_path: str):
        from colbert.infra.config import ColBERTConfig

        config = ColBERTConfig.load_from_index(index_path)
        centroids = safe_load(os.path.join(index_path, "centroids.pt"))
        avg_residual = safe_load(os.path.join(index_path, "avg_residual.pt"))
        bucket_cutoffs, bucket_weights = safe_load(os.path.join(index_path, "buckets.pt"))
        if avg_residual.dim() == 0:
            avg_residual = avg_residual.item()
        return cls(config, centroids, avg_residual, bucket_cutoffs, bucket_weights)

    def save(self, index_path: str):
        assert self.avg_residual is not None and torch.is_tensor(self.bucket_cutoffs)
        centroids = tap("centroids", self.centroids.half())
        avg_residual = self.avg_residual if torch.is_tensor(self.avg_residual) else torch.tensor([self.avg_residual])
        atomic_torch_save(centroids, os.path.join(index_path, "centroids.pt"))
        atomic_torch_save((self.bucket_cutoffs, self.bucket_weights), os.path.join(index_path, "buckets.pt"))
        atomic_torch_save(avg_residual, os.path.join(index_path, "avg_residual.pt"))
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
            codes.append(scores.max(dim=0).indices.to(device=out_device))
        return torch.cat(codes)

    def lookup_centroids(self, codes: torch.Tensor, out_device="cpu") -> torch.Tensor:
        parts = [self.centroids[c.to(self.centroids.device)].to(device=out_device) for c in codes.split(LOOKUP_SLICE)]
        return torch.cat(parts)

    def binarize(self, residuals: torch.Tensor) -> torch.Tensor:
        buckets = torch.bucketize(residuals.float(), self.bucket_cutoffs).to(dtype=torch.uint8)
        bits = ((buckets.unsqueeze(-1) >> self.arange_bits) & 1).flatten()  # (rows, dim, nbits), LSB first
        if bits.is_cuda:  # upstream's GPU branch packs on the GPU: the packbits CUDA kernel, same bit order
            packed = extensions.packbits(bits)
        else:
            packed = pack_bits_msb_first(bits)
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
        rows = binary_residuals.size(0)
        idx = self.reversed_bit_map[binary_residuals.long()]
        idx = self.decompression_lookup_table[idx.long()].reshape(rows, -1)
        return self.bucket_weights[idx.long()]
