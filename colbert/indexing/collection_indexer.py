"""One rank's indexing run: setup (sample, plan) -> train (k-means, residual statistics, codec) ->
index_chunks (encode, compress, write) -> finalize (ivf, metadata). Each step is a function whose
inputs and outputs are the artifacts of colbert/tap/stages.py; rank 0 alone trains and finalizes."""

from __future__ import annotations

import contextlib
import math
import logging
import os

import torch
import ujson

from colbert.indexing.codecs.residual_codec import ResidualCodec, ResidualEmbeddings
from colbert.indexing.codecs.residual_stats import compute_residual_stats
from colbert.indexing.collection import Collection
from colbert.indexing.collection_encoder import CollectionEncoder
from colbert.indexing.encode_mode import EXACT, content_key, is_exact
from colbert.indexing import index_files as files
from colbert.indexing.fingerprint import collection_fingerprint, remove_fingerprint, write_fingerprint
from colbert.indexing.ivf import build_ivf, optimize_ivf, read_all_doclens, save_ivf
from colbert.indexing.kmeans import resolve_backend, train_kmeans
from colbert.indexing.plan import estimate_plan, float32_mean
from colbert.indexing.sampling import encode_sample, local_sample, sample_pids, split_sample
from colbert.infra.distributed import all_reduce_sum, barrier
from colbert.modeling.checkpoint import Checkpoint
from colbert.tap import active_tap, tap
from colbert.utils.env import env_flag
from colbert.utils.io import atomic_torch_save, write_json_compact, write_json_pretty
from colbert.utils.memory import release_freed_memory
from colbert.utils.torch_load import safe_load


class Plan:
    def __init__(self, num_chunks, num_partitions, num_embeddings_est, avg_doclen_est):
        self.num_chunks = num_chunks
        self.num_partitions = num_partitions
        self.num_embeddings_est = num_embeddings_est
        self.avg_doclen_est = avg_doclen_est


log = logging.getLogger(__name__)


def _log(config, message: str) -> None:
    if config.rank == 0:
        log.info(message)


def _tap_session(config, index_path):
    try:
        from colbert.tap.session import tap_session
    except ImportError:
        return contextlib.nullcontext()
    return tap_session(config_dict=config.export(), index_path=index_path, rank=config.rank, nranks=config.nranks)


def index_collection(config, collection, progress=None) -> str:
    """Entry point of one rank. `progress(n)` is called as passages are encoded (for a progress bar)."""
    index_path = config.index_path_
    collection = Collection.cast(collection)
    if is_exact(config):
        config.set("encode_mode", EXACT)  # from COLBERT_ENCODE_MODE too: plan.json, metadata.json, manifest
    with torch.inference_mode(), _tap_session(config, index_path):
        checkpoint = Checkpoint(config.checkpoint, colbert_config=config)
        encoder = CollectionEncoder(config, checkpoint, progress=progress)
        plan = setup(config, collection, encoder, index_path)
        barrier()
        if config.rank == 0 and not _can_resume_codec(config, index_path):
            train(config, plan, encoder.sample, index_path)
        encoder.sample = None
        release_freed_memory()
        barrier()
        index_chunks(config, collection, encoder, index_path, plan)
        barrier()
        if config.rank == 0:
            finalize(config, collection, index_path, plan)
        barrier()
    return index_path


