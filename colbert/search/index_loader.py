"""Reads a PLAID index folder into memory (or memory maps it) and checks it before search uses it.

The search kernels index into these tensors with ids read from the same files, so every file is
checked here (shapes, dtypes, id ranges) and a bad one is reported by name: a corrupt or foreign
index must fail with a message, never inside C++.

Layout read (written by colbert.indexing, same as colbert-ai 0.2.22; the names are in
colbert/indexing/index_files.py):
  METADATA                           {"config": {...}, "num_chunks": n, ...}
  CENTROIDS                          (K, dim) float16
  BUCKETS                            (cutoffs (2**nbits-1,), weights (2**nbits,))
  AVG_RESIDUAL                       0-dim tensor
  IVF                                (pids int32, lengths int64 (K,)); LEGACY_IVF is converted
  DOCLENS, CODES, RESIDUALS          for each chunk i < n

Deliberate difference from upstream: codes/residuals get no 512 uninitialised padding rows (no
kernel here reads past the last document), and `load_index_with_mmap` memory maps the stored tensor
where torch's zip reader says it starts instead of assuming upstream's fixed 320-byte header.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import ujson

from colbert.indexing import index_files as files
from colbert.indexing.codecs.residual_codec import ResidualCodec
from colbert.search.strided_tensor import StridedTensor
from colbert.utils.torch_load import safe_load

CODEC_FILES = files.CODEC_FILES


class IndexFormatError(ValueError):
    """The folder is not a complete PLAID index of the format this package reads."""


@dataclass
class LoadedIndex:
    path: str
    config: object  # ColBERTConfig read from the index metadata
    codec: ResidualCodec
    ivf: StridedTensor  # centroid -> sorted pids
    doclens: torch.Tensor  # int64 (N,)
    offsets: torch.Tensor  # int64 (N + 1,): first embedding of each passage, then the total
    codes: torch.Tensor  # int32 (E,)
    residuals: torch.Tensor  # uint8 (E, dim * nbits / 8)
    num_chunks: int
    mmap: bool

    @property
    def num_passages(self) -> int:
        return self.doclens.numel()

    @property
    def num_embeddings(self) -> int:
        return self.codes.numel()

    @property
    def nbits(self) -> int:
        return self.codec.nbits


def _fail(index_path: str, name: str, expected: str, actual: str) -> IndexFormatError:
    return IndexFormatError(f"index {index_path}: {name}: expected {expected}; found {actual}")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {str(value.dtype).replace('torch.', '')} {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of {len(value)}: " + ", ".join(_describe(v) for v in value[:4])
    return type(value).__name__


def _load_pt(index_path: str, name: str, mmap: bool = False):
    path = os.path.join(index_path, name)
    if not os.path.isfile(path):
        raise _fail(index_path, name, "the file (written by indexing)", "no such file")
    try:
        return safe_load(path, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise _fail(index_path, name, "a torch.save file of tensors", f"unreadable ({type(e).__name__}: {e})") from e


def _check_finite(index_path: str, name: str, tensor: torch.Tensor, what: str) -> None:
    # One pass per codec tensor at load: a NaN centroid or bucket weight otherwise turns every
    # score NaN and the search "succeeds" with a ranking that means nothing.
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        nan = int(torch.isnan(tensor).sum())
        raise _fail(index_path, name, f"finite {what}", f"{nan} NaN and {tensor.numel() - int(finite.sum()) - nan} "
                    f"inf among {tensor.numel()} values ({_describe(tensor)})")


class NonFiniteScoreError(ValueError):
    """A query scored NaN or inf against some passage: a ranking of such scores means nothing."""


def check_scores_finite(scores: torch.Tensor, pids: torch.Tensor, where: str) -> None:
    """Raise NonFiniteScoreError naming the first bad passage; one isfinite pass over the scores."""
    finite = torch.isfinite(scores)
    if bool(finite.all()):
        return
    bad = int((~finite).flatten().nonzero()[0, 0].item())  # scores may be (queries, passages)
    raise NonFiniteScoreError(
        f"{where}: expected finite scores, got {int((~finite).sum())} of {scores.numel()} NaN or inf (first: pid "
        f"{int(pids.flatten()[bad].item())}, score {scores.flatten()[bad].item()}); the query encoding or the "
        "index's tensors hold non-finite values (re-encode, or rebuild the index)")


def _load_json(index_path: str, name: str):
    path = os.path.join(index_path, name)
    if not os.path.isfile(path):
        raise _fail(index_path, name, "the file (written by indexing)", "no such file")
    try:
        with open(path, encoding="utf-8") as f:
            return ujson.load(f)
    except ValueError as e:
        raise _fail(index_path, name, "JSON", f"invalid JSON ({e})") from e


def resolve_index_path(index: str, index_root: str | None = None) -> str:
    """An index given by path, or by name under index_root. Raises FileNotFoundError naming what was tried."""
    candidates = [os.path.join(index_root, index)] if index_root else []
    candidates.append(index)
    for path in candidates:
        if os.path.isfile(os.path.join(path, files.METADATA)):
            return os.path.abspath(path)
    raise FileNotFoundError(f"no index (a folder holding {files.METADATA}) at {' or '.join(map(repr, candidates))}")


def read_index_metadata(index_path: str):
    """-> (ColBERTConfig, num_chunks) from the index metadata, with a clear error for anything else."""
    config, meta = _read_metadata(index_path)
    return config, meta["num_chunks"]


def _read_metadata(index_path: str):
    from colbert.infra.config import ColBERTConfig

    if not os.path.isdir(index_path):
        raise FileNotFoundError(f"index {index_path}: no such folder")
    meta_path = os.path.join(index_path, files.METADATA)
    if not os.path.isfile(meta_path):
        if os.path.isfile(os.path.join(index_path, files.PLAN)):
            raise _fail(index_path, files.METADATA, "the file written when indexing finishes",
                        f"only {files.PLAN}: indexing did not finish (re-run it, or resume with overwrite='resume')")
        raise _fail(index_path, files.METADATA, f"a ColBERT PLAID index folder ({files.LAYOUT_TEXT})",
                    f"no {files.METADATA}; the folder holds {sorted(os.listdir(index_path))[:8]}")
    meta = _load_json(index_path, files.METADATA)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        found = sorted(meta)[:8] if isinstance(meta, dict) else type(meta).__name__
        raise _fail(index_path, files.METADATA, 'an object with a "config" object (colbert-ai >= 0.2 PLAID format)',
                    f"keys {found}")
    num_chunks = meta.get("num_chunks")
    if not isinstance(num_chunks, int) or isinstance(num_chunks, bool) or num_chunks < 1:
        raise _fail(index_path, files.METADATA, '"num_chunks" a whole number >= 1', repr(num_chunks))
    config = ColBERTConfig.from_path(meta_path)
    if config.nbits not in (1, 2, 4, 8):
        raise _fail(index_path, files.METADATA, "config.nbits in 1, 2, 4, 8", repr(config.nbits))
    return config, meta


def _load_codec(index_path: str, config, use_gpu: bool) -> ResidualCodec:
    nbits = config.nbits
    centroids = _load_pt(index_path, files.CENTROIDS)
    if not isinstance(centroids, torch.Tensor) or centroids.dim() != 2 or not centroids.is_floating_point():
        raise _fail(index_path, files.CENTROIDS, "a float tensor (K, dim)", _describe(centroids))
    _check_finite(index_path, files.CENTROIDS, centroids, "centroids")
    dim = centroids.size(1)
    if dim != config.dim:
        raise _fail(index_path, files.CENTROIDS, f"dim {config.dim} ({files.METADATA} config.dim)", f"dim {dim}")
    if dim % (8 * nbits):
        raise _fail(index_path, files.CENTROIDS, f"dim a multiple of 8 * nbits = {8 * nbits}", f"dim {dim}")
    buckets = _load_pt(index_path, files.BUCKETS)
    if (not isinstance(buckets, (tuple, list)) or len(buckets) != 2
            or not all(isinstance(b, torch.Tensor) and b.is_floating_point() for b in buckets)
            or buckets[0].numel() != 2 ** nbits - 1 or buckets[1].numel() != 2 ** nbits):
        raise _fail(index_path, files.BUCKETS, f"(cutoffs ({2 ** nbits - 1},), weights ({2 ** nbits},)) for "
                    f"nbits={nbits}", _describe(buckets))
    _check_finite(index_path, files.BUCKETS, buckets[0], "bucket cutoffs")
    _check_finite(index_path, files.BUCKETS, buckets[1], "bucket weights")
    avg_residual = _load_pt(index_path, files.AVG_RESIDUAL)
    if not isinstance(avg_residual, torch.Tensor) or not avg_residual.is_floating_point():
        raise _fail(index_path, files.AVG_RESIDUAL, "a float tensor", _describe(avg_residual))
    _check_finite(index_path, files.AVG_RESIDUAL, avg_residual, "average residual")
    if avg_residual.dim() == 0:
        avg_residual = avg_residual.item()

    class _CodecConfig:  # the codec reads only these; the GPU decision is the searcher's
        total_visible_gpus = 1 if use_gpu else 0

    _CodecConfig.dim, _CodecConfig.nbits = dim, nbits
    return ResidualCodec(_CodecConfig, centroids, avg_residual, buckets[0].reshape(-1), buckets[1].reshape(-1))


def _load_doclens(index_path: str, num_chunks: int) -> list[list[int]]:
    out = []
    for i in range(num_chunks):
        name = files.chunk_file(files.DOCLENS, i)
        lens = _load_json(index_path, name)
        if not isinstance(lens, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                  for x in lens):
            raise _fail(index_path, name, "a JSON list of token counts (ints >= 0)", _describe(lens))
        out.append(lens)
    return out


def _check_chunk(index_path: str, i: int, codes, residuals, n_embs: int, packed_dim: int, K: int):
    if not isinstance(codes, torch.Tensor) or codes.dim() != 1 or codes.dtype not in (torch.int32, torch.int64):
        raise _fail(index_path, files.chunk_file(files.CODES, i), "a 1-D int32 tensor", _describe(codes))
    if codes.numel() != n_embs:
        raise _fail(index_path, files.chunk_file(files.CODES, i), f"{n_embs} codes (the sum of {files.chunk_file(files.DOCLENS, i)})",
                    f"{codes.numel()}")
    if n_embs and (int(codes.min()) < 0 or int(codes.max()) >= K):
        raise _fail(index_path, files.chunk_file(files.CODES, i), f"centroid ids in [0, {K})",
                    f"ids from {int(codes.min())} to {int(codes.max())}")
    if (not isinstance(residuals, torch.Tensor) or residuals.dtype != torch.uint8
            or tuple(residuals.shape) != (n_embs, packed_dim)):
        raise _fail(index_path, files.chunk_file(files.RESIDUALS, i), f"uint8 ({n_embs}, {packed_dim})", _describe(residuals))


def _load_ivf(index_path: str, doclens: torch.Tensor, K: int) -> StridedTensor:
    N = doclens.numel()
    if os.path.isfile(os.path.join(index_path, files.IVF)):
        name = files.IVF
        loaded = _load_pt(index_path, name)
        ok = (isinstance(loaded, (tuple, list)) and len(loaded) == 2
              and all(isinstance(t, torch.Tensor) and t.dim() == 1 for t in loaded))
        if not ok:
            raise _fail(index_path, name, "(pids int32 (P,), lengths int64 (K,))", _describe(loaded))
        ivf, lengths = loaded
    elif os.path.isfile(os.path.join(index_path, files.LEGACY_IVF)):
        # Pre-PLAID-optimisation layout: embedding ids per centroid; convert in memory (the index
        # folder is not written to: loading must not change what is on disk).
        from colbert.indexing.ivf import optimize_ivf

        name = files.LEGACY_IVF
        loaded = _load_pt(index_path, name)
        ok = (isinstance(loaded, (tuple, list)) and len(loaded) == 2
              and all(isinstance(t, torch.Tensor) and t.dim() == 1 for t in loaded))
        if not ok or int(loaded[1].sum()) != int(doclens.sum()) or loaded[1].numel() != K:
            raise _fail(index_path, name, f"(embedding ids ({int(doclens.sum())},), lengths ({K},))",
                        _describe(loaded))
        emb_ids = loaded[0].long()
        if emb_ids.numel() and (int(emb_ids.min()) < 0 or int(emb_ids.max()) >= int(doclens.sum())):
            raise _fail(index_path, name, f"embedding ids in [0, {int(doclens.sum())})", "ids out of range")
        ivf, lengths = optimize_ivf(emb_ids, loaded[1].long(), doclens.tolist())
    else:
        raise _fail(index_path, files.IVF, f"the file (or legacy {files.LEGACY_IVF})", "neither exists")
    if ivf.dtype not in (torch.int32, torch.int64) or lengths.dtype not in (torch.int32, torch.int64):
        raise _fail(index_path, name, "integer tensors (pids int32, lengths int64)", _describe((ivf, lengths)))
    if lengths.numel() != K:
        raise _fail(index_path, name, f"{K} list lengths (one per centroid in {files.CENTROIDS})", f"{lengths.numel()}")
    lengths = lengths.long()
    if int(lengths.min()) < 0 or int(lengths.sum()) > ivf.numel():
        raise _fail(index_path, name, f"lengths >= 0 summing to at most {ivf.numel()} (the stored pids)",
                    f"sum {int(lengths.sum())}, min {int(lengths.min())}")
    used = ivf[: int(lengths.sum())]
    if used.numel() and (int(used.min()) < 0 or int(used.max()) >= N):
        raise _fail(index_path, name, f"pids in [0, {N}) (the passages in {files.chunk_glob(files.DOCLENS)})",
                    f"pids from {int(used.min())} to {int(used.max())}")
    return StridedTensor(ivf.to(torch.int32), lengths)


def load_index(index_path: str, *, use_gpu: bool = False, mmap: bool = False) -> LoadedIndex:
    config, meta = _read_metadata(index_path)
    num_chunks = meta["num_chunks"]
    if mmap and use_gpu:
        raise ValueError(f"index {index_path}: load_index_with_mmap=True works on the CPU only "
                         "(a GPU search copies the index to the device anyway)")
    codec = _load_codec(index_path, config, use_gpu)
    K, dim, nbits = codec.centroids.size(0), codec.dim, codec.nbits
    packed_dim = dim // 8 * nbits

    chunk_doclens = _load_doclens(index_path, num_chunks)
    doclens = torch.tensor([x for lens in chunk_doclens for x in lens], dtype=torch.int64)
    if doclens.numel() == 0:
        raise _fail(index_path, files.chunk_glob(files.DOCLENS), "at least one passage", "none")
    stated = meta.get("num_embeddings")
    if isinstance(stated, int) and stated != int(doclens.sum()):
        raise _fail(index_path, files.chunk_glob(files.DOCLENS), f"token counts summing to num_embeddings={stated} "
                    f"({files.METADATA})", f"doclens sum to {int(doclens.sum())}")

    if mmap:
        if num_chunks != 1:
            one = f"{files.chunk_file(files.CODES, 0)} / {files.chunk_file(files.RESIDUALS, 0)}"
            raise ValueError(f"index {index_path}: load_index_with_mmap=True needs a single-chunk index (one "
                             f"{one} to map); this one has {num_chunks} chunks. Load it "
                             "without mmap, or re-index into one chunk.")
    codes, residuals = [], []
    for i, lens in enumerate(chunk_doclens):
        c = _load_pt(index_path, files.chunk_file(files.CODES, i), mmap=mmap)
        r = _load_pt(index_path, files.chunk_file(files.RESIDUALS, i), mmap=mmap)
        _check_chunk(index_path, i, c, r, sum(lens), packed_dim, K)
        codes.append(c if c.dtype == torch.int32 else c.to(torch.int32))
        residuals.append(r)
    if len(codes) == 1:
        codes_all, residuals_all = codes[0], residuals[0]  # keeps a memory map a memory map
    else:
        codes_all, residuals_all = torch.cat(codes), torch.cat(residuals)

    offsets = torch.zeros(doclens.numel() + 1, dtype=torch.int64)
    torch.cumsum(doclens, 0, out=offsets[1:])
    ivf = _load_ivf(index_path, doclens, K)
    return LoadedIndex(path=index_path, config=config, codec=codec, ivf=ivf, doclens=doclens, offsets=offsets,
                       codes=codes_all, residuals=residuals_all, num_chunks=num_chunks, mmap=mmap)
