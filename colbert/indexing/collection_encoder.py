"""Encodes passages in groups of index_bsize * 50 (one tokenize call, one padded width, per group);
in encode mode "exact" (colbert/indexing/encode_mode.py), each passage at its own length.

Encode-once: a chunk takes a passage's embeddings from the sample pass instead of encoding it again
whenever that gives the same bits.
- Groups (any device): the output of a group depends only on its texts, so a chunk group of the same
  contiguous pids as a sample group (every passage is sampled for N <= 30,720) reuses it whole.
- Rows (parity on the CPU, no tap that could replace an artifact): a row's bits depend on its text and
  the padded width of its group, not on the other rows of its batch, as long as both batches are of the
  size `rows_independent` accepts (the floor exact mode measured). So above N = 30,720, where sample and
  chunk groups no longer line up, a chunk still reuses every sampled passage whose two groups have the
  same width, and encodes the rest at that width, regrouped into full batches.
- Exact mode: a passage's embeddings depend on its text alone, so every sampled passage is reused.
Rows are reused from the float16 sample the rank keeps anyway (`reuse_rows` into `reuse_embs`); the
sample's float32 output rounds to float16 exactly as the chunk path rounds it.
"""

from __future__ import annotations

import torch

from colbert.indexing.encode_mode import EXACT_TOKEN_BUDGET, is_exact, rows_independent

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
        self.reuse_rows = None  # {pid: (start, end)} rows of `reuse_embs` (exact mode, parity row reuse)
        self.reuse_embs = None
        self.row_widths = None  # parity row reuse: {pid: padded width} of sampled passages it may reuse
        self.reused = 0  # passages chunks took from the sample instead of encoding them

    def enable_reuse(self, rows: bool = False):
        """Turn encode-once on; `rows`: parity may also reuse single rows (see the module docstring;
        the caller checks the device, the tap and pooling), which replaces whole-group reuse."""
        self.reuse = {}
        if rows and not self.exact:
            self.row_widths = {}

    def group_size(self) -> int:
        return self.config.index_bsize * GROUP_FACTOR

    def keep_sample_for_reuse(self, pids: list[int], doclens: list[int], sample_fp16: torch.Tensor) -> None:
        """Exact mode and parity row reuse: chunks take sampled passages' rows from the float16 sample."""
        if self.reuse is None or not (self.exact or self.row_widths is not None):
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
                group_pids = list(pids[offset:offset + len(group)]) if pids is not None else None
                if self.row_widths is not None and group_pids is not None and site != "sample":
                    embs_, doclens_ = self._encode_group_rows(group, group_pids)
                    embs.append(embs_)
                    doclens.extend(doclens_)
                    if self.progress:
                        self.progress(len(group))
                    continue
                key = _contiguous_range(pids, offset, len(group))
                cached = self.reuse.pop(key, None) if (self.reuse is not None and site != "sample" and key) else None
                if cached is not None:
                    embs_, doclens_ = cached
                    self.reused += len(group)
                else:
                    layout = {} if self.row_widths is not None and site == "sample" and group_pids else None
                    embs_, doclens_ = self.checkpoint.docFromText(
                        group, bsize=self.config.index_bsize, keep_dims="flatten", showprogress=False,
                        pool_factor=self.config.pool_factor, clustering_mode=self.config.clustering_mode,
                        protected_tokens=self.config.protected_tokens,
                        tap_ctx={"site": site, "group": g, "rank": self.config.rank, "nranks": self.config.nranks},
                        layout=layout)
                    if layout:
                        for pid, independent in zip(group_pids, layout["independent"]):
                            if independent:
                                self.row_widths[pid] = layout["width"]
                    elif self.reuse is not None and site == "sample" and key:
                        self.reuse[key] = (embs_.half(), doclens_)
                # Chunks are compressed from float16 anyway; rounding per group equals rounding the
                # concatenation, and halves peak memory.
                embs.append(embs_.half() if site != "sample" else embs_)
                doclens.extend(doclens_)
                if self.progress:
                    self.progress(len(group))
        return torch.cat(embs), doclens

    def _encode_group_rows(self, group: list[str], group_pids: list[int]):
        """One chunk group in parity: upstream's tokenization (so its width and batches), the sampled
        rows of equal width taken from the sample, the others encoded at that width (float16 out)."""
        bsize = self.config.index_bsize
        text_batches, reverse = self.checkpoint.doc_tokenizer.tensorize(group, bsize=bsize)
        width = text_batches[0][0].size(1)
        sizes = [ids.size(0) for ids, _ in text_batches]
        positions = reverse.tolist()  # passage i is row positions[i] of the sorted batches
        rows = self.reuse_rows or {}
        reuse = [pid in rows and self.row_widths.get(pid) == width and rows_independent(sizes[p // bsize], width)
                 for pid, p in zip(group_pids, positions)]
        fresh = sorted(p for p, r in zip(positions, reuse) if not r)
        out = {}
        if fresh:
            ids = torch.cat([b[0] for b in text_batches])
            mask = torch.cat([b[1] for b in text_batches])
            wanted = set(fresh)
            for batch in fresh_batches(fresh, sizes, bsize, width):
                D, keep = self.checkpoint.doc(ids[batch], mask[batch], keep_dims="return_mask")
                for k, p in enumerate(batch):
                    if p in wanted:
                        out[p] = D[k][keep[k].squeeze(-1)].half()
        parts = [self.reuse_embs[slice(*rows[pid])] if r else out[p]
                 for pid, p, r in zip(group_pids, positions, reuse)]
        self.reused += sum(reuse)
        return torch.cat(parts), [t.size(0) for t in parts]

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
        if site != "sample":
            self.reused += len(passages) - len(todo)
        if self.progress and len(todo) < len(passages):
            self.progress(len(passages) - len(todo))  # reused from the sample
        return embs, doclens


def fresh_batches(fresh: list[int], sizes: list[int], bsize: int, width: int) -> list[list[int]]:
    """Batches (rows of the sorted group, whose upstream batches have `sizes` rows each) that encode the
    sorted rows `fresh` at `width` with upstream's bits: a row of a batch `rows_independent` rejects is
    encoded in that very batch; the others in new batches of `bsize` rows, a short last one merged
    into the one before it or, alone and short, replaced by the upstream batches of its rows.

    >>> fresh_batches([0, 1, 5, 6, 7, 9], sizes=[4, 4, 2], bsize=4, width=64)
    [[8, 9], [0, 1, 5, 6, 7]]
    >>> fresh_batches([0, 9], sizes=[4, 4, 2], bsize=4, width=64)
    [[8, 9], [0, 1, 2, 3]]
    >>> fresh_batches([1, 2], sizes=[4, 4], bsize=4, width=128)
    [[1, 2]]
    >>> fresh_batches([1], sizes=[4, 4], bsize=4, width=64)
    [[0, 1, 2, 3]]
    """
    own = sorted({p // bsize for p in fresh if not rows_independent(sizes[p // bsize], width)})
    loose = [p for p in fresh if rows_independent(sizes[p // bsize], width)]
    batches = [list(range(b * bsize, b * bsize + sizes[b])) for b in own]
    regrouped = [loose[o:o + bsize] for o in range(0, len(loose), bsize)]
    if regrouped and not rows_independent(len(regrouped[-1]), width):
        if len(regrouped) > 1:
            regrouped[-2].extend(regrouped.pop())
        else:
            regrouped = [list(range(b * bsize, b * bsize + sizes[b])) for b in sorted({p // bsize for p in loose})]
    return batches + regrouped


def _contiguous_range(pids, offset, n):
    if pids is None or n == 0:
        return None
    first, last = pids[offset], pids[offset + n - 1]
    return (first, last + 1) if last - first + 1 == n else None
