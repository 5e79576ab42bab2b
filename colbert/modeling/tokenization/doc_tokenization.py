from __future__ import annotations

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

    def tensorize(self, batch_text, bsize=None, tap_ctx=None):
        """Pads the whole call to its longest text (width W), inserts [D]; with bsize also sorts by
        length and returns (batches, reverse_indices). Every batch of one call has width W."""
        _check_texts(batch_text)
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


def _check_texts(batch_text):
    if isinstance(batch_text, str):
        raise TypeError("expected a list of passages (str), got a single str")
    for i, x in enumerate(batch_text):
        if not isinstance(x, str):
            raise TypeError(f"passage {i} is a {type(x).__name__}, expected str: {x!r:.80}")
