"""The residual bit layout of upstream's index files, defined once.

Each dimension's bucket index (nbits wide) is emitted least significant bit first; the resulting
stream of bits is packed 8 to a byte, the first bit in the most significant position (what
numpy.packbits does by default). A row of `dim` buckets therefore takes dim * nbits / 8 bytes.

The codec packs with this (its CPU path; its GPU path uses the packbits kernel, which the tests
hold to `pack_bits`), decompresses through `byte_buckets`, the pure-torch kernel reference and
`colbert-tap compare` unpack with `unpack_buckets`. The compiled kernels keep their own C++ and are
tested against these functions.
"""

from __future__ import annotations

import torch


def _msb_first(device, dtype: torch.dtype) -> torch.Tensor:
    return torch.arange(7, -1, -1, device=device, dtype=dtype)


def bucket_bits(buckets: torch.Tensor, nbits: int) -> torch.Tensor:
    """Integer buckets of any shape -> flat uint8 0/1 bits, each bucket's nbits least significant first."""
    lsb_first = torch.arange(nbits, device=buckets.device, dtype=buckets.dtype)
    return ((buckets.unsqueeze(-1) >> lsb_first) & 1).to(torch.uint8).reshape(-1)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Flat 0/1 tensor of 8m entries (any nonzero counts as 1) -> uint8 [m], first bit in the MSB."""
    # uint8 throughout: the codec packs 2**18 embeddings at a time, and eight distinct powers of two
    # sum to at most 255
    groups = (bits.reshape(-1, 8) != 0).to(torch.uint8)
    return (groups << _msb_first(bits.device, torch.uint8)).sum(-1, dtype=torch.uint8)


def pack_buckets(buckets: torch.Tensor, nbits: int) -> torch.Tensor:
    """int [n, dim] in [0, 2**nbits) -> uint8 [n, dim*nbits/8]: what the codec writes to residuals.pt."""
    n, dim = buckets.shape
    return pack_bits(bucket_bits(buckets, nbits)).reshape(n, dim * nbits // 8)


def unpack_buckets(packed: torch.Tensor, nbits: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Inverse of pack_buckets: uint8 [n, dim*nbits/8] -> int64 [n, dim] bucket indices. `dtype` is the
    working integer type of the unpacked bits (compare passes int32 to halve its chunks' memory)."""
    n, nbytes = packed.shape
    bits = (packed.to(dtype).unsqueeze(-1) >> _msb_first(packed.device, dtype)) & 1  # (n, nbytes, 8)
    bits = bits.reshape(n, nbytes * 8 // nbits, nbits)  # (n, dim, nbits), least significant first
    weights = 1 << torch.arange(nbits, device=packed.device, dtype=dtype)
    return (bits * weights).sum(-1)


def byte_buckets(nbits: int) -> torch.Tensor:
    """uint8 [256, 8 // nbits]: row b holds the buckets that byte b encodes, in order. Indexing it with
    a row of packed bytes decompresses the row in one gather (upstream does the same in two tables)."""
    return unpack_buckets(torch.arange(256, dtype=torch.uint8).view(256, 1), nbits).to(torch.uint8)
