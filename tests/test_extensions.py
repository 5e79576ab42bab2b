"""The search kernels (colbert.search.extensions) against their pure-torch
definitions (colbert.search.reference), and the references against naive
loops written straight from upstream's described behaviour (residual bit
packing, decompression, strided lookup, PLAID pruning).

The compiled CPU module is required: if it cannot be built these tests fail,
unless COLBERT_EXTENSIONS=off is set, in which case only the native-path tests
skip.  CUDA tests skip without a GPU.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from colbert.search import extensions, reference

ROOT = Path(__file__).resolve().parent.parent
BAD_INPUT = (RuntimeError, TypeError, ValueError, IndexError)


@pytest.fixture(scope="module")
def native():
    if os.environ.get("COLBERT_EXTENSIONS", "").lower() == "off":
        pytest.skip("COLBERT_EXTENSIONS=off: compiled path disabled for this run")
    module = extensions._module("cpu")
    status = extensions._modules["cpu"][1]
    assert module is not None, f"compiled CPU extension unavailable: {status}"
    return module


@pytest.fixture(params=["native", "torch"])
def impl(request):
    if request.param == "native":
        return request.getfixturevalue("native")
    return reference


def gen(seed):
    return torch.Generator().manual_seed(seed)


# Document-length layouts: empty collection, one document, zero-length
# documents, one document longer than any stride bound, many documents.
LAYOUTS = {
    "empty": [],
    "one": [7],
    "one_long": [5000],
    "with_zeros": [0, 3, 0, 0, 5, 1, 0],
    "long_among_short": [3, 1, 4, 1, 5, 3000, 2, 6],
    "many": None,  # 400 random lengths
}


def layout(name, seed=0):
    lens = LAYOUTS[name]
    if lens is None:
        lens = torch.randint(1, 180, (400,), generator=gen(seed)).tolist()
    return torch.tensor(lens, dtype=torch.int64)


# ---------------------------------------------------------------------------
# segmented_maxsim


def naive_maxsim(scores, lengths):
    out, start = [], 0
    for n in lengths.tolist():
        best = [0.0] * scores.size(1)
        for r in range(start, start + n):
            for t in range(scores.size(1)):
                best[t] = max(best[t], float(scores[r, t]))
        start += n
        out.append(sum(best))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("nq", [1, 32])
def test_segmented_maxsim_matches_reference(native, name, nq):
    lengths = layout(name)
    scores = torch.randn(int(lengths.sum()), nq, generator=gen(1))
    expected = reference.segmented_maxsim(scores, lengths)
    got = native.segmented_maxsim(scores, lengths)
    assert got.dtype == torch.float32 and got.shape == (lengths.numel(),)
    assert torch.equal(got, expected)


def test_segmented_maxsim_reference_is_the_spec():
    lengths = torch.tensor([3, 0, 1, 4], dtype=torch.int64)
    scores = torch.randn(8, 5, generator=gen(2))
    scores[3] = -1.0  # a document whose similarities are all negative scores 0
    got = reference.segmented_maxsim(scores, lengths)
    assert torch.allclose(got.double(), naive_maxsim(scores, lengths), atol=1e-5)
    assert got[1] == 0 and got[2] == 0


def test_segmented_maxsim_noncontiguous_scores(native):
    lengths = layout("many", seed=3)
    scores = torch.randn(32, int(lengths.sum()), generator=gen(3)).t()  # a transposed view
    assert torch.equal(native.segmented_maxsim(scores, lengths),
                       reference.segmented_maxsim(scores.contiguous(), lengths))


@pytest.mark.parametrize("nq", [1, 7, 32, 33])
def test_segmented_maxsim_is_the_searchers_old_reduction_bit_for_bit(native, nq):
    # The CPU Searcher's exact scores come from this kernel; before, they came from these two torch ops
    # (which match colbert-ai's). Any other summation order is a few ULPs off on some documents.
    lengths = torch.randint(0, 180, (500,), generator=gen(21), dtype=torch.int64)
    scores = torch.rand(int(lengths.sum()), nq, generator=gen(22)) * 2 - 1
    old = reference._segment_max(scores, lengths, 0.0).sum(-1)
    assert torch.equal(native.segmented_maxsim(scores, lengths), old)
    token_order = reference._sum_over_tokens(reference._segment_max(scores, lengths, 0.0))
    if nq >= 32:  # the order matters: a token-by-token loop differs somewhere
        assert not torch.equal(token_order, old)


def test_segmented_maxsim_keeps_nan(native):
    # A NaN similarity must reach the search's finite-score check, as scatter_reduce's amax lets it.
    lengths = torch.tensor([3, 2], dtype=torch.int64)
    scores = torch.ones(5, 4)
    scores[1, 2] = float("nan")
    got = native.segmented_maxsim(scores, lengths)
    assert torch.isnan(got[0]) and got[1] == 4.0


# ---------------------------------------------------------------------------
# column_argmax: the codec's nearest centroid, torch.max(dim=0).indices bit for bit


def column_cases():
    # Shapes straddling the kernel's 16,384-column tile; one row; ties, NaNs and infinities placed
    # where a row sweep could get them wrong (row 0, the last row, a NaN after a larger number).
    yield "one_row", torch.randn(1, 37, generator=gen(30))
    yield "no_columns", torch.randn(5, 0)
    yield "tile_plus_tail", torch.randn(3, 2 * 16384 + 5, generator=gen(31))
    yield "codec_like", torch.nn.functional.normalize(torch.randn(300, 64, generator=gen(32)), dim=1) @ \
        torch.nn.functional.normalize(torch.randn(5000, 64, generator=gen(33)), dim=1).T
    ties = torch.randint(0, 3, (40, 999), generator=gen(34)).float()  # many exact ties per column
    ties[:, 0] = 2.0  # every row ties
    yield "ties", ties
    dup = torch.randn(64, 1000, generator=gen(35))
    dup[50] = dup[7]  # a duplicated centroid: the earlier row must win
    yield "duplicate_row", dup
    odd = torch.randn(6, 9, generator=gen(36))
    nan = float("nan")
    odd[0, 0] = nan                     # NaN in row 0 stays
    odd[2, 1], odd[4, 1] = nan, nan     # the first of two NaNs
    odd[1, 2], odd[3, 2] = 100.0, nan   # a NaN after the maximum still wins
    odd[:, 3] = float("-inf")           # all -inf: row 0
    odd[2, 4], odd[5, 4] = float("inf"), float("inf")
    odd[:, 5] = nan                     # all NaN: row 0
    odd[5, 6] = nan                     # NaN in the last row
    yield "nan_inf", odd


COLUMN_CASES = list(column_cases())


@pytest.mark.parametrize("name,scores", COLUMN_CASES, ids=[c[0] for c in COLUMN_CASES])
def test_column_argmax_is_torch_max_indices(impl, name, scores):
    got = impl.column_argmax(scores)
    assert got.dtype == torch.int64 and got.shape == (scores.size(1),)
    assert torch.equal(got, scores.max(dim=0).indices)


def test_column_argmax_first_of_ties_and_nans(native):
    scores = torch.tensor([[1.0, 0.0, 5.0], [3.0, float("nan"), 5.0], [3.0, float("nan"), float("nan")]])
    assert native.column_argmax(scores).tolist() == [1, 1, 2]


def test_column_argmax_noncontiguous_and_thread_count(native):
    scores = torch.randn(20000, 48, generator=gen(37)).t()  # a transposed view, 48 rows
    expected = scores.contiguous().max(dim=0).indices
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            assert torch.equal(native.column_argmax(scores), expected)
    finally:
        torch.set_num_threads(threads)


def test_column_argmax_rejects_what_it_cannot_take(native):
    with pytest.raises(RuntimeError, match="float32"):
        native.column_argmax(torch.randn(3, 4, dtype=torch.float64))
    # the public function sends other dtypes to torch, as upstream's op takes them
    half = torch.randn(7, 11).half()
    assert torch.equal(extensions.column_argmax(half), half.max(dim=0).indices)


def test_codec_codes_are_the_same_with_and_without_the_kernel(monkeypatch):
    from colbert.indexing.codecs.residual_codec import ResidualCodec
    from colbert.infra.config import ColBERTConfig

    centroids = torch.nn.functional.normalize(torch.randn(512, 32, generator=gen(38)), dim=1)
    embs = torch.nn.functional.normalize(torch.randn(9000, 32, generator=gen(39)), dim=1).half()
    codec = ResidualCodec(ColBERTConfig(dim=32, nbits=2), centroids=centroids)
    native_codes = codec.compress_into_codes(embs)
    monkeypatch.setenv("COLBERT_EXTENSIONS", "off")
    extensions._reset()
    try:
        torch_codes = codec.compress_into_codes(embs)
    finally:
        monkeypatch.delenv("COLBERT_EXTENSIONS")
        extensions._reset()
    assert torch.equal(native_codes, torch_codes)


# ---------------------------------------------------------------------------
# segmented_lookup


def naive_lookup(packed, starts, lengths, ids):
    parts = [packed[starts[i]: starts[i] + lengths[i]] for i in ids.tolist()]
    if not parts:
        return packed[:0]
    return torch.cat(parts)


def random_packed(dtype, rows, inner, seed):
    g = gen(seed)
    if dtype.is_floating_point:
        return torch.randn(rows, *inner, generator=g).to(dtype)
    high = 256 if dtype == torch.uint8 else 2**31 - 1
    return torch.randint(0, high, (rows, *inner), generator=g).to(dtype)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64, torch.float32, torch.float16])
@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("inner", [(), (16,)])
def test_segmented_lookup(impl, dtype, name, inner):
    lengths = layout(name, seed=4)
    boundaries = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
    # Spare rows at the end, like the index's padding.
    packed = random_packed(dtype, int(lengths.sum()) + 3, inner, seed=5)
    n = lengths.numel()
    ids_sets = [torch.arange(n), torch.randint(0, max(n, 1), (n * 2,), generator=gen(6)) if n else torch.arange(0)]
    if n:
        ids_sets.append(torch.arange(n).flip(0))
    for ids in ids_sets:
        for ids_dtype in (torch.int32, torch.int64):
            for offsets in (boundaries, boundaries[:-1]):
                got = impl.segmented_lookup(packed, offsets, lengths, ids.to(ids_dtype))
                expected = naive_lookup(packed, boundaries, lengths, ids)
                assert got.dtype == dtype and got.shape == expected.shape
                assert torch.equal(got, expected)


# ---------------------------------------------------------------------------
# decompress


def naive_pack(buckets, nbits):
    """Upstream's packing: bits LSB-first per dimension, packed 8 per byte MSB-first."""
    rows = []
    for row in buckets.tolist():
        bits = [(b >> j) & 1 for b in row for j in range(nbits)]
        rows.append([int("".join(map(str, bits[k:k + 8])), 2) for k in range(0, len(bits), 8)])
    return torch.tensor(rows, dtype=torch.uint8).reshape(buckets.size(0), -1)


