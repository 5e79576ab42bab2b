from __future__ import annotations

import torch

from colbert.modeling.checkpoint_files import load_tokenizer
from colbert.modeling.tokenization.utils import device, insert_prefix_token, split_into_batches


class QueryTokenizer:
    def __init__(self, config, verbose: int = 3, raw_tokenizer=None):
        self.tok = raw_tokenizer if raw_tokenizer is not None else load_tokenizer(config.checkpoint)
        self.config = config
        self.verbose = verbose
        self.query_maxlen = config.query_maxlen
        self.background_maxlen = 512 - self.query_maxlen + 1
        self.Q_marker_token, self.Q_marker_token_id = config.query_token, self.tok.convert_tokens_to_ids(
            config.query_token_id)
        self.cls_token, self.cls_token_id = self.tok.cls_token, self.tok.cls_token_id
        self.sep_token, self.sep_token_id = self.tok.sep_token, self.tok.sep_token_id
        self.mask_token, self.mask_token_id = self.tok.mask_token, self.tok.mask_token_id
        self.pad_token, self.pad_token_id = self.tok.pad_token, self.tok.pad_token_id
        self.used = False

    def tokenize(self, batch_text, add_special_tokens=False):
        tokens = [self.tok.tokenize(x, add_special_tokens=False) for x in batch_text]
        if not add_special_tokens:
            return tokens
        prefix, suffix = [self.cls_token, self.Q_marker_token], [self.sep_token]
        return [prefix + lst + suffix + [self.mask_token] * (self.query_maxlen - (len(lst) + 3)) for lst in tokens]

    def encode(self, batch_text, add_special_tokens=False):
        ids = self.tok(batch_text, add_special_tokens=False)["input_ids"]
        if not add_special_tokens:
            return ids
        prefix, suffix = [self.cls_token_id, self.Q_marker_token_id], [self.sep_token_id]
        return [prefix + lst + suffix + [self.mask_token_id] * (self.query_maxlen - (len(lst) + 3)) for lst in ids]

    def tensorize(self, batch_text, bsize=None, context=None, full_length_search=False):
        if isinstance(batch_text, str):
            raise TypeError("expected a list of queries (str), got a single str")
        batch_text = list(batch_text)
        for i, q in enumerate(batch_text):
            if not isinstance(q, str):
                raise TypeError(f"query {i} is a {type(q).__name__}, expected str")
        max_length = self.query_maxlen
        if full_length_search:
            if len(batch_text) != 1:
                raise ValueError("full_length_search needs exactly one query")
            n = len(self.tok(batch_text[0], add_special_tokens=False)["input_ids"])
            max_length = min(500, max(self.query_maxlen, n))
        obj = self.tok(batch_text, padding="max_length", truncation=True, return_tensors="pt",
                       max_length=(max_length - 1)).to(device())
        ids = insert_prefix_token(obj["input_ids"], self.Q_marker_token_id)
        mask = insert_prefix_token(obj["attention_mask"], 1)
        # Query augmentation: padding becomes [MASK], which the encoder sees (mask stays 0 there).
        ids[ids == self.pad_token_id] = self.mask_token_id
        if context is not None:
            if len(context) != len(batch_text):
                raise ValueError(f"context has {len(context)} entries for {len(batch_text)} queries")
            obj2 = self.tok(list(context), padding="longest", truncation=True, return_tensors="pt",
                            max_length=self.background_maxlen).to(device())
            ids = torch.cat((ids, obj2["input_ids"][:, 1:]), dim=-1)
            mask = torch.cat((mask, obj2["attention_mask"][:, 1:]), dim=-1)
        if self.config.attend_to_mask_tokens:
            mask[ids == self.mask_token_id] = 1
            assert mask.sum().item() == mask.size(0) * mask.size(1), mask
        if bsize:
            return split_into_batches(ids, mask, bsize)
        self.used = True
        return ids, mask