def setup(config, collection, encoder, index_path) -> Plan:
    rank, nranks = config.rank, config.nranks
    # The stored plan is enough only once the codec exists: a run killed before then (in k-means)
    # has no sample left to train on, so setup runs again; it draws the same sample (the launcher
    # seeds every run alike) and so writes the plan.json and index a fresh run would.
    if (config.resume and os.path.exists(os.path.join(index_path, files.PLAN))
            and _can_resume_codec(config, index_path)):
        with open(os.path.join(index_path, files.PLAN)) as f:
            p = ujson.load(f)
        encoder.sample = None
        return Plan(p["num_chunks"], p["num_partitions"], p["num_embeddings_est"], p["avg_doclen_est"])

    num_passages = tap("num_passages", len(collection), collection_size=len(collection))
    exact = is_exact(config)
    keys = [content_key(p) for p in collection] if exact else None
    sampled = sample_pids(num_passages, keys=keys)
    local = local_sample(collection, sampled, rank, nranks, keys=keys)
    # COLBERT_ENCODE_ONCE=0 turns reuse off (to time or check it; the index is the same either way).
    if _reuse_allowed(active_tap()) and env_flag("COLBERT_ENCODE_ONCE", default=True):
        # Single rows only where no tap records the chunks' batches, on the CPU (where the floor of
        # rows_independent was measured) and without pooling (which mixes a passage's rows).
        encoder.enable_reuse(rows=active_tap() is None and not encoder.use_gpu and config.pool_factor <= 1)
    _log(config, f"#> Encoding {len(local):,} sampled passages (of {num_passages:,}).")
    embs, doclens = encode_sample(encoder, local, rank, nranks)
    doclens = doclens or []

    if exact:  # the mean over all sampled passages, however they are split over ranks
        totals = all_reduce_sum(torch.tensor([sum(doclens), len(doclens)], dtype=torch.float64))
        avg_doclen_est = float32_mean(totals[0].item(), int(totals[1].item()))
    else:  # upstream: the mean of the ranks' means, carried in float32
        avg = torch.tensor([sum(doclens) / len(doclens) if doclens else 0.0], dtype=torch.float32)
        nonzero = torch.tensor([float(len(local) > 0)])
        all_reduce_sum(avg)
        all_reduce_sum(nonzero)
        avg_doclen_est = avg.item() / nonzero.item() if nranks > 1 else float32_mean(sum(doclens), len(doclens))
    num_sample_embs = all_reduce_sum(torch.tensor([embs.size(0) if embs is not None else 0])).item()

    local_sample_fp16 = embs.half() if embs is not None else torch.zeros(0, config.dim, dtype=torch.float16)
    del embs
    release_freed_memory()  # the encoder's and the float32 sample's memory, before k-means allocates its own
    if nranks > 1:
        atomic_torch_save(local_sample_fp16, os.path.join(index_path, files.rank_sample_file(rank)))
        encoder.sample = None
    else:
        encoder.sample = local_sample_fp16
    encoder.num_sample_embs = num_sample_embs
    encoder.keep_sample_for_reuse([pid for pid, _ in local], doclens, local_sample_fp16)

    avg_doclen_est, num_embeddings_est, num_partitions = estimate_plan(num_passages, avg_doclen_est)
    num_chunks = int(math.ceil(len(collection) / collection.get_chunksize(chunk_ranks(config))))
    _log(config, f"#> {num_passages:,} passages, ~{num_embeddings_est:,.0f} embeddings "
                 f"(avg_doclen_est={avg_doclen_est:.2f}) -> {num_partitions:,} centroids, {num_chunks} chunk(s).")
    plan = Plan(num_chunks, num_partitions, num_embeddings_est, avg_doclen_est)
    if rank == 0:
        write_fingerprint(index_path, collection_fingerprint(collection))  # what a resume must match
        write_json_pretty(os.path.join(index_path, files.PLAN), {
            "config": config.export(), "num_chunks": num_chunks, "num_partitions": num_partitions,
            "num_embeddings_est": num_embeddings_est, "avg_doclen_est": avg_doclen_est})
    return plan


def chunk_ranks(config) -> int:
    """The rank count the collection is chunked for: exact mode chunks as one rank would, so that its
    index files are the same whatever nranks (a rank may then get no chunk)."""
    return 1 if is_exact(config) else config.nranks


def _reuse_allowed(t) -> bool:
    """A chunk may reuse the sample's encoding of a group only if no tap could inject a different
    tokenization, batch output or D into either (a save tap records, so reuse stays on; the chunk's
    group artifacts are then the sample's, saved once under site 'sample')."""
    return t is None or not any(t.may_replace(s) for s in ("tensorize_output", "batches", "D"))


def _gather_sample(config, local_sample_fp16, index_path) -> torch.Tensor:
    if config.nranks == 1:
        return local_sample_fp16
    parts = []
    for r in range(config.nranks):
        path = os.path.join(index_path, files.rank_sample_file(r))
        parts.append(safe_load(path))
        os.remove(path)
    return torch.cat(parts)


def train(config, plan: Plan, local_sample_fp16, index_path) -> None:
    sample = _gather_sample(config, local_sample_fp16, index_path)
    sample, heldout = split_sample(sample)
    backend = resolve_backend(config)
    use_gpu = config.total_visible_gpus > 0
    _log(config, f"#> k-means ({backend}): {sample.size(0):,} x {sample.size(1)} -> {plan.num_partitions:,} "
                 f"centroids, {config.kmeans_niters} iterations.")
    stats_centroids, centroids = train_kmeans(sample, plan.num_partitions, config.kmeans_niters, backend, use_gpu)
    del sample
    bucket_cutoffs, bucket_weights, avg_residual = compute_residual_stats(config, centroids, heldout)
    codec = ResidualCodec(config, centroids, avg_residual, bucket_cutoffs, bucket_weights)
    codec.save(index_path)


