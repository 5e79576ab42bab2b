"""With COLBERT_TAP unset, the tap points must not change a bit of the index.

The reference build has the tap code path removed: every module-level `tap` the indexing code
imported is replaced by an identity, `tap_wants` by False, and no tap session is opened.
"""

import contextlib
import importlib

import torch

from conftest import build_index
from index_diff import diff_indexes

TAPPED_MODULES = (
    "colbert.indexing.sampling", "colbert.indexing.kmeans", "colbert.indexing.ivf",
    "colbert.indexing.codecs.residual_stats", "colbert.indexing.codecs.residual_codec",
    "colbert.indexing.plan", "colbert.indexing.collection_indexer", "colbert.modeling.checkpoint",
    "colbert.modeling.tokenization.doc_tokenization",
)


def test_tap_off_index_equals_no_tap_build(colbert_checkpoint, small_passages, small_index, tmp_path,
                                           monkeypatch):
    monkeypatch.delenv("COLBERT_TAP", raising=False)
    calls = []

    def identity(stage, value, **ctx):
        calls.append(stage)
        return value

    for name in TAPPED_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "tap"):
            monkeypatch.setattr(module, "tap", identity)
        if hasattr(module, "tap_wants"):
            monkeypatch.setattr(module, "tap_wants", lambda *a, **k: False)
    ci = importlib.import_module("colbert.indexing.collection_indexer")
    monkeypatch.setattr(ci, "active_tap", lambda: None)
    monkeypatch.setattr(ci, "_tap_session", lambda config, index_path: contextlib.nullcontext())

    bare = build_index(colbert_checkpoint, small_passages, tmp_path)
    # The patch must really have replaced the tap points, or this compares the tapped code with itself.
    assert {"sample_pids", "centroids", "codes", "ivf"} <= set(calls)
    tapped, _ = small_index
    assert diff_indexes(tapped, bare) == []
    assert torch.equal(torch.load(f"{tapped}/0.codes.pt"), torch.load(f"{bare}/0.codes.pt"))
