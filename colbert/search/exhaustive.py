"""Exhaustive MaxSim search: every document of an index scored exactly, no candidate generation, no pruning.

It is the quality ceiling PLAID approximates and the oracle tests hold PLAID against. Embeddings are
decompressed with the index's own ResidualCodec (centroid + bucket weights, then L2-normalised in
float32: what the CPU search path does before exact scoring, §6.4 stage 4 of the spec), one block of
whole documents at a time, and scored against all queries; the scores of one block are bounded by
`max_scores` floats, and only a running top k per query is kept, so memory does not grow with the
collection.

Score = Σ over query tokens of max over the document's tokens of q·d. With floor_at_zero (default) each
per-token maximum starts at 0, as upstream's CPU `segmented_maxsim` does, so exhaustive and PLAID scores
of the same document agree; floor_at_zero=False gives the textbook MaxSim (the GPU path's).
Ties in the ranking go to the smaller pid.

The index files are read directly (metadata.json, doclens.{i}.json, {i}.codes.pt, {i}.residuals.pt,
plus the codec's centroids.pt, buckets.pt, avg_residual.pt), every torch file with weights_only=True.
"""

from __future__ import annotations

import os

import torch
import ujson

from colbert.indexing.codecs.residual_codec import ResidualCodec, ResidualEmbeddings

DEFAULT_BLOCK_EMBEDDINGS = 1 << 16
DEFAULT_MAX_SCORES = 1 << 24  # floats in one block x query-batch similarity matrix (64 MiB)


class IndexFormatError(ValueError):
    pass


def resolve_index_path(index: str, index_root: str | None = None) -> str:
    """An index given by path, or by name under index_root. Raises FileNotFoundError naming what was tried."""
    candidates = [os.path.join(index_root, index)] if index_root else []
    candidates.append(index)
    for path in candidates:
        if os.path.isfile(os.path.join(path, "metadata.json")):
            return os.path.abspath(path)
    raise FileNotFoundError(f"no index (a folder holding metadata.json) at {' or '.join(map(repr, candidates))}")


def _load_json(path: str):
    try:
        with open(path) as f:
            return ujson.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing index file") from None
    except ValueError as e:
        raise IndexFormatError(f"{path}: expected JSON; got unparsable text ({e})") from None


def _load_tensor(path: str, dtype_ok, what: str) -> torch.Tensor:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing index file")
    t = torch.load(path, map_location="cpu", weights_only=True)
    if not torch.is_tensor(t) or not dtype_ok(t):
        got = f"{t.dtype} {tuple(t.shape)}" if torch.is_tensor(t) else type(t).__name__
        raise IndexFormatError(f"{path}: expected {what}; got {got}")
    return t


class IndexChunks:
    """Iterates an index's chunks as (first pid, doclens int64, ResidualEmbeddings), checking that the
    files agree with each other."""

    def __init__(self, index_path: str):
        self.path = index_path
        meta = _load_json(os.path.join(index_path, "metadata.json"))
        try:
            self.num_chunks = int(meta["num_chunks"])
            self.num_embeddings = int(meta["num_embeddings"])
        except (KeyError, TypeError, ValueError):
            raise IndexFormatError(f"{index_path}/metadata.json: expected integer num_chunks and num_embeddings; "
                                   f"got keys {sorted(meta)}") from None
        self.doclens = []
        for i in range(self.num_chunks):
            path = os.path.join(index_path, f"doclens.{i}.json")
            lens = _load_json(path)
            if not isinstance(lens, list) or not all(isinstance(x, int) and x >= 0 for x in lens):
                raise IndexFormatError(f"{path}: expected a JSON list of non-negative integers")
            self.doclens.append(torch.tensor(lens, dtype=torch.int64))
        total = sum(int(d.sum()) for d in self.doclens)
        if total != self.num_embeddings:
            raise IndexFormatError(f"{index_path}: doclens sum to {total} embeddings but metadata.json says "
                                   f"num_embeddings={self.num_embeddings}")
        self.num_documents = sum(d.numel() for d in self.doclens)

    def __iter__(self):
        first_pid = 0
        for i, doclens in enumerate(self.doclens):
            codes = _load_tensor(os.path.join(self.path, f"{i}.codes.pt"),
                                 lambda t: t.dim() == 1 and t.dtype in (torch.int32, torch.int64), "1-D int32 codes")
            residuals = _load_tensor(os.path.join(self.path, f"{i}.residuals.pt"),
                                     lambda t: t.dim() == 2 and t.dtype == torch.uint8, "2-D uint8 residuals")
            rows = int(doclens.sum())
            if codes.numel() != rows or residuals.size(0) != rows:
                raise IndexFormatError(f"{self.path}: chunk {i} has {codes.numel()} codes and {residuals.size(0)} "
                                       f"residual rows; doclens.{i}.json says {rows}")
            yield first_pid, doclens, ResidualEmbeddings(codes, residuals)
            first_pid += doclens.numel()


def _merge_topk(best_scores, best_pids, scores, pids, k):
    """Keep, per row, the k best of the union; order: score descending, then pid ascending."""
    scores = torch.cat([best_scores, scores], dim=1)
    pids = torch.cat([best_pids, pids], dim=1)
    order = pids.argsort(dim=1, stable=True)
    scores, pids = scores.gather(1, order), pids.gather(1, order)
    order = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), pids.gather(1, order)


