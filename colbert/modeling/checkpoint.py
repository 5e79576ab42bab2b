"""`Checkpoint`: the encoder plus its tokenizers, with upstream's batching semantics.

docFromText tokenizes the whole call at once (one padded width), sorts by length into batches of
`bsize`, encodes, and restores caller order with `reverse_indices`. The tap points of one encode
group (tensorize_output, batches, encoder_layers, D) are raised here when the caller passes tap_ctx.
"""

from __future__ import annotations

import contextlib

import torch
from tqdm import tqdm

from colbert.infra.validation import check_bsize
from colbert.modeling.colbert import ColBERT
from colbert.modeling.tokenization import DocTokenizer, QueryTokenizer
from colbert.tap import tap, tap_wants


def _autocast(use_gpu: bool):
    if use_gpu:
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


class Checkpoint(ColBERT):
    """A ColBERT encoder with its query and document tokenizers, batching as upstream does.

    Parameters
    ----------
    name
        A checkpoint folder or Hugging Face name (e.g. "colbert-ir/colbertv2.0").
    colbert_config
        A ColBERTConfig (query_maxlen, doc_maxlen, dim, ...); None: the checkpoint's own.
    verbose
        Upstream's verbosity, passed to the query tokenizer.

    Examples
    --------
    >>> from colbert.modeling.checkpoint import Checkpoint
    >>> ckpt = Checkpoint("colbert-ir/colbertv2.0")
    >>> Q = ckpt.queryFromText(["what is colbert?"])          # (1, query_maxlen, dim), normalised
    >>> D, doclens = ckpt.docFromText(["ColBERT is a late-interaction retriever."], bsize=32,
    ...                               keep_dims="flatten")       # (sum(doclens), dim), [n_tokens]
    >>> Q.shape  # doctest: +SKIP
    torch.Size([1, 32, 128])

    A `Checkpoint` can be handed to `Searcher(checkpoint=...)` so that the encoder loads once.
    """

    def __init__(self, name, colbert_config=None, verbose: int = 3):
        super().__init__(name, colbert_config)
        self.verbose = verbose
        self.query_tokenizer = QueryTokenizer(self.colbert_config, verbose=verbose, raw_tokenizer=self.raw_tokenizer)
        self.doc_tokenizer = DocTokenizer(self.colbert_config, raw_tokenizer=self.raw_tokenizer)

    def query(self, *args, to_cpu=False, **kw_args):
        with torch.no_grad(), _autocast(self.use_gpu):
            Q = super().query(*args, **kw_args)
            return Q.cpu() if to_cpu else Q

    def doc(self, *args, to_cpu=False, **kw_args):
        with torch.no_grad(), _autocast(self.use_gpu):
            D = super().doc(*args, **kw_args)
            if to_cpu:
                return (D[0].cpu(), *D[1:]) if isinstance(D, tuple) else D.cpu()
            return D

    def queryFromText(self, queries, bsize=None, to_cpu=False, context=None, full_length_search=False):
        check_bsize(bsize)
        if bsize:
            batches = self.query_tokenizer.tensorize(queries, context=context, bsize=bsize,
                                                     full_length_search=full_length_search)
            batches = [self.query(ids, mask, to_cpu=to_cpu) for ids, mask in batches]
            return torch.cat(batches)
        ids, mask = self.query_tokenizer.tensorize(queries, context=context, full_length_search=full_length_search)
        return self.query(ids, mask)

    def docFromText(self, docs, bsize=None, keep_dims=True, to_cpu=False, showprogress=False, return_tokens=False,
                    pool_factor=1, protected_tokens=0, clustering_mode: str = "hierarchical", tap_ctx=None,
                    exact_budget: int | None = None, on_batch=None, layout: dict | None = None):
        """Embeddings of `docs`. `exact_budget` (encode mode "exact"): no padding, batches of one length
        up to that many tokens, so each passage's output depends on its text alone; needs `bsize`
        (any value: it then does not change the batches) and keep_dims "flatten" or False. `on_batch(n)`
        is called after each batch with the number of passages it completed (for a progress bar).
        `layout` (a dict, padded batches only) receives the call's padded "width" and, per passage,
        whether its batch was one whose rows do not depend on each other ("independent",
        colbert/indexing/encode_mode.py `rows_independent`): what encode-once reuse needs to know."""
        assert keep_dims in [True, False, "flatten"]
        assert exact_budget is None or (bsize and keep_dims is not True), "exact batches: flatten or a list"
        check_bsize(bsize)  # a negative one would make no batches and fail far from here
        docs = list(docs)
        if not bsize:
            ids, mask = self.doc_tokenizer.tensorize(docs)
            return self.doc(ids, mask, keep_dims=keep_dims, to_cpu=to_cpu)

        text_batches, reverse_indices = self.doc_tokenizer.tensorize(docs, bsize=bsize, tap_ctx=tap_ctx,
                                                                     exact_budget=exact_budget)
        if layout is not None and exact_budget is None:
            from colbert.indexing.encode_mode import rows_independent

            width = text_batches[0][0].size(1) if text_batches else 0
            sizes = [ids_.size(0) for ids_, _ in text_batches]
            layout["width"] = width
            layout["independent"] = [rows_independent(sizes[p // bsize], width) for p in reverse_indices.tolist()]
        returned_text = []
        if return_tokens:
            returned_text = [text for batch in text_batches for text in batch[0]]
            returned_text = [returned_text[idx] for idx in reverse_indices.tolist()]
            returned_text = [returned_text]

        keep_dims_ = "return_mask" if keep_dims == "flatten" else keep_dims
        batches = []
        firsts, row = (set(reverse_indices.tolist()), 0) if on_batch else (None, 0)
        for b, (input_ids, attention_mask) in enumerate(tqdm(text_batches, disable=not showprogress)):
            layers = [] if tap_ctx is not None and tap_wants("encoder_layers", batch=b, **tap_ctx) else None
            batches.append(self.doc(input_ids, attention_mask, keep_dims=keep_dims_, to_cpu=to_cpu,
                                    layers_out=layers))
            for layer, value in enumerate(layers or ()):
                tap("encoder_layers", value, batch=b, layer=layer, **tap_ctx)
            if on_batch:  # rows that are a passage's first copy (exact mode fills short batches with copies)
                on_batch(sum(r in firsts for r in range(row, row + input_ids.size(0))))
                row += input_ids.size(0)
        if tap_ctx is not None:
            batches = tap("batches", batches, **tap_ctx)

        if keep_dims is True:
            D = _stack_3D_tensors(batches)
            return (D[reverse_indices], *returned_text)
        if keep_dims == "flatten":
            if len({D_.size(1) for D_, _ in batches}) > 1:  # exact mode: rows of different widths
                batches = list(batches)
                D, doclens = _flatten_ragged(batches, reverse_indices)
                D = D.cpu()
            else:
                D, mask = [], []
                for D_, mask_ in batches:
                    D.append(D_)
                    mask.append(mask_)
                D, mask = torch.cat(D)[reverse_indices], torch.cat(mask)[reverse_indices]
                doclens = mask.squeeze(-1).sum(-1).tolist()
                D = D.view(-1, self.colbert_config.dim)
                D = D[mask.bool().flatten()].cpu()
            if pool_factor > 1:
                from colbert.modeling.pooling import pool_embeddings_hierarchical

                D, doclens = pool_embeddings_hierarchical(D, doclens, pool_factor=pool_factor,
                                                          protected_tokens=protected_tokens,
                                                          clustering_mode=clustering_mode)
            if tap_ctx is not None:
                D = tap("D", D, **tap_ctx)
            return (D, doclens, *returned_text)

        assert keep_dims is False
        D = [d for batch in batches for d in batch]
        return ([D[idx] for idx in reverse_indices.tolist()], *returned_text)


def _flatten_ragged(batches: list, reverse_indices):
    """Batches of different widths (exact mode): each row's kept tokens, rows in caller order.

    Copies straight into the output and drops each batch from `batches` once copied: at most two copies
    of the embeddings (the batches and the output) instead of three (batches, per-row copies, their
    concatenation). Rows no caller index points to (exact mode's filler copies) are skipped."""
    lengths = [int(n) for _, mask_ in batches for n in mask_.squeeze(-1).sum(-1).tolist()]
    doclens = [lengths[j] for j in reverse_indices.tolist()]
    dest, start = [None] * len(lengths), 0
    for j, n in zip(reverse_indices.tolist(), doclens):
        dest[j] = start
        start += n
    first = batches[0][0]
    out = torch.empty(start, first.size(-1), dtype=first.dtype, device=first.device)
    j = 0
    for b in range(len(batches)):
        D_, mask_ = batches[b]
        batches[b] = None
        for d, m in zip(D_, mask_):
            if dest[j] is not None:
                out[dest[j]:dest[j] + lengths[j]] = d[m.squeeze(-1)]
            j += 1
    return out, doclens


def _stack_3D_tensors(groups):
    bsize = sum(x.size(0) for x in groups)
    maxlen = max(x.size(1) for x in groups)
    hdim = groups[0].size(2)
    output = torch.zeros(bsize, maxlen, hdim, device=groups[0].device, dtype=groups[0].dtype)
    offset = 0
    for x in groups:
        endpos = offset + x.size(0)
        output[offset:endpos, :x.size(1)] = x
        offset = endpos
    return output
