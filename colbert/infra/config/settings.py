"""Config fields, grouped as upstream groups them.

Field order matters: ColBERTConfig's exported JSON lists keys in dataclass field order, and
plan.json / metadata.json must match colbert-ai 0.2.22 key for key. Python's dataclass collects
fields from the most basic mixin first, so the class statement in config.py (RunSettings first,
TokenizerSettings last) yields Tokenizer, Search, Indexing, Training, Query, Doc, Resource, Run.
Every default is wrapped in DefaultVal so the config can tell "given by the caller" from "default".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DefaultVal:
    val: Any

    def __hash__(self):
        return hash(repr(self.val))


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # a broken CUDA install must not stop CPU use
        return 0


# Upstream freezes these at import time; so do we, since they land in the exported config.
_IMPORT_ROOT = os.path.join(os.getcwd(), "experiments")
_IMPORT_NAME = time.strftime("%Y-%m/%d/%H.%M.%S")
_TOTAL_VISIBLE_GPUS = _visible_gpus()


@dataclass
class RunSettings:
    overwrite: bool = DefaultVal(False)
    root: str = DefaultVal(_IMPORT_ROOT)
    experiment: str = DefaultVal("default")
    index_root: str = DefaultVal(None)
    name: str = DefaultVal(_IMPORT_NAME)
    rank: int = DefaultVal(0)
    nranks: int = DefaultVal(1)
    amp: bool = DefaultVal(True)
    gpus: Any = DefaultVal(_TOTAL_VISIBLE_GPUS)
    avoid_fork_if_possible: bool = DefaultVal(False)

    total_visible_gpus = _TOTAL_VISIBLE_GPUS  # class attribute, never exported

    @property
    def gpus_(self) -> list[int]:
        value = self.gpus
        if isinstance(value, int):
            value = list(range(value))
        if isinstance(value, str):
            value = value.split(",")
        value = sorted({int(x) for x in value})
        for g in value:
            if g >= self.total_visible_gpus:
                raise ValueError(f"gpus={self.gpus!r} names GPU {g}, but only {self.total_visible_gpus} are visible")
        return value

    @property
    def index_root_(self) -> str:
        return self.index_root or os.path.join(self.root, self.experiment, "indexes/")

    @property
    def script_name_(self) -> str:
        import __main__

        path = getattr(__main__, "__file__", None)
        if not path:
            return "none"
        return os.path.splitext(os.path.basename(path))[0]

    @property
    def path_(self) -> str:
        return os.path.join(self.root, self.experiment, self.script_name_, self.name)

    @property
    def device_(self):
        gpus = self.gpus_
        return gpus[self.rank % self.nranks] if gpus else None


@dataclass
class TokenizerSettings:
    query_token_id: str = DefaultVal("[unused0]")
    doc_token_id: str = DefaultVal("[unused1]")
    query_token: str = DefaultVal("[Q]")
    doc_token: str = DefaultVal("[D]")


@dataclass
class ResourceSettings:
    checkpoint: str = DefaultVal(None)
    triples: str = DefaultVal(None)
    collection: Any = DefaultVal(None)
    queries: str = DefaultVal(None)
    index_name: str = DefaultVal(None)


@dataclass
class DocSettings:
    dim: int = DefaultVal(128)
    doc_maxlen: int = DefaultVal(220)
    mask_punctuation: bool = DefaultVal(True)


@dataclass
class QuerySettings:
    query_maxlen: int = DefaultVal(32)
    attend_to_mask_tokens: bool = DefaultVal(False)
    interaction: str = DefaultVal("colbert")


@dataclass
class TrainingSettings:
    similarity: str = DefaultVal("cosine")
    bsize: int = DefaultVal(32)
    accumsteps: int = DefaultVal(1)
    lr: float = DefaultVal(3e-06)
    maxsteps: int = DefaultVal(500_000)
    save_every: int = DefaultVal(None)
    resume: bool = DefaultVal(False)
    warmup: int = DefaultVal(None)
    warmup_bert: int = DefaultVal(None)
    relu: bool = DefaultVal(False)
    nway: int = DefaultVal(2)
    use_ib_negatives: bool = DefaultVal(False)
    reranker: bool = DefaultVal(False)
    distillation_alpha: float = DefaultVal(1.0)
    ignore_scores: bool = DefaultVal(False)
    model_name: str = DefaultVal(None)


@dataclass
class IndexingSettings:
    index_path: str = DefaultVal(None)
    index_bsize: int = DefaultVal(64)
    nbits: int = DefaultVal(1)
    kmeans_niters: int = DefaultVal(4)
    resume: bool = DefaultVal(False)
    pool_factor: int = DefaultVal(1)
    clustering_mode: str = DefaultVal("hierarchical")
    protected_tokens: int = DefaultVal(0)
    # Ours, not upstream's: exported only when it differs from "faiss" so that default indexes keep
    # upstream's plan.json/metadata.json keys exactly. None means "env COLBERT_KMEANS, else faiss".
    kmeans_backend: str = DefaultVal(None)
    # Ours: "parity" (None: env COLBERT_ENCODE_MODE, else parity) pads like upstream; "exact" encodes
    # each passage at its own length (colbert/indexing/encode_mode.py). Exported only when "exact".
    encode_mode: str = DefaultVal(None)

    @property
    def index_path_(self) -> str:
        return self.index_path or os.path.join(self.index_root_, self.index_name)


@dataclass
class SearchSettings:
    ncells: int = DefaultVal(None)
    centroid_score_threshold: float = DefaultVal(None)
    ndocs: int = DefaultVal(None)
    load_index_with_mmap: bool = DefaultVal(False)