def codec_case(nbits, dim, nrows, ncentroids=50, seed=0, dtype=torch.float32):
    g = gen(seed)
    buckets = torch.randint(0, 2**nbits, (nrows, dim), generator=g)
    codes = torch.randint(0, ncentroids, (nrows,), generator=g, dtype=torch.int64).int()
    centroids = torch.randn(ncentroids, dim, generator=g).to(dtype)
    weights = torch.randn(2**nbits, generator=g).to(dtype)
    return buckets, codes, reference.pack_buckets(buckets, nbits), centroids, weights


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
@pytest.mark.parametrize("dim", [64, 96, 128])
def test_bit_layout_reference(nbits, dim):
    buckets = torch.randint(0, 2**nbits, (6, dim), generator=gen(nbits * dim))
    packed = reference.pack_buckets(buckets, nbits)
    assert torch.equal(packed, naive_pack(buckets, nbits))
    bits = ((buckets.unsqueeze(-1) >> torch.arange(nbits)) & 1).to(torch.uint8).numpy()
    assert np.array_equal(packed.numpy().reshape(-1), np.packbits(bits.reshape(-1)))
    assert torch.equal(reference.unpack_buckets(packed, nbits), buckets)


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
@pytest.mark.parametrize("dim", [64, 96, 128])
@pytest.mark.parametrize("codes_dtype", [torch.int32, torch.int64])
def test_decompress_rows(impl, nbits, dim, codes_dtype):
    for nrows in (0, 1, 777):
        buckets, codes, residuals, centroids, weights = codec_case(nbits, dim, nrows, seed=nrows + dim)
        codes = codes.to(codes_dtype)
        expected = centroids[codes.long()] + weights[buckets]
        got = impl.decompress_rows(codes, residuals, centroids, weights, nbits)
        assert got.dtype == torch.float32 and got.shape == (nrows, dim)
        assert torch.equal(got, expected)


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
@pytest.mark.parametrize("dim", [64, 96, 128])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_decompress_residuals(impl, nbits, dim, name):
    doclens = layout(name, seed=7)
    extra = 512  # the index pads codes/residuals with spare rows
    nrows = int(doclens.sum()) + extra
    buckets, codes, residuals, centroids, weights = codec_case(nbits, dim, nrows, seed=8)
    boundaries = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(doclens, 0)])
    n = doclens.numel()
    pids = torch.randperm(n, generator=gen(9))[: max(n // 2, min(n, 1))].int()
    rows = naive_lookup(torch.arange(nrows), boundaries, doclens, pids)
    expected = centroids[codes[rows].long()] + weights[buckets[rows]]
    for offsets in (boundaries, boundaries[:-1]):
        got = impl.decompress_residuals(pids, doclens, offsets, codes, residuals, centroids, weights, nbits)
        assert got.dtype == torch.float32 and got.shape == (rows.numel(), dim)
        assert torch.equal(got, expected)


def test_decompress_rows_fp16_reference_rounds_once():
    buckets, codes, residuals, centroids, weights = codec_case(2, 128, 300, seed=10, dtype=torch.float16)
    got = reference.decompress_rows(codes, residuals, centroids, weights, 2)
    exact = centroids[codes.long()].float() + weights[buckets].float()
    assert got.dtype == torch.float16
    assert torch.equal(got, exact.half())


# ---------------------------------------------------------------------------
# filter_pids


def naive_filter_pids(pids, S, codes, doclens, offsets, keep, ndocs):
    """Straight from PLAID's pruning stages 2/3, with Python loops."""
    def score(pid, use_keep):
        best = [-9999.0] * S.size(1)
        start = int(offsets[pid])
        for c in codes[start: start + int(doclens[pid])].tolist():
            if use_keep and not keep[c]:
                continue
            for t in range(S.size(1)):
                best[t] = max(best[t], float(S[c, t]))
        total = torch.tensor(0.0)
        for b in best:  # float32 accumulation, token order
            total = total + torch.tensor(b, dtype=torch.float32)
        return float(total)

    a = sorted(pids.tolist(), key=lambda p: (score(p, True), p), reverse=True)[:ndocs]
    b = sorted(a, key=lambda p: (score(p, False), p), reverse=True)[: ndocs // 4]
    return torch.tensor(b, dtype=torch.int32)


def plaid_case(ndocs_total, ncentroids, nq, seed, quantize=False, long_doc=False):
    g = gen(seed)
    doclens = torch.randint(1, 40, (ndocs_total,), generator=g)
    if long_doc and ndocs_total:
        doclens[ndocs_total // 2] = 4000
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(doclens, 0)])
    codes = torch.randint(0, ncentroids, (int(doclens.sum()) + 512,), generator=g).int()
    S = torch.randn(ncentroids, nq, generator=g)
    if quantize:  # coarse scores so that many documents tie
        S = (S * 2).round() / 2
    keep = S.max(1).values >= 0.5
    return doclens, offsets, codes, S, keep


@pytest.mark.parametrize("quantize", [False, True])
def test_filter_pids_reference_is_the_spec(quantize):
    doclens, offsets, codes, S, keep = plaid_case(60, 20, 4, seed=11, quantize=quantize)
    pids = torch.randperm(60, generator=gen(12))[:45].int()
    for ndocs in (0, 3, 8, 20, 45, 100):
        expected = naive_filter_pids(pids, S, codes, doclens, offsets, keep, ndocs)
        got = reference.filter_pids(pids, S, codes, doclens, offsets, keep, ndocs)
        assert torch.equal(got, expected), ndocs


def test_filter_pids_nothing_kept_and_ties():
    # Docs 0 and 1 have no kept centroid (score -9999 per token); 2 and 3 tie.
    doclens = torch.tensor([1, 1, 1, 1], dtype=torch.int64)
    offsets = torch.tensor([0, 1, 2, 3], dtype=torch.int64)
    codes = torch.tensor([0, 0, 1, 1], dtype=torch.int32)
    S = torch.tensor([[0.1, 0.2], [0.7, 0.9]])
    keep = torch.tensor([False, True])
    pids = torch.tensor([0, 1, 2, 3], dtype=torch.int32)
    # ndocs=8: everything survives pass A; pass B keeps 2, the tie broken by pid.
    assert reference.filter_pids(pids, S, codes, doclens, offsets, keep, 8).tolist() == [3, 2]
    # ndocs=4 keeps 1 document.
    assert reference.filter_pids(pids, S, codes, doclens, offsets, keep, 4).tolist() == [3]


@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("long_doc", [False, True])
@pytest.mark.parametrize("npids", [0, 1, 300, 2000])
def test_filter_pids_matches_reference(native, quantize, long_doc, npids):
    doclens, offsets, codes, S, keep = plaid_case(2500, 64, 32, seed=13, quantize=quantize, long_doc=long_doc)
    pids = torch.randperm(2500, generator=gen(14))[:npids].sort().values.int()
    for ndocs in (0, 1, 4, 256, 1024, 4096):
        expected = reference.filter_pids(pids, S, codes, doclens, offsets, keep, ndocs)
        got = native.filter_pids(pids, S, codes, doclens, offsets, keep, ndocs)
        assert got.dtype == torch.int32
        assert torch.equal(got, expected), ndocs
        got64 = native.filter_pids(pids.long(), S, codes.long(), doclens, offsets[:-1], keep, ndocs)
        assert torch.equal(got64, expected)


def test_filter_pids_thread_count_independent(native):
    doclens, offsets, codes, S, keep = plaid_case(3000, 64, 32, seed=15, quantize=True)
    pids = torch.arange(3000, dtype=torch.int32)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(native.filter_pids(pids, S, codes, doclens, offsets, keep, 1024))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(results[0], r) for r in results[1:])
    assert results[0].numel() == 256


# ---------------------------------------------------------------------------
# packbits


def test_packbits_reference_matches_numpy():
    bits = torch.randint(0, 2, (8 * 123,), generator=gen(16)).to(torch.uint8)
    assert np.array_equal(reference.packbits(bits).numpy(), np.packbits(bits.numpy()))
    assert reference.packbits(torch.zeros(0, dtype=torch.uint8)).numel() == 0


# ---------------------------------------------------------------------------
# Bad input raises a Python exception, from both paths, for every kernel.


def bad_calls():
    lengths = torch.tensor([2, 3], dtype=torch.int64)
    scores = torch.randn(5, 4)
    packed = torch.arange(10, dtype=torch.int32)
    offsets = torch.tensor([0, 2, 5], dtype=torch.int64)
    ids = torch.tensor([1, 0], dtype=torch.int64)
    _, codes, residuals, centroids, weights = codec_case(2, 64, 5, ncentroids=4)
    S = torch.randn(4, 3)
    keep = torch.ones(4, dtype=torch.bool)
    pids = torch.tensor([0, 1], dtype=torch.int32)
    yield "maxsim_f64", "segmented_maxsim", (scores.double(), lengths)
    yield "maxsim_i32_lengths", "segmented_maxsim", (scores, lengths.int())
    yield "maxsim_sum_mismatch", "segmented_maxsim", (scores, torch.tensor([2, 2]))
    yield "maxsim_sum_over", "segmented_maxsim", (scores, torch.tensor([2, 9]))
    yield "maxsim_negative", "segmented_maxsim", (scores, torch.tensor([7, -2]))
    yield "maxsim_1d", "segmented_maxsim", (scores[:, 0], lengths)
    yield "argmax_1d", "column_argmax", (scores[:, 0],)
    yield "argmax_no_rows", "column_argmax", (torch.randn(0, 4),)
    yield "lookup_float_ids", "segmented_lookup", (packed, offsets, lengths, ids.float())
    yield "lookup_id_range", "segmented_lookup", (packed, offsets, lengths, torch.tensor([2]))
    yield "lookup_negative_id", "segmented_lookup", (packed, offsets, lengths, torch.tensor([-1]))
    yield "lookup_offsets_len", "segmented_lookup", (packed, offsets[:1], lengths, ids)
    yield "lookup_past_end", "segmented_lookup", (packed, torch.tensor([0, 8]), lengths, ids)
    yield "lookup_i32_lengths", "segmented_lookup", (packed, offsets, lengths.int(), ids)
    yield "lookup_i32_offsets", "segmented_lookup", (packed, offsets.int(), lengths, ids)
    yield "lookup_scalar_packed", "segmented_lookup", (torch.tensor(1.0), offsets, lengths, ids)
    fp = (pids, S, codes, lengths, offsets, keep, 4)
    yield "filter_float_pids", "filter_pids", (pids.float(),) + fp[1:]
    yield "filter_f64_scores", "filter_pids", (pids, S.double()) + fp[2:]
    yield "filter_u8_keep", "filter_pids", fp[:5] + (keep.to(torch.uint8), 4)
    yield "filter_keep_size", "filter_pids", fp[:5] + (keep[:3], 4)
    yield "filter_pid_range", "filter_pids", (torch.tensor([2], dtype=torch.int32),) + fp[1:]
    yield "filter_code_range", "filter_pids", (pids, S, codes + 10) + fp[3:]
    yield "filter_negative_ndocs", "filter_pids", fp[:6] + (-1,)
    yield "filter_doc_past_codes", "filter_pids", (pids, S, codes, torch.tensor([2, 30])) + fp[4:]
    yield "filter_f32_codes", "filter_pids", (pids, S, codes.float()) + fp[3:]
    dr = (pids, lengths, offsets, codes, residuals, centroids, weights, 2)
    yield "decomp_nbits3", "decompress_residuals", dr[:7] + (3,)
    yield "decomp_width", "decompress_residuals", dr[:4] + (residuals[:, :-1],) + dr[5:]
    yield "decomp_weights_size", "decompress_residuals", dr[:6] + (weights[:3], 2)
    yield "decomp_f16_centroids", "decompress_residuals", dr[:5] + (centroids.half(), weights.half(), 2)
    yield "decomp_f64_weights", "decompress_residuals", dr[:6] + (weights.double(), 2)
    yield "decomp_code_range", "decompress_residuals", dr[:3] + (codes + 4,) + dr[4:]
    yield "decomp_count_mismatch", "decompress_residuals", dr[:3] + (codes[:-1],) + dr[4:]
    yield "decomp_i16_residuals", "decompress_residuals", dr[:4] + (residuals.short(),) + dr[5:]
    yield "decomp_pid_range", "decompress_residuals", (torch.tensor([5]),) + dr[1:]
    yield "rows_code_range", "decompress_rows", (codes - 10, residuals, centroids, weights, 2)
    yield "rows_count_mismatch", "decompress_rows", (codes[:2], residuals, centroids, weights, 2)
    yield "rows_dim_not_8", "decompress_rows", (codes, residuals[:, :1], centroids[:, :4], weights, 2)


BAD = list(bad_calls())


@pytest.mark.parametrize("label,fn,args", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises(impl, label, fn, args):
    with pytest.raises(BAD_INPUT):
        getattr(impl, fn)(*args)


def test_bad_input_in_parallel_region_raises(native):
    # An out-of-range code deep inside a large batch is found inside the
    # threaded loop, not by the up-front checks.
    doclens, offsets, codes, S, keep = plaid_case(3000, 64, 8, seed=17)
    codes = codes.clone()
    codes[int(offsets[2500]) + 1] = 64
    with pytest.raises(RuntimeError, match="outside"):
        native.filter_pids(torch.arange(3000, dtype=torch.int32), S, codes, doclens, offsets, keep, 1024)
    _, c, r, cen, w = codec_case(2, 128, 5000, ncentroids=10, seed=18)
    c[4321] = -3
    with pytest.raises(RuntimeError, match="outside"):
        native.decompress_rows(c, r, cen, w, 2)


# ---------------------------------------------------------------------------
# Loader


def run_python(code, **env):
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=300)


def test_env_off_selects_pure_torch():
    code = (
        "import sys, torch\n"
        "from colbert.search import extensions as e\n"
        "s = e.extension_status()\n"
        "assert s['backend'] == 'torch' and s['mode'] == 'off', s\n"
        "assert s['cpu']['reason'] == 'COLBERT_EXTENSIONS=off', s\n"
        "out = e.segmented_maxsim(torch.ones(3, 2), torch.tensor([1, 2]))\n"
        "assert out.tolist() == [2.0, 2.0], out\n"
        "assert not [m for m in sys.modules if 'colbert_tap_cpu' in m or '_ext_cpu' in m]\n"
        "print('ok')\n"
    )
    result = run_python(code, COLBERT_EXTENSIONS="off")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
    assert "building" not in result.stderr and "Warning" not in result.stderr


def test_env_off_in_process(monkeypatch):
    monkeypatch.setenv("COLBERT_EXTENSIONS", "off")
    extensions._reset()
    try:
        assert extensions.extension_status()["backend"] == "torch"
        lengths = layout("many", seed=19)
        scores = torch.randn(int(lengths.sum()), 8, generator=gen(19))
        assert torch.equal(extensions.segmented_maxsim(scores, lengths),
                           reference.segmented_maxsim(scores, lengths))
    finally:
        monkeypatch.delenv("COLBERT_EXTENSIONS")
        extensions._reset()


def test_public_functions_use_native_path(native):
    extensions._reset()
    status = extensions.extension_status()
    assert status["backend"] in ("aot", "jit"), status
    assert status["cpu"]["module"] and Path(status["cpu"]["module"]).is_file()
    if not torch.cuda.is_available():
        assert status["cuda"]["backend"] == "torch"
        assert "CUDA" in status["cuda"]["reason"]
    doclens, offsets, codes, S, keep = plaid_case(500, 32, 8, seed=20)
    pids = torch.arange(500, dtype=torch.int32)
    assert torch.equal(extensions.filter_pids(pids, S, codes, doclens, offsets, keep, 128),
                       reference.filter_pids(pids, S, codes, doclens, offsets, keep, 128))
    with pytest.raises(RuntimeError):
        extensions.segmented_maxsim(torch.ones(3, 2), torch.tensor([1, 1]))
    with pytest.raises(RuntimeError, match="column_argmax"):  # the kernel's message, not torch's
        extensions.column_argmax(torch.randn(0, 3))


def test_build_failure_falls_back_with_one_warning(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    monkeypatch.delenv("COLBERT_EXTENSIONS", raising=False)
    monkeypatch.setenv("COLBERT_EXTENSIONS_CACHE", str(tmp_path))
    monkeypatch.setattr(extensions, "_import_aot", lambda *a: (None, None))
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: False)
    extensions._reset()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = extensions.segmented_maxsim(torch.ones(2, 2), torch.tensor([2]))
            extensions.segmented_maxsim(torch.ones(2, 2), torch.tensor([2]))
        assert out.tolist() == [2.0]
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1, messages
        assert "ninja" in messages[0] and "pip install --no-build-isolation ." in messages[0]
        assert extensions.extension_status()["cpu"]["backend"] == "torch"

        monkeypatch.setenv("COLBERT_EXTENSIONS", "require")
        extensions._reset()
        with pytest.raises(RuntimeError, match="ninja"):
            extensions.segmented_maxsim(torch.ones(2, 2), torch.tensor([2]))
    finally:
        extensions._reset()


def test_stale_or_foreign_aot_module_is_ignored(monkeypatch):
    import types

    manifest = extensions._manifest(extensions._find_csrc())
    fake = types.ModuleType("colbert._ext_cpu")
    fake.TORCH_VERSION = "0.0.1"
    fake.SOURCE_HASH = "x"
    monkeypatch.setitem(sys.modules, "colbert._ext_cpu", fake)
    module, reason = extensions._import_aot("cpu", manifest, "abc")
    assert module is None and "0.0.1" in reason
    fake.TORCH_VERSION = torch.__version__
    module, reason = extensions._import_aot("cpu", manifest, "abc")
    assert module is None and "stale" in reason
    fake.SOURCE_HASH = "abc"
    module, reason = extensions._import_aot("cpu", manifest, "abc")
    assert module is fake and reason is None


def test_source_hash_tracks_sources(tmp_path):
    csrc = extensions._find_csrc()
    manifest = extensions._manifest(csrc)
    for name in manifest["all_files"]():
        (tmp_path / name).write_bytes((csrc / name).read_bytes())
    original = manifest["source_hash"](str(tmp_path), "cpu")
    original_cuda = manifest["source_hash"](str(tmp_path), "cuda")
    assert original == manifest["source_hash"](str(csrc), "cpu") and original != original_cuda
    (tmp_path / "filter_pids.cpp").write_bytes(b"// changed\n" + (csrc / "filter_pids.cpp").read_bytes())
    assert manifest["source_hash"](str(tmp_path), "cpu") != original
    assert manifest["source_hash"](str(tmp_path), "cuda") == original_cuda
    (tmp_path / "colbert_tap.h").write_bytes(b"// changed\n" + (csrc / "colbert_tap.h").read_bytes())
    assert manifest["source_hash"](str(tmp_path), "cuda") != original_cuda
    assert original in extensions._build_key(original) and torch.__version__.split("+")[0] in extensions._build_key(original)


def test_setup_py_needs_no_torch():
    # An isolated build env has no torch: setup.py must still configure a plain build.
    code = (
        "import sys, runpy\n"
        "sys.modules['torch'] = None\n"
        "sys.argv = ['setup.py', '--name']\n"
        "runpy.run_path('setup.py', run_name='__main__')\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------
# CUDA (skipped without a GPU)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
@pytest.mark.parametrize("dim", [64, 96, 128])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_cuda_decompress_rows(nbits, dim, dtype):
    module = extensions._module("cuda")
    assert module is not None, extensions._modules["cuda"][1]
    for nrows in (0, 1, 3001):
        buckets, codes, residuals, centroids, weights = codec_case(nbits, dim, nrows, seed=nrows, dtype=dtype)
        expected = reference.decompress_rows(codes, residuals, centroids, weights, nbits)
        args = [t.cuda() for t in (codes, residuals, centroids, weights)]
        got = module.decompress_rows(*args, nbits)
        assert got.dtype == dtype and torch.equal(got.cpu(), expected)
        assert torch.equal(extensions.decompress_rows(*args, nbits).cpu(), expected)
        got64 = module.decompress_rows(args[0].long(), *args[1:], nbits)
        assert torch.equal(got64.cpu(), expected)


@cuda
def test_cuda_packbits_and_bad_input():
    module = extensions._module("cuda")
    assert module is not None, extensions._modules["cuda"][1]
    for n in (0, 8, 8 * 1001, 32 * 4096):
        bits = torch.randint(0, 2, (n,), generator=gen(n)).to(torch.uint8)
        assert torch.equal(module.packbits(bits.cuda()).cpu(), reference.packbits(bits))
        assert torch.equal(module.packbits(bits.bool().cuda()).cpu(), reference.packbits(bits))
    with pytest.raises(RuntimeError):
        module.packbits(torch.ones(7, dtype=torch.uint8, device="cuda"))
    with pytest.raises(RuntimeError):
        module.packbits(torch.ones(8, dtype=torch.uint8))
    _, codes, residuals, centroids, weights = codec_case(2, 64, 10, ncentroids=4, dtype=torch.float16)
    with pytest.raises(RuntimeError):
        module.decompress_rows((codes + 4).cuda(), residuals.cuda(), centroids.cuda(), weights.cuda(), 2)
    with pytest.raises(RuntimeError):
        module.decompress_rows(codes.cuda(), residuals.cuda(), centroids.cuda(), weights.float().cuda(), 2)
    # The CUDA context must still be usable after the rejected calls.
    assert torch.ones(1, device="cuda").item() == 1.0