class ExhaustiveRanking:
    """{qid: [(pid, rank, score), ...]}, the shape Searcher.search_all returns."""

    def __init__(self, data: dict):
        self.data = data

    def flat(self):
        return [(qid, pid, rank, score) for qid, entries in self.data.items() for pid, rank, score in entries]

    def todict(self):
        return dict(self.data)

    def save(self, path: str) -> str:
        from colbert.evaluation.files import write_ranking

        return write_ranking(self.data, path)


class ExhaustiveSearcher:
    def __init__(self, index: str, checkpoint: str | None = None, config=None, index_root: str | None = None,
                 floor_at_zero: bool = True, block_embeddings: int = DEFAULT_BLOCK_EMBEDDINGS,
                 max_scores: int = DEFAULT_MAX_SCORES):
        from colbert.infra.config import ColBERTConfig

        self.index_path = resolve_index_path(index, index_root)
        self.chunks = IndexChunks(self.index_path)
        self.codec = ResidualCodec.load(self.index_path)
        index_config = ColBERTConfig.load_from_index(self.index_path)
        self.config = ColBERTConfig.from_existing(index_config, config)
        self.checkpoint_path = checkpoint or self.config.checkpoint
        self.floor_at_zero = floor_at_zero
        self.block_embeddings = max(1, block_embeddings)
        self.max_scores = max(1, max_scores)
        self._checkpoint = None

    @property
    def checkpoint(self):
        if self._checkpoint is None:
            from colbert.modeling.checkpoint import Checkpoint

            if not self.checkpoint_path:
                raise ValueError(f"{self.index_path}: the index names no checkpoint; pass checkpoint=")
            self._checkpoint = Checkpoint(self.checkpoint_path, colbert_config=self.config)
        return self._checkpoint

    def encode(self, queries: list[str]) -> torch.Tensor:
        bsize = 128 if len(queries) > 128 else None
        return self.checkpoint.queryFromText(queries, bsize=bsize, to_cpu=True).cpu().float()

    # -- scoring ---------------------------------------------------------------------------------------
    def _blocks(self):
        """(first pid, doclens, normalised float32 embeddings) for runs of whole documents."""
        for first_pid, doclens, embs in self.chunks:
            ends = doclens.cumsum(0)
            start_doc, start_row = 0, 0
            while start_doc < doclens.numel():
                # whole documents up to block_embeddings rows (at least one document)
                limit = start_row + self.block_embeddings
                end_doc = max(start_doc + 1, int(torch.searchsorted(ends, limit, right=True)))
                end_row = int(ends[end_doc - 1])
                part = ResidualEmbeddings(embs.codes[start_row:end_row], embs.residuals[start_row:end_row])
                D = self.codec.decompress(part).cpu().float()
                yield first_pid + start_doc, doclens[start_doc:end_doc], D
                start_doc, start_row = end_doc, end_row

    def _score_block(self, Q: torch.Tensor, doclens: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
        """(nq, qlen, dim) x one block -> (nq, ndocs) MaxSim scores."""
        nq, qlen, dim = Q.shape
        ndocs = doclens.numel()
        doc_of_row = torch.repeat_interleave(torch.arange(ndocs), doclens)
        per_batch = max(1, self.max_scores // max(1, D.size(0) * qlen))
        out = []
        initial = 0.0 if self.floor_at_zero else float("-inf")
        for Qb in Q.split(per_batch):
            sim = D @ Qb.reshape(-1, dim).T                                    # (rows, b*qlen)
            best = torch.full((ndocs, sim.size(1)), initial, dtype=sim.dtype)
            best.scatter_reduce_(0, doc_of_row.unsqueeze(1).expand_as(sim), sim, reduce="amax", include_self=True)
            out.append(best.view(ndocs, Qb.size(0), qlen).sum(-1).T)          # (b, ndocs)
        return torch.cat(out)

    def score_all(self, Q: torch.Tensor) -> torch.Tensor:
        """(nq, qlen, dim) -> (nq, num_documents) exact scores of every document. Memory grows with the
        collection; search() does not."""
        Q = Q.float()
        parts = [self._score_block(Q, doclens, D) for _, doclens, D in self._blocks()]
        return torch.cat(parts, dim=1) if parts else torch.empty(Q.size(0), 0)

    def rank(self, Q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(nq, qlen, dim) -> (scores (nq, k'), pids (nq, k')), k' = min(k, documents), best first."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        Q = Q.float()
        nq = Q.size(0)
        best_scores = torch.empty(nq, 0)
        best_pids = torch.empty(nq, 0, dtype=torch.int64)
        for first_pid, doclens, D in self._blocks():
            scores = self._score_block(Q, doclens, D)
            pids = torch.arange(first_pid, first_pid + doclens.numel()).expand(nq, -1)
            best_scores, best_pids = _merge_topk(best_scores, best_pids, scores, pids, k)
        return best_scores, best_pids

    # -- Searcher-like API -----------------------------------------------------------------------------
    def search(self, text: str, k: int = 10):
        scores, pids = self.rank(self.encode([text]), k)
        return pids[0].tolist(), list(range(1, pids.size(1) + 1)), scores[0].tolist()

    def search_all(self, queries, k: int = 10) -> ExhaustiveRanking:
        """queries: {qid: text} or a qid<TAB>text TSV path."""
        if isinstance(queries, (str, os.PathLike)):
            from colbert.evaluation.files import load_queries

            queries = load_queries(os.fspath(queries))
        qids, texts = list(queries), list(queries.values())
        scores, pids = self.rank(self.encode(texts), k)
        data = {qid: [(int(p), r, float(s)) for r, (p, s) in enumerate(zip(pids[i].tolist(), scores[i].tolist()), 1)]
                for i, qid in enumerate(qids)}
        return ExhaustiveRanking(data)
