"""Pure-torch definitions of the colbert-tap search kernels.

These are the specification the C++/CUDA extensions are tested against and the
fallback that colbert.search.extensions uses when no compiled module can be
had.  They are written to be read, not to be fast.  Argument conventions are
documented in colbert.search.extensions.

Upstream (colbert-ai 0.2.22) behaviours reproduced here:
  * segmented_maxsim: each query token's maximum starts at 0 (its CPU search path);
  * filter_pids: per-token maxima start at -9999, ties go to the larger pid
    (the two centroid-only pruning passes);
  * decompress: upstream's residual bit layout, as colbert.indexing.codecs.residual_bits
    defines it (the codec writes residuals.pt with the same functions).

Floating-point sums over query tokens are done one token at a time, in token
order, so that the compiled kernels (which do the same) agree bit for bit; except
segmented_maxsim's, which is torch's sum over the (ndocs, nq) maxima in both, the
order upstream's kernel and the Searcher's exact scores use.
"""

import torch

from colbert.indexing.codecs import residual_bits

# See filter_pids: the starting value of a per-token maximum.
EMPTY_MAX = -9999.0


# ----------------------------------------------------------------------------
# Input checks.  The compiled kernels make the same checks; both raise rather
# than read out of bounds.


def _check_tensor(t, name, dims=None, dtypes=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dims is not None and t.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D, got {t.dim()}-D")
    if dtypes is not None and t.dtype not in dtypes:
        names = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must be {names}, got {str(t.dtype).replace('torch.', '')}")


_INDEX_DTYPES = (torch.int32, torch.int64)


def _starts(offsets, n):
    """Segment start rows from offsets given as n starts or n+1 boundaries."""
    _check_tensor(offsets, "offsets", 1, (torch.int64,))
    if offsets.numel() not in (n, n + 1):
        raise ValueError(f"offsets has {offsets.numel()} entries; expected {n} or {n + 1}")
    return offsets[:n]


def _check_ranges(starts, lengths, nrows, what):
    if (lengths < 0).any():
        raise ValueError(f"{what}: negative length")
    if (starts < 0).any() or (starts + lengths > nrows).any():
        raise IndexError(f"{what}: a segment lies outside the {nrows} stored rows")


def _check_ids(ids, n, name):
    _check_tensor(ids, name, 1, _INDEX_DTYPES)
    ids = ids.long()
    if ids.numel() and (ids.min() < 0 or ids.max() >= n):
        raise IndexError(f"{name} must lie in [0, {n})")
    return ids


def _sum_over_tokens(per_token):
    """(n, nq) -> (n,): token 0 + token 1 + ... in that order, in float32."""
    total = torch.zeros(per_token.size(0), dtype=per_token.dtype, device=per_token.device)
    for t in range(per_token.size(1)):
        total = total + per_token[:, t]
    return total


def _segment_max(values, lengths, initial):
    """(rows, nq) values split into consecutive segments of `lengths` rows ->
    (nsegments, nq): per segment and column, max(initial, values...)."""
    nseg, nq = lengths.numel(), values.size(1)
    segment_of_row = torch.repeat_interleave(torch.arange(nseg, device=values.device), lengths)
    out = torch.full((nseg, nq), initial, dtype=values.dtype, device=values.device)
    index = segment_of_row.unsqueeze(1).expand(-1, nq)
    return out.scatter_reduce(0, index, values, reduce="amax", include_self=True)


# ----------------------------------------------------------------------------


def segmented_maxsim(scores, lengths):
    """scores float32 [rows, nq], lengths int64 [ndocs] (summing to rows)
    -> float32 [ndocs]: for each document (consecutive rows), the sum over query
    tokens of max(0, max over the document's rows)."""
    _check_tensor(scores, "scores", 2, (torch.float32,))
    _check_tensor(lengths, "lengths", 1, (torch.int64,))
    if (lengths < 0).any():
        raise ValueError("segmented_maxsim: negative length")
    if int(lengths.sum()) != scores.size(0):
        raise ValueError(
            f"segmented_maxsim: lengths sum to {int(lengths.sum())} but scores has {scores.size(0)} rows"
        )
    per_token = _segment_max(scores, lengths, 0.0)
    # torch's reduction of the (ndocs, nq) maxima, as upstream's kernel ends, not a token-order loop:
    # the Searcher's exact scores must equal colbert-ai's bit for bit
    return per_token.sum(-1)


def column_argmax(scores):
    """scores [K, n] -> int64 [n]: the row of each column's maximum, as upstream's
    codec takes it (scores.max(dim=0).indices: the first maximum; the first NaN
    if a column has one).  Any dtype and device, as upstream's op."""
    _check_tensor(scores, "scores", 2)
    if scores.size(0) == 0:
        raise ValueError("column_argmax: scores has no rows (no centroids) to take a maximum over")
    return scores.max(dim=0).indices


def segmented_lookup(packed, offsets, lengths, ids):
    """Rows offsets[i] .. offsets[i]+lengths[i]-1 of `packed` for each i in
    `ids`, concatenated in the order of `ids` -> [sum(lengths[ids]), *packed.shape[1:]]."""
    _check_tensor(packed, "packed")
    if packed.dim() < 1:
        raise ValueError("packed must have at least one dimension")
    _check_tensor(lengths, "lengths", 1, (torch.int64,))
    starts = _starts(offsets, lengths.numel())
    ids = _check_ids(ids, lengths.numel(), "ids")
    _check_ranges(starts[ids], lengths[ids], packed.size(0), "segmented_lookup")

    lens = lengths[ids]
    total = int(lens.sum())
    # Output row k of segment i comes from starts[ids[i]] + (k - first output row of i).
    first_out_row = torch.cumsum(lens, 0) - lens
    shift = torch.repeat_interleave(starts[ids] - first_out_row, lens)
    rows = torch.arange(total, device=shift.device) + shift
    return packed[rows]


def _doc_scores(doc_codes, doc_lens, centroid_scores, keep):
    """Approximate score of each document from its centroids only: per query
    token, the best centroid score among the document's codes whose centroid is
    in `keep` (or all codes when keep is None), starting from -9999; summed."""
    token_scores = centroid_scores[doc_codes]  # (sum doc_lens, nq)
    if keep is not None:
        token_scores = torch.where(keep[doc_codes].unsqueeze(1), token_scores,
                                   torch.tensor(EMPTY_MAX, dtype=token_scores.dtype))
    per_token = _segment_max(token_scores, doc_lens, EMPTY_MAX)
    return _sum_over_tokens(per_token)


def _best(pids, scores, k):
    """Indices of the k best (score, pid) pairs, best first; equal scores put
    the larger pid first; NaN ranks below everything."""
    scores = torch.nan_to_num(scores, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    by_pid = torch.sort(pids, descending=True, stable=True).indices
    by_score = torch.sort(scores[by_pid], descending=True, stable=True).indices
    return by_pid[by_score][:k]


def filter_pids(pids, centroid_scores, codes, doclens, offsets, keep, ndocs):
    """Two-pass centroid-only pruning of candidate documents (upstream's PLAID stages 2 and 3).

    pids int32/int64 [P] candidate documents; centroid_scores float32 [K, nq];
    codes int32/int64 [E] centroid id of every stored embedding; doclens int64
    [N]; offsets int64 [N] or [N+1] first embedding of each document; keep bool
    [K] centroids allowed in pass A; ndocs >= 0.

    Pass A scores every candidate with the kept centroids only and keeps the
    ndocs best; pass B rescores those with all centroids and keeps the
    ndocs // 4 best.  Returns int32 pids, best pass-B score first.
    """
    _check_tensor(centroid_scores, "centroid_scores", 2, (torch.float32,))
    _check_tensor(codes, "codes", 1, _INDEX_DTYPES)
    _check_tensor(doclens, "doclens", 1, (torch.int64,))
    starts = _starts(offsets, doclens.numel())
    _check_tensor(keep, "keep", 1, (torch.bool,))
    if keep.numel() != centroid_scores.size(0):
        raise ValueError(f"keep has {keep.numel()} entries but centroid_scores has "
                         f"{centroid_scores.size(0)} rows")
    if int(ndocs) < 0:
        raise ValueError(f"ndocs must be >= 0, got {ndocs}")
    pids = _check_ids(pids, doclens.numel(), "pids")
    if pids.numel() and int(pids.max()) > torch.iinfo(torch.int32).max:
        raise ValueError("pids exceed int32")
    _check_ranges(starts[pids], doclens[pids], codes.numel(), "filter_pids")

    def score(candidates, keep_mask):
        doc_codes = segmented_lookup(codes, starts, doclens, candidates).long()
        if doc_codes.numel() and (doc_codes.min() < 0 or doc_codes.max() >= centroid_scores.size(0)):
            raise IndexError(f"filter_pids: a code is outside [0, {centroid_scores.size(0)})")
        return _doc_scores(doc_codes, doclens[candidates], centroid_scores, keep_mask)

    survivors = pids[_best(pids, score(pids, keep), int(ndocs))]
    final = survivors[_best(survivors, score(survivors, None), int(ndocs) // 4)]
    return final.to(torch.int32)


def _check_codec(residuals, centroids, bucket_weights, nbits):
    if nbits not in (1, 2, 4, 8):
        raise ValueError(f"nbits must be 1, 2, 4 or 8, got {nbits}")
    _check_tensor(centroids, "centroids", 2, (torch.float32, torch.float16))
    _check_tensor(bucket_weights, "bucket_weights", 1, (centroids.dtype,))
    if bucket_weights.numel() != 2 ** nbits:
        raise ValueError(f"bucket_weights has {bucket_weights.numel()} entries; nbits={nbits} "
                         f"needs {2 ** nbits}")
    _check_tensor(residuals, "residuals", 2, (torch.uint8,))
    dim = centroids.size(1)
    if dim % 8:
        raise ValueError(f"dim must be a multiple of 8, got {dim}")
    if residuals.size(1) * 8 != dim * nbits:
        raise ValueError(f"residual rows have {residuals.size(1)} bytes; dim={dim} at "
                         f"nbits={nbits} needs {dim * nbits // 8}")


def unpack_buckets(residuals, nbits):
    """uint8 [n, dim*nbits/8] -> int64 [n, dim] bucket indices (upstream's residual bit layout)."""
    return residual_bits.unpack_buckets(residuals, nbits)


def pack_buckets(buckets, nbits):
    """Inverse of unpack_buckets: int [n, dim] in [0, 2**nbits) -> uint8 [n, dim*nbits/8]
    (what the codec's compress step writes)."""
    return residual_bits.pack_buckets(buckets.long(), nbits)


def decompress_rows(codes, residuals, centroids, bucket_weights, nbits):
    """centroids[codes] + bucket_weights[bucket] per dimension -> [n, dim] in the
    centroids' dtype (float16 inputs give one float16 rounding per element, the
    GPU path's arithmetic).  Not normalised."""
    _check_tensor(codes, "codes", 1, _INDEX_DTYPES)
    _check_codec(residuals, centroids, bucket_weights, nbits)
    if codes.numel() != residuals.size(0):
        raise ValueError(f"{codes.numel()} codes but {residuals.size(0)} residual rows")
    codes = codes.long()
    if codes.numel() and (codes.min() < 0 or codes.max() >= centroids.size(0)):
        raise IndexError(f"decompress: a code is outside [0, {centroids.size(0)})")
    return centroids[codes] + bucket_weights[unpack_buckets(residuals, nbits)]


def decompress_residuals(pids, doclens, offsets, codes, residuals, centroids, bucket_weights, nbits):
    """decompress_rows of the stored embeddings of each document in `pids`,
    concatenated in pid order -> float32 [sum(doclens[pids]), dim] (PLAID's exact-scoring stage;
    the caller normalises)."""
    _check_tensor(doclens, "doclens", 1, (torch.int64,))
    _check_tensor(codes, "codes", 1, _INDEX_DTYPES)
    _check_tensor(centroids, "centroids", 2, (torch.float32,))
    _check_codec(residuals, centroids, bucket_weights, nbits)
    if codes.numel() != residuals.size(0):
        raise ValueError(f"{codes.numel()} codes but {residuals.size(0)} residual rows")
    starts = _starts(offsets, doclens.numel())
    pids = _check_ids(pids, doclens.numel(), "pids")
    doc_codes = segmented_lookup(codes, starts, doclens, pids)
    doc_residuals = segmented_lookup(residuals, starts, doclens, pids)
    return decompress_rows(doc_codes, doc_residuals, centroids, bucket_weights, nbits)


def packbits(bits):
    """Flat 0/1 (any nonzero counts as 1) uint8/bool tensor of 8m entries ->
    uint8 [m], the first bit of each group of 8 in the most significant
    position (numpy.packbits' default)."""
    _check_tensor(bits, "bits", None, (torch.uint8, torch.bool))
    if bits.numel() % 8:
        raise ValueError(f"the number of bits ({bits.numel()}) must be a multiple of 8")
    return residual_bits.pack_bits(bits)
