"""PLAID ranking of one query over a loaded index (colbert-ai 0.2.22's four stages).

  1. candidate generation: the `ncells` best centroids of every query token, the union of their
     pid lists (sorted, unique);
  2/3. centroid-only pruning (filter_pids): keep the ndocs best by approximate score using only
     centroids whose best query-token score reaches the threshold, then the ndocs // 4 best with all
     centroids;
  4. exact scoring: decompress the survivors' embeddings, normalise, MaxSim against Q.

CPU: the compiled kernels of colbert.search.extensions (pure torch if none could be built), with
upstream's CPU semantics: float32 throughout and each query token's maximum floored at 0.
Scores come out bit-equal to colbert-ai's on the same index (tests/parity/test_search_parity.py).
CUDA: plain torch with upstream's GPU semantics: float16 centroids, query and decompressed
embeddings, per-token maxima starting at -9999 (no floor), topk pruning.

Every intermediate goes through the search tap points (colbert.tap.stages, phase "search").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from colbert.search import extensions, reference
from colbert.search.index_loader import LoadedIndex, check_scores_finite
from colbert.search.strided_tensor import gather_rows
from colbert.tap import tap

EMPTY_MAX = reference.EMPTY_MAX


class IndexScorer:
    def __init__(self, index: LoadedIndex, use_gpu: bool = False, device: str | None = None):
        """use_gpu selects upstream's GPU algorithm (float16, no floor, topk pruning); it runs on
        `device`, "cuda" unless given (tests run it on "cpu" to check the algorithm without a GPU)."""
        self.index = index
        self.use_gpu = use_gpu
        codec = index.codec
        self.nbits = codec.nbits
        self.num_passages = index.num_passages
        if use_gpu:
            device = device or "cuda"
            self.centroids = codec.centroids.to(device).half()
            self.bucket_weights = codec.bucket_weights.to(device).half()
            self.codes = index.codes.to(device)
            self.residuals = index.residuals.to(device)
            self.doclens, self.offsets = index.doclens.to(device), index.offsets.to(device)
        else:
            self.centroids = codec.centroids.float()
            self.bucket_weights = codec.bucket_weights.float()
            self.codes, self.residuals = index.codes, index.residuals
            self.doclens, self.offsets = index.doclens, index.offsets
        self.ivf = index.ivf

    @property
    def device(self) -> torch.device:
        return self.centroids.device

    # -- stage 1 ------------------------------------------------------------------------------
    def retrieve(self, config, Q: torch.Tensor, tap_ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Q (1, L, dim) -> (candidate pids int32 sorted unique, centroid scores (K, L'))."""
        Q = Q[:, : config.query_maxlen].squeeze(0).to(device=self.device, dtype=self.centroids.dtype)
        S = self.centroids @ Q.T
        S = tap("centroid_scores", S, **tap_ctx)
        ncells = int(config.ncells)
        if ncells < 1:
            raise ValueError(f"ncells must be >= 1 (centroids probed per query token); got {config.ncells}")
        if ncells == 1:
            cells = S.argmax(dim=0, keepdim=True).permute(1, 0)
        else:
            # more cells than centroids means all of them (upstream's topk would raise)
            cells = S.topk(min(ncells, S.size(0)), dim=0, sorted=False).indices.permute(1, 0)
        cells = cells.flatten().unique(sorted=True)
        cells = tap("probed_cells", cells, **tap_ctx)
        pids, _ = self.ivf.lookup(cells)
        pids = torch.unique_consecutive(pids.sort().values)
        return pids.to(torch.int32), S

    # -- stages 2/3 ---------------------------------------------------------------------------
    def prune(self, config, pids: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        # amax: the same maxima as max(dim=1).values without computing their indices (4.5x faster here)
        keep = S.amax(dim=1) >= config.centroid_score_threshold
        if not self.use_gpu:
            return extensions.filter_pids(pids, S.float(), self.codes, self.doclens, self.offsets, keep,
                                          int(config.ndocs))
        return self._prune_gpu(pids, S, keep, int(config.ndocs))

    def _approx_scores(self, pids: torch.Tensor, S: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        codes = extensions.segmented_lookup(self.codes, self.offsets, self.doclens, pids) if not self.use_gpu \
            else gather_rows(self.codes, self.offsets, self.doclens, pids)
        codes = codes.long()
        token_scores = S[codes]
        if keep is not None:
            token_scores = token_scores.masked_fill(~keep[codes].unsqueeze(1), EMPTY_MAX)
        per_token = reference._segment_max(token_scores.float(), self.doclens[pids.long()], EMPTY_MAX)
        return per_token.sum(-1)

    def _prune_gpu(self, pids, S, keep, ndocs):
        scores = self._approx_scores(pids, S, keep)
        if ndocs < pids.numel():
            pids = pids[scores.topk(ndocs).indices]
        scores = self._approx_scores(pids, S, None)
        if ndocs // 4 < pids.numel():
            pids = pids[scores.topk(ndocs // 4).indices]
        return pids

    # -- stage 4 ------------------------------------------------------------------------------
    def decompress(self, pids: torch.Tensor) -> torch.Tensor:
        if not self.use_gpu:
            D = extensions.decompress_residuals(pids, self.doclens, self.offsets, self.codes, self.residuals,
                                                self.centroids, self.bucket_weights, self.nbits)
        else:
            codes = gather_rows(self.codes, self.offsets, self.doclens, pids)
            residuals = gather_rows(self.residuals, self.offsets, self.doclens, pids)
            D = extensions.decompress_rows(codes, residuals, self.centroids, self.bucket_weights, self.nbits)
        return F.normalize(D, dim=-1)

    def exact_scores(self, pids: torch.Tensor, Q: torch.Tensor, tap_ctx: dict) -> torch.Tensor:
        D = tap("decompressed_embs", self.decompress(pids), **tap_ctx)
        Q = Q.squeeze(0).to(device=D.device, dtype=D.dtype)
        sims = D @ Q.T
        lengths = self.doclens[pids.long()]
        if not self.use_gpu:
            # Upstream's CPU reduction, as its own segmented_maxsim kernel does it: per-token maxima
            # floored at 0, then torch's sum over query tokens (colbert-ai's summation order, so scores
            # stay bit-equal); the kernel fuses the maxima into one pass (benchmarks/maxsim_speed.py).
            return extensions.segmented_maxsim(sims.float(), lengths)
        # GPU: no floor, as upstream's GPU path
        return reference._segment_max(sims.float(), lengths, EMPTY_MAX).sum(-1)

    # -- all stages ---------------------------------------------------------------------------
    def rank(self, config, Q: torch.Tensor, filter_fn=None, pids=None, tap_ctx: dict | None = None):
        """Q (1, L, dim) -> (pids list[int], scores list[float]), best first."""
        # the bounds a swapped search artifact's ids must lie within (colbert/tap/stages.py)
        tap_ctx = {**(tap_ctx or {}), "num_passages": self.num_passages, "num_partitions": self.centroids.size(0)}
        unset = [n for n in ("ncells", "centroid_score_threshold", "ndocs") if getattr(config, n) is None]
        if unset:
            raise ValueError(f"IndexScorer.rank: {', '.join(unset)} not set (Searcher.dense_search fills them "
                             "from the first k)")
        with torch.inference_mode():
            if pids is None:
                pids, S = self.retrieve(config, Q, tap_ctx)
            else:
                pids, S = self._given_pids(pids), None
            if filter_fn is not None:
                pids = self._check_filtered(filter_fn(pids), pids)
            pids = tap("candidate_pids", pids, **tap_ctx)
            if pids.numel() == 0:
                return [], []
            if S is not None:
                pids = tap("filtered_pids", self.prune(config, pids, S), **tap_ctx)
                if pids.numel() == 0:
                    return [], []
            scores = tap("exact_scores", self.exact_scores(pids, Q, tap_ctx), **tap_ctx)
            where = f"search of {getattr(self.index, 'path', 'the index')} (query {tap_ctx.get('qid', 0)})"
            check_scores_finite(scores, pids, where)
            scores, order = scores.sort(descending=True)
            pids = pids[order.to(pids.device)]
            pids = tap("ranked_pids", pids, **tap_ctx)
            scores = tap("ranked_scores", scores, **tap_ctx)
            return pids.tolist(), scores.tolist()

    def _given_pids(self, pids) -> torch.Tensor:
        out = torch.as_tensor(list(pids) if not isinstance(pids, torch.Tensor) else pids)
        if out.numel() == 0:
            return torch.zeros(0, dtype=torch.int32, device=self.device)
        if out.dim() != 1 or out.dtype not in (torch.int32, torch.int64, torch.int16, torch.uint8):
            raise ValueError(f"pids= must be a list or 1-D tensor of passage ids, got {out.dtype} {tuple(out.shape)}")
        self._check_range(out, "pids=")
        return out.to(device=self.device, dtype=torch.int32)

    def _check_filtered(self, out, before: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.dim() != 1 or out.dtype not in (torch.int32, torch.int64):
            got = f"{out.dtype} {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"filter_fn must return a 1-D int32/int64 tensor of pids (it was given one of "
                             f"{before.numel()}); got {got}")
        self._check_range(out, "filter_fn's result")
        return out.to(device=self.device, dtype=torch.int32)

    def _check_range(self, pids: torch.Tensor, what: str):
        if pids.numel() and (int(pids.min()) < 0 or int(pids.max()) >= self.num_passages):
            raise IndexError(f"{what}: passage ids must lie in [0, {self.num_passages}) for this index; got ids "
                             f"from {int(pids.min())} to {int(pids.max())}")

