from __future__ import annotations

import torch

from colbert.modeling.checkpoint_files import load_tokenizer
from colbert.modeling.tokenization.utils import device, insert_prefix_token, sort_by_length, split_into_batches
from colbert.tap import tap


class DocTokenizer:
    def __init__(self, config, raw_tokenizer=None):
        self.tok = raw_tokenizer if raw_tokenizer is not None else load_tokenizer(config.checkpoint)
        self.config = config
        self.doc_maxlen = config.doc_maxlen
        self.D_marker_token, self.D_marker_token_id = config.doc_token, self.tok.convert_tokens_to_ids(
            config.doc_token_id)
        self.cls_token, self.cls_token_id = self.tok.cls_token, self.tok.cls_token_id
        self.sep_token, self.sep_token_id = self.tok.sep_token, self.tok.sep_token_id

    def tokenize(self, batch_text, add_special_tokens=False):
        _check_texts(batch_text)
        tokens = [self.tok.tokenize(x, add_special_tokens=False) for x in batch_text]
        if not add_special_tokens:
            return tokens
        prefix, suffix = [self.cls_token, self.D_marker_token], [self.sep_token]
        return [prefix + lst + suffix for lst in tokens]

    def encode(self, batch_text, add_special_tokens=False):
        _check_texts(batch_text)
        ids = self.tok(batch_text, add_special_tokens=False).to(device())["input_ids"]
        if not add_special_tokens:
            return ids
        prefix, suffix = [self.cls_token_id, self.D_marker_token_id], [self.sep_token_id]
        return [prefix + lst + suffix for lst in ids]

    def tensorize(self, batch_text, bsize=None, tap_ctx=None, exact_budget: int | None = None):
        """Pads the whole call to its longest text (width W), inserts [D]; with bsize also sorts by
        length and returns (batches, reverse_indices). Every batch of one call has width W.

        With `exact_budget` (encode mode "exact", colbert/indexing/encode_mode.py) nothing is padded:
        batches hold passages of one length each, up to that many tokens, and reverse_indices[i] is the
        row of passage i in the concatenated batches."""
        _check_texts(batch_text)
        if exact_budget is not None:
            out = self._tensorize_exact(list(batch_text), exact_budget)
            if tap_ctx is not None:
                out = tap("tensorize_output", out, vocab_size=len(self.tok), **tap_ctx)
            return out
        obj = self.tok(list(batch_text), padding="longest", truncation="longest_first", return_tensors="pt",
                       max_length=(self.doc_maxlen - 1)).to(device())
        ids = insert_prefix_token(obj["input_ids"], self.D_marker_token_id)
        mask = insert_prefix_token(obj["attention_mask"], 1)
        if not bsize:
            return ids, mask
        ids, mask, reverse_indices = sort_by_length(ids, mask, bsize)
        out = (split_into_batches(ids, mask, bsize), reverse_indices)
        if tap_ctx is not None:
            # vocab_size bounds the ids a swapped tokenization may hold (the embedding table's rows)
            out = tap("tensorize_output", out, vocab_size=len(self.tok), **tap_ctx)
        return out


    def _tensorize_exact(self, texts: list[str], budget: int):
        from colbert.indexing.encode_mode import exact_batches

        ids = self.tok(texts, padding=False, truncation="longest_first", max_length=(self.doc_maxlen - 1),
                       add_special_tokens=True)["input_ids"]
        batches, reverse, row = [], [0] * len(texts), 0
        for members in exact_batches([len(x) for x in ids], budget):
            t = insert_prefix_token(torch.tensor([ids[i] for i in members], dtype=torch.long),
                                    self.D_marker_token_id).to(device())
            batches.append((t, torch.ones_like(t)))
            first = dict.fromkeys(members)  # a filled-up batch holds copies: each passage's first row
            for k, i in enumerate(members):
                if first[i] is None:
                    first[i] = reverse[i] = row + k
            row += len(members)
        return batches, torch.tensor(reverse, dtype=torch.long)


def _check_texts(batch_text):
    if isinstance(batch_text, str):
        raise TypeError("expected a list of passages (str), got a single str")
    for i, x in enumerate(batch_text):
        if not isinstance(x, str):
            raise TypeError(f"passage {i} is a {type(x).__name__}, expected str: {x!r:.80}")
