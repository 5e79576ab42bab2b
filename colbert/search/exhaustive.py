"""Exhaustive MaxSim search: every document of an index scored exactly, no candidate generation, no pruning.

It is the quality ceiling PLAID approximates and the oracle tests hold PLAID against. Embeddings are
decompressed with the index's own ResidualCodec (centroid + bucket weights, then L2-normalised in
float32: what upstream's CPU search path does before exact scoring), one block of
whole documents at a time, and scored against all queries; the scores of one block are bounded by
`max_scores` floats, and only a running top k per query is kept, so beyond the compressed index
(held in memory as the Searcher holds it) memory does not grow with the collection.

Score = Σ over query tokens of max over the document's tokens of q·d. With floor_at_zero (default) each
per-token maximum starts at 0, as upstream's CPU `segmented_maxsim` does, so exhaustive and PLAID scores
of the same document agree; floor_at_zero=False gives the textbook MaxSim (the GPU path's).
Ties in the ranking go to the smaller pid.

The index is read by colbert.search.index_loader, with the same checks and errors as the Searcher.
"""

from __future__ import annotations

import torch

from colbert.indexing.codecs.residual_codec import ResidualEmbeddings
from colbert.search import extensions
from colbert.search.index_loader import IndexFormatError, load_index, resolve_index_path  # noqa: F401
from colbert.search.index_loader import check_scores_finite
from colbert.search.queries import Queries
from colbert.search.ranking import Ranking

DEFAULT_BLOCK_EMBEDDINGS = 1 << 16
DEFAULT_MAX_SCORES = 1 << 24  # floats in one block x query-batch similarity matrix (64 MiB)


def _merge_topk(best_scores, best_pids, scores, pids, k):
    """Keep, per row, the k best of the union; order: score descending, then pid ascending."""
    scores = torch.cat([best_scores, scores], dim=1)
    pids = torch.cat([best_pids, pids], dim=1)
    order = pids.argsort(dim=1, stable=True)
    scores, pids = scores.gather(1, order), pids.gather(1, order)
    order = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), pids.gather(1, order)


class ExhaustiveSearcher:
    def __init__(self, index: str, checkpoint: str | None = None, config=None, index_root: str | None = None,
                 floor_at_zero: bool = True, block_embeddings: int = DEFAULT_BLOCK_EMBEDDINGS,
                 max_scores: int = DEFAULT_MAX_SCORES):
        from colbert.infra.config import ColBERTConfig

        self.index_path = resolve_index_path(index, index_root)
        self.index = load_index(self.index_path)
        self.codec = self.index.codec
        self.config = ColBERTConfig.from_existing(self.index.config, config)
        self.checkpoint_path = checkpoint or self.config.checkpoint
        self.floor_at_zero = floor_at_zero
        self.block_embeddings = max(1, block_embeddings)
        self.max_scores = max(1, max_scores)
        self._checkpoint = None

    @property
    def num_documents(self) -> int:
        return self.index.num_passages

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
        doclens, ends = self.index.doclens, self.index.offsets[1:]
        codes, residuals = self.index.codes, self.index.residuals
        start_doc, start_row = 0, 0
        while start_doc < doclens.numel():
            # whole documents up to block_embeddings rows (at least one document)
            limit = start_row + self.block_embeddings
            end_doc = max(start_doc + 1, int(torch.searchsorted(ends, limit, right=True)))
            end_row = int(ends[end_doc - 1])
            D = self._decompress(codes[start_row:end_row], residuals[start_row:end_row])
            yield start_doc, doclens[start_doc:end_doc], D
            start_doc, start_row = end_doc, end_row

    def _decompress(self, codes: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
        """Normalised float32 embeddings; on the CPU the decompress_rows kernel, which gives the codec's
        bits (centroid + bucket weight, one float32 add per element) about 7x faster."""
        c = self.codec
        if c.centroids.is_cuda:
            return c.decompress(ResidualEmbeddings(codes, residuals)).cpu().float()
        D = extensions.decompress_rows(codes, residuals, c.centroids, c.bucket_weights, c.nbits)
        return torch.nn.functional.normalize(D, dim=-1)

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
            check_scores_finite(scores, pids, f"exhaustive search of {self.index_path}")
            best_scores, best_pids = _merge_topk(best_scores, best_pids, scores, pids, k)
        return best_scores, best_pids

    # -- Searcher-like API -----------------------------------------------------------------------------
    def search(self, text: str, k: int = 10):
        scores, pids = self.rank(self.encode([text]), k)
        return pids[0].tolist(), list(range(1, pids.size(1) + 1)), scores[0].tolist()

    def search_all(self, queries, k: int = 10) -> Ranking:
        """queries: {qid: text}, a list (qids 0..n-1) or a qid<TAB>text TSV path, as Searcher.search_all
        takes them (the same Queries, so a file's qids are ints here too)."""
        queries = Queries.cast(queries)
        qids, texts = list(queries.keys()), list(queries.values())
        scores, pids = self.rank(self.encode(texts), k)
        data = {qid: [(int(p), r, float(s)) for r, (p, s) in enumerate(zip(pids[i].tolist(), scores[i].tolist()), 1)]
                for i, qid in enumerate(qids)}
        return Ranking(data=data, provenance={"source": "ExhaustiveSearcher::search_all", "k": k,
                                              "index": self.index_path})