def _can_resume_codec(config, index_path) -> bool:
    return bool(config.resume) and all(os.path.exists(os.path.join(index_path, f)) for f in files.CODEC_FILES)


def _chunk_files(index_path, chunk_idx):
    return [os.path.join(index_path, name) for name in files.chunk_files(chunk_idx)]


def index_chunks(config, collection, encoder, index_path, plan: Plan) -> None:
    # Read the codec back from disk as upstream does: chunks are compressed with the fp16-rounded
    # centroids of centroids.pt, not the float32 ones the residual statistics used.
    codec = ResidualCodec.load(index_path)
    rank, nranks = config.rank, config.nranks
    chunksize = collection.get_chunksize(chunk_ranks(config))
    for chunk_idx, offset, passages in collection.enumerate_batches(rank, nranks, chunksize=chunksize):
        if config.resume and all(os.path.exists(p) for p in _chunk_files(index_path, chunk_idx)):
            continue
        _log(config, f"#> Encoding chunk {chunk_idx}: passages {offset:,}..{offset + len(passages) - 1:,}.")
        reused = encoder.reused
        embs, doclens = encoder.encode_passages(passages, site=f"chunk{chunk_idx}",
                                                pids=range(offset, offset + len(passages)))
        if encoder.reused > reused:
            _log(config, f"#> Chunk {chunk_idx}: {encoder.reused - reused:,} of {len(passages):,} passages "
                         f"taken from the sample's encoding.")
        embs = tap("embs", embs.half(), chunk=chunk_idx, rank=rank, nranks=nranks)
        doclens = tap("doclens", doclens, chunk=chunk_idx, rank=rank, nranks=nranks, num_embeddings=embs.size(0))
        compressed = codec.compress(embs)
        codes = tap("codes", compressed.codes, chunk=chunk_idx, rank=rank, nranks=nranks,
                    num_partitions=codec.centroids.size(0))
        residuals = tap("residuals", compressed.residuals, chunk=chunk_idx, rank=rank, nranks=nranks)
        ResidualEmbeddings(codes, residuals).save(index_path, chunk_idx)
        write_json_compact(os.path.join(index_path, files.chunk_file(files.DOCLENS, chunk_idx)), doclens)
        write_json_compact(os.path.join(index_path, files.chunk_file(files.CHUNK_METADATA, chunk_idx)), {
            "passage_offset": offset, "num_passages": len(doclens), "num_embeddings": len(codes)})
        del embs, compressed
        release_freed_memory()


def finalize(config, collection, index_path, plan: Plan) -> None:
    missing = [p for c in range(plan.num_chunks) for p in _chunk_files(index_path, c) if not os.path.exists(p)]
    if missing:
        raise RuntimeError(f"finalize: {len(missing)} chunk file(s) missing, e.g. {missing[:4]}")
    embedding_offset, passage_offset, codes = 0, 0, []
    for c in range(plan.num_chunks):
        meta_path = os.path.join(index_path, files.chunk_file(files.CHUNK_METADATA, c))
        with open(meta_path) as f:
            meta = ujson.load(f)
        if meta["passage_offset"] != passage_offset:
            raise RuntimeError(f"{meta_path}: passage_offset {meta['passage_offset']}, expected {passage_offset}")
        meta["embedding_offset"] = embedding_offset
        passage_offset += meta["num_passages"]
        embedding_offset += meta["num_embeddings"]
        write_json_pretty(meta_path, meta)
        codes.append(safe_load(os.path.join(index_path, files.chunk_file(files.CODES, c))))
    num_embeddings = embedding_offset
    ivf, ivf_lengths = build_ivf(codes, plan.num_partitions)
    pid_ivf, pid_lengths = optimize_ivf(ivf, ivf_lengths, read_all_doclens(index_path))
    save_ivf(index_path, pid_ivf, pid_lengths)
    # metadata.json last: its presence is what marks an index complete.
    write_json_pretty(os.path.join(index_path, files.METADATA), {
        "config": config.export(), "num_chunks": plan.num_chunks, "num_partitions": plan.num_partitions,
        "num_embeddings": num_embeddings, "avg_doclen": num_embeddings / len(collection)})
    remove_fingerprint(index_path)  # a finished folder holds exactly colbert-ai's files
    _log(config, f"#> Index complete: {len(collection):,} passages, {num_embeddings:,} embeddings, "
                 f"{plan.num_partitions:,} centroids -> {index_path}")
