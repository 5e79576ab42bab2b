"""Encodes passages in groups of index_bsize * 50 (one tokenize call, one padded width, per group);
in encode mode "exact" (colbert/indexing/encode_mode.py), each passage at its own length.

The output of a group depends only on that group's texts, so when the sample pass encodes a group
of contiguous pids that a chunk later encodes again as a group (every passage is sampled for
N <= 30,720), the chunk reuses the sample's result instead of running the encoder twice. The reuse
is exact: the sample's float32 output is rounded to float16 exactly as the chunk path rounds it.
In exact mode a passage's embeddings depend on its text alone, so every sampled passage is reused,
whatever N, by pid (`reuse_rows`, rows of the float16 sample the rank keeps anyway).
"""

from __future__ import annotations

import torch

from colbert.indexing.encode_mode import EXACT_TOKEN_BUDGET, is_exact

GROUP_FACTOR = 50


class CollectionEncoder:
    def __init__(self, config, checkpoint, progress=None):
        self.config = config
        self.checkpoint = checkpoint
        self.use_gpu = config.total_visible_gpus > 0
        self.progress = progress  # callable(n_passages) after each group, or None
        self.reuse = None  # {(first_pid, end_pid): (fp16 embs, doclens)}, filled by the sample pass
        self.sample = None  # this rank's float16 sample embeddings, handed from setup to train
        self.num_sample_embs = 0
        self.exact = is_exact(config)
        self.reuse_rows = None  # exact mode: {pid: (start, end)} rows of `reuse_embs`
        self.reuse_embs = None

    def enable_reuse(self):
        self.reuse = {}

    def group_size(self) -> int:
        return self.config.index_bsize * GROUP_FACTOR

    def keep_sample_for_reuse(self, pids: list[int], doclens: list[int], sample_fp16: torch.Tensor) -> None:
        """Exact mode: chunks take their sampled passages' rows from the float16 sample."""
        if self.reuse is None or not self.exact:
            return
        self.reuse_rows, start = {}, 0
        for pid, n in zip(pids, doclens):
            self.reuse_rows[pid] = (start, start + n)
            start += n
        self.reuse_embs = sample_fp16

    def encode_passages(self, passages: list[str], site: str = "chunk", pids: list[int] | None = None,
                        tap_active: bool = False):
        """(embs, doclens) of `passages`; `pids` (their pids) lets groups be cached or reused."""
        if len(passages) == 0:
            return None, None
        if self.exact:
            return self._encode_exact(passages, site, pids)
        embs, doclens = [], []
        G = self.group_size()
        with torch.inference_mode():
            for g, offset in enumerate(range(0, len(passages), G)):
                group = passages[offset:offset + G]
                key = _contiguous_range(pids, offset, len(group))
                cached = self.reuse.pop(key, None) if (self.reuse is not None and site != "sample" and key) else None
                if cached is not None:
                    embs_, doclens_ = cached
                else:
                    embs_, doclens_ = self.checkpoint.docFromText(
                        group, bsize=self.config.index_bsize, keep_dims="flatten", showprogress=False,
                        pool_factor=self.config.pool_factor, clustering_mode=self.config.clustering_mode,
                        protected_tokens=self.config.protected_tokens,
                        tap_ctx={"site": site, "group": g, "rank": self.config.rank, "nranks": self.config.nranks})
                    if self.reuse is not None and site == "sample" and key:
                        self.reuse[key] = (embs_.half(), doclens_)
                # Chunks are compressed from float16 anyway; rounding per group equals rounding the
                # concatenation, and halves peak memory.
                embs.append(embs_.half() if site != "sample" else embs_)
                doclens.extend(doclens_)
                if self.progress:
                    self.progress(len(group))
        return torch.cat(embs), doclens

    def _encode_exact(self, passages: list[str], site: str, pids):
        rows = self.reuse_rows if site != "sample" else None
        pids = list(pids) if pids is not None else None
        todo = [i for i in range(len(passages)) if not rows or pids is None or pids[i] not in rows]
        fresh, fresh_doclens = None, []
        with torch.inference_mode():
            if todo:
                fresh, fresh_doclens = self.checkpoint.docFromText(
                    [passages[i] for i in todo], bsize=self.config.index_bsize, keep_dims="flatten",
                    showprogress=False, pool_factor=self.config.pool_factor,
                    clustering_mode=self.config.clustering_mode, protected_tokens=self.config.protected_tokens,
                    tap_ctx={"site": site, "group": 0, "rank": self.config.rank, "nranks": self.config.nranks},
                    exact_budget=EXACT_TOKEN_BUDGET, on_batch=self.progress)
                if site != "sample":
                    fresh = fresh.half()
            if len(todo) == len(passages):
                embs, doclens = fresh, fresh_doclens
            else:
                fresh_rows, start = {}, 0
                for i, n in zip(todo, fresh_doclens):
                    fresh_rows[i] = (start, start + n)
                    start += n
                parts, doclens = [], []
                for i in range(len(passages)):
                    source, (a, b) = (fresh, fresh_rows[i]) if i in fresh_rows else (self.reuse_embs, rows[pids[i]])
                    parts.append(source[a:b])
                    doclens.append(b - a)
                embs = torch.cat(parts)
        if self.progress and len(todo) < len(passages):
            self.progress(len(passages) - len(todo))  # reused from the sample
        return embs, doclens


def _contiguous_range(pids, offset, n):
    if pids is None or n == 0:
        return None
    first, last = pids[offset], pids[offset + n - 1]
    return (first, last + 1) if last - first + 1 == n else None
