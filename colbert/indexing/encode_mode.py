"""The encode mode of an indexing run: "parity" (upstream's padded batches) or "exact".

parity
    Upstream's batching: a group of index_bsize * 50 passages is padded to its longest passage, sorted
    by length and cut into batches of index_bsize. Bit-identical to colbert-ai, and a passage's
    embeddings depend on its neighbours (the padded width changes the bits).
exact
    Each passage is encoded at its own token length, with no padding: passages of equal length are
    batched together, up to EXACT_TOKEN_BUDGET tokens a batch and never fewer than EXACT_MIN_TOKENS
    (nor one row): a short batch is filled with copies of its own passages, whose outputs are dropped.
    On the CPU the GEMMs of a batch of rows x width <= 192 tokens take another kernel path and change
    the last bits (seen on a 16-core Xeon at 4, 8 and 16 threads; on a 2-core one only single rows of
    a few tokens); above that, and on an H200 at any size, a row's bits depend neither on the number
    of rows nor on its position (docs/encode-modes.md). A passage's embeddings then
    depend on its text alone, so the index is the same whatever index_bsize, bsize, the collection's
    order (pids aside) or the number of ranks: the sample is drawn and ordered by content
    (`content_key`), and the collection is chunked as one rank would chunk it.
"""

from __future__ import annotations

import hashlib
import os

PARITY = "parity"
EXACT = "exact"
MODES = (PARITY, EXACT)
ENV = "COLBERT_ENCODE_MODE"
EXACT_TOKEN_BUDGET = 8192  # tokens per exact-mode batch (rows = budget // width, at least 2)
EXACT_MIN_TOKENS = 256  # a batch of fewer rows x width tokens is filled up with copies (see above)


def resolve_encode_mode(config, error: type[Exception] = ValueError) -> str:
    """`config.encode_mode`, else env COLBERT_ENCODE_MODE, else "parity"; anything else raises `error`.

    >>> from colbert.infra import ColBERTConfig
    >>> resolve_encode_mode(ColBERTConfig(encode_mode="exact"))
    'exact'
    """
    value = getattr(config, "encode_mode", None)
    source = "encode_mode"
    if not value:
        value, source = os.environ.get(ENV, "").strip(), ENV
    if not value:
        return PARITY
    mode = str(value).strip().lower()
    if mode not in MODES:
        raise error(f"{source}={value!r}: expected one of {', '.join(MODES)}")
    return mode


def is_exact(config) -> bool:
    return resolve_encode_mode(config) == EXACT


def rows_independent(rows: int, width: int) -> bool:
    """Whether a batch of `rows` x `width` tokens is one whose rows each get the bits they would get in
    any other such batch of that width (the floor above; exact mode fills its batches up to it, and
    parity's encode-once reuses a row across batches only when both of its batches pass it).

    >>> rows_independent(1, 512), rows_independent(2, 100), rows_independent(2, 128)
    (False, False, True)
    """
    return rows >= 2 and rows * width >= EXACT_MIN_TOKENS


def content_key(passage: str) -> bytes:
    """What orders passages in exact mode, where a pid must not matter: the sha256 of the text."""
    return hashlib.sha256(passage.encode("utf-8")).digest()


def exact_batches(lengths: list[int], budget: int = EXACT_TOKEN_BUDGET,
                  min_tokens: int = EXACT_MIN_TOKENS) -> list[list[int]]:
    """Row indices per batch: equal lengths together (shortest first, caller order within a length),
    at most max(2, budget // length) rows; a batch under max(2, ceil(min_tokens / length)) rows is
    filled up with its own passages again, cyclically (those copies are computed and dropped).

    >>> exact_batches([3, 5, 3, 3], budget=6, min_tokens=0)
    [[0, 2], [3, 3], [1, 1]]
    >>> exact_batches([4, 4, 8], budget=64, min_tokens=16)
    [[0, 1, 0, 1], [2, 2]]
    """
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    batches = []
    for n in sorted(by_length):
        rows = by_length[n]
        step = max(2, budget // max(n, 1))
        least = min(step, max(2, -(-min_tokens // max(n, 1))))
        for o in range(0, len(rows), step):
            batch = rows[o:o + step]
            batches.append((batch * least)[:max(least, len(batch))])
    return batches
