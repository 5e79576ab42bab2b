"""Residual codec bit layout and IVF construction, against straightforward reference code."""

import pytest
import torch

from colbert.indexing.codecs.residual_bits import byte_buckets, pack_bits
from colbert.indexing.codecs.residual_codec import ResidualCodec
from colbert.indexing.ivf import build_ivf, optimize_ivf
from colbert.infra import ColBERTConfig


def reference_pack(buckets: torch.Tensor, nbits: int) -> torch.Tensor:
    """Bits of each dimension's bucket, LSB first, packed MSB-first into bytes (upstream's layout)."""
    rows = []
    for row in buckets.tolist():
        bits = [(b >> j) & 1 for b in row for j in range(nbits)]
        rows.append([int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8)])
    return torch.tensor(rows, dtype=torch.uint8)


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_binarize_layout_and_round_trip(nbits):
    dim = 64
    g = torch.Generator().manual_seed(nbits)
    centroids = torch.nn.functional.normalize(torch.randn(32, dim, generator=g), dim=-1)
    cutoffs = torch.linspace(-0.1, 0.1, 2 ** nbits - 1)
    weights = torch.linspace(-0.12, 0.12, 2 ** nbits)
    codec = ResidualCodec(ColBERTConfig(dim=dim, nbits=nbits), centroids, torch.tensor(0.05), cutoffs, weights)
    embs = torch.nn.functional.normalize(torch.randn(50, dim, generator=g), dim=-1).half()
    out = codec.compress(embs)
    assert out.codes.dtype == torch.int32 and out.residuals.shape == (50, dim * nbits // 8)
    expected_codes = (centroids @ embs.float().T).max(dim=0).indices
    assert torch.equal(out.codes.long(), expected_codes)
    buckets = torch.bucketize((embs.float() - centroids[expected_codes]), cutoffs)
    assert torch.equal(out.residuals, reference_pack(buckets, nbits))
    # decompression inverts the layout: bucket weights come back per dimension
    assert torch.equal(codec.decompress_residuals(out.residuals), weights[buckets])
    recon = codec.decompress(out)
    assert torch.allclose(recon, torch.nn.functional.normalize(centroids[expected_codes] + weights[buckets], dim=-1))


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_lookup_tables(nbits):
    # byte_buckets replaces upstream's two tables (reversed bits per group, then base-2**nbits digits);
    # each row must be those two steps composed: the byte's nbits-wide groups in order, each read LSB first
    table = byte_buckets(nbits)
    assert table.shape == (256, 8 // nbits) and table.dtype == torch.uint8
    for b in range(256):
        groups = [format(b, "08b")[i:i + nbits] for i in range(0, 8, nbits)]
        assert table[b].tolist() == [int(g[::-1], 2) for g in groups], b
    assert table[255].tolist() == [2 ** nbits - 1] * (8 // nbits) and table[0].tolist() == [0] * (8 // nbits)


def test_pack_bits_msb_first():
    bits = torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1], dtype=torch.uint8)
    assert pack_bits(bits).tolist() == [129, 127]


def test_ivf_matches_per_centroid_unique():
    g = torch.Generator().manual_seed(0)
    doclens = torch.randint(1, 9, (40,), generator=g).tolist()
    E, K = sum(doclens), 16
    codes = torch.randint(0, K - 2, (E,), generator=g).int()  # the last centroids stay empty
    ivf, lengths = build_ivf([codes[:E // 2], codes[E // 2:]], K)
    assert lengths.tolist() == torch.bincount(codes.long(), minlength=K).tolist()
    pid_ivf, pid_lengths = optimize_ivf(ivf, lengths, doclens)
    emb2pid = torch.repeat_interleave(torch.arange(40), torch.tensor(doclens))
    expected = [torch.unique(emb2pid[codes.long() == c]) for c in range(K)]
    assert pid_lengths.tolist() == [len(e) for e in expected] and pid_lengths.dtype == torch.int64
    assert pid_ivf.dtype == torch.int32
    flat = torch.cat(expected).int()
    assert torch.equal(pid_ivf[:flat.numel()], flat)
    # padding: a window of the longest list starting at the last list's offset stays in bounds
    max_stride, last = max(pid_lengths.tolist()), flat.numel() - pid_lengths[-1].item()
    if last + max_stride > flat.numel():
        assert pid_ivf.numel() == flat.numel() + max_stride and not pid_ivf[flat.numel():].any()
    else:
        assert pid_ivf.numel() == flat.numel()


def test_ivf_rejects_inconsistent_doclens():
    ivf, lengths = build_ivf([torch.zeros(5, dtype=torch.int32)], 4)
    with pytest.raises(ValueError, match="doclens sum to 4 embeddings, but the codes hold 5"):
        optimize_ivf(ivf, lengths, [2, 2])
