"""End-to-end indexing on small real data: file set, formats, determinism, encode-once reuse,
inputs upstream accepts, interrupted runs, nranks > 1."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, build_index, vaswani_passages
from parity.index_diff import diff_indexes

EXPECTED = {"plan.json", "metadata.json", "centroids.pt", "avg_residual.pt", "buckets.pt", "ivf.pid.pt",
            "0.codes.pt", "0.residuals.pt", "doclens.0.json", "0.metadata.json"}


def load(path, name):
    return torch.load(os.path.join(path, name), map_location="cpu", weights_only=True)


def test_index_files_types_and_consistency(small_index):
    path, passages = small_index
    assert set(os.listdir(path)) == EXPECTED
    meta = json.load(open(os.path.join(path, "metadata.json")))
    plan = json.load(open(os.path.join(path, "plan.json")))
    K, E = meta["num_partitions"], meta["num_embeddings"]
    assert plan["num_partitions"] == K and K & (K - 1) == 0
    centroids = load(path, "centroids.pt")
    assert centroids.dtype == torch.float16 and centroids.shape == (K, 96)
    cutoffs, weights = load(path, "buckets.pt")
    assert cutoffs.dtype == torch.float32 and cutoffs.shape == (3,) and weights.shape == (4,)
    assert bool((cutoffs[1:] >= cutoffs[:-1]).all())
    avg = load(path, "avg_residual.pt")
    assert avg.dtype == torch.float32 and avg.dim() == 0
    codes, residuals = load(path, "0.codes.pt"), load(path, "0.residuals.pt")
    assert codes.dtype == torch.int32 and codes.shape == (E,) and int(codes.max()) < K
    assert residuals.dtype == torch.uint8 and residuals.shape == (E, 96 * 2 // 8)
    doclens = json.load(open(os.path.join(path, "doclens.0.json")))
    assert len(doclens) == len(passages) and sum(doclens) == E
    chunk = json.load(open(os.path.join(path, "0.metadata.json")))
    assert chunk == {"passage_offset": 0, "num_passages": len(passages), "num_embeddings": E, "embedding_offset": 0}
    ivf, ivf_lengths = load(path, "ivf.pid.pt")
    assert ivf.dtype == torch.int32 and ivf_lengths.dtype == torch.int64 and ivf_lengths.shape == (K,)
    # Every passage holding an embedding of centroid c is listed under c, and nothing else is.
    emb2pid = torch.repeat_interleave(torch.arange(len(doclens)), torch.tensor(doclens))
    offset = 0
    for c in range(K):
        n = int(ivf_lengths[c])
        expected = torch.unique(emb2pid[codes.long() == c])
        assert torch.equal(ivf[offset:offset + n].long(), expected)
        offset += n
    assert meta["avg_doclen"] == E / len(passages)


def test_same_run_twice_is_identical_and_encode_once_changes_nothing(colbert_checkpoint, small_passages,
                                                                    small_index, tmp_path, monkeypatch):
    first, _ = small_index
    again = build_index(colbert_checkpoint, small_passages, tmp_path / "again")
    assert diff_indexes(first, again) == []
    monkeypatch.setenv("COLBERT_ENCODE_ONCE", "0")  # encode every passage twice, as upstream does
    twice = build_index(colbert_checkpoint, small_passages, tmp_path / "twice")
    assert diff_indexes(first, twice) == []


def test_encode_once_reuses_single_rows_when_only_part_is_sampled(colbert_checkpoint, tmp_path, monkeypatch,
                                                                   caplog):
    # Above N = 30,720 colbert-ai samples part of the collection, so sample and chunk groups hold other
    # passages; a smaller sample makes that so at 301 passages (176 sampled). index_bsize 4: groups of
    # 200, and the last chunk group ends in a batch of one row, which must be encoded as upstream does.
    import colbert.indexing.sampling as sampling

    monkeypatch.setattr(sampling, "TYPICAL_DOCLEN", 0.4)
    passages = vaswani_passages(301)
    with caplog.at_level(logging.INFO, logger="colbert.indexing.collection_indexer"):
        once = build_index(colbert_checkpoint, passages, tmp_path / "once", index_bsize=4)
    reused = [int(m.group(1).replace(",", "")) for r in caplog.records
              if (m := re.search(r"Chunk \d+: ([\d,]+) of", r.getMessage()))]
    assert reused and 0 < sum(reused) <= 176
    monkeypatch.setenv("COLBERT_ENCODE_ONCE", "0")
    twice = build_index(colbert_checkpoint, passages, tmp_path / "twice", index_bsize=4)
    assert diff_indexes(once, twice) == []


def test_row_reuse_gives_a_chunk_the_embeddings_it_would_encode(colbert_checkpoint):
    # The encoder itself, float16 rows compared bit for bit: an index can come out equal even when
    # embeddings differ in their last bits (2-bit residuals), so the index test alone would miss that.
    from colbert.indexing.collection_encoder import CollectionEncoder
    from colbert.infra import ColBERTConfig
    from colbert.modeling.checkpoint import Checkpoint

    config = ColBERTConfig(checkpoint=colbert_checkpoint, doc_maxlen=128, dim=96, index_bsize=4)
    ckpt = Checkpoint(colbert_checkpoint, colbert_config=config)
    passages = vaswani_passages(301)  # chunk groups of 200 and 101 passages: widths 128 and 102
    sampled = [p for p in range(301) if p % 7 in (0, 1, 2, 4)]  # one group, holding the 155-token passage
    want, want_doclens = CollectionEncoder(config, ckpt).encode_passages(passages, site="chunk0", pids=range(301))
    encoder = CollectionEncoder(config, ckpt)
    encoder.enable_reuse(rows=True)
    sample, doclens = encoder.encode_passages([passages[p] for p in sampled], site="sample", pids=sampled)
    encoder.keep_sample_for_reuse(sampled, doclens, sample.half())
    got, got_doclens = encoder.encode_passages(passages, site="chunk0", pids=range(301))
    assert got_doclens == want_doclens and got.dtype == torch.float16 and torch.equal(got, want)
    in_first_group = sum(p < 200 for p in sampled)
    assert encoder.reused == in_first_group < len(sampled)  # the second group's width differs: encoded


def test_group_boundaries_and_multiple_groups(colbert_checkpoint, tmp_path):
    # index_bsize 2 -> groups of 100 passages: 250 passages make 3 groups with different widths.
    passages = vaswani_passages(250)
    a = build_index(colbert_checkpoint, passages, tmp_path / "a", index_bsize=2)
    b = build_index(colbert_checkpoint, passages, tmp_path / "b", index_bsize=16)
    assert json.load(open(os.path.join(a, "doclens.0.json"))) == json.load(open(os.path.join(b, "doclens.0.json")))
    assert os.path.exists(os.path.join(a, "metadata.json"))


def test_title_column_and_empty_passage_accepted(colbert_checkpoint, tmp_path):
    passages = vaswani_passages(60)
    tsv = tmp_path / "c.tsv"
    lines = [f"{i}\t{p}\tTitle {i}" for i, p in enumerate(passages)] + [f"{len(passages)}\t"]
    tsv.write_text("\n".join(lines) + "\n")
    path = build_index(colbert_checkpoint, str(tsv), tmp_path / "root")
    doclens = json.load(open(os.path.join(path, "doclens.0.json")))
    assert len(doclens) == 61 and doclens[-1] == 3  # [CLS] [D] [SEP]
    cfg = json.load(open(os.path.join(path, "metadata.json")))["config"]
    assert cfg["collection"] == str(tsv)


def test_existing_index_without_overwrite_is_refused_and_kept(small_index, colbert_checkpoint):
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    path, passages = small_index
    before = {n: os.path.getmtime(os.path.join(path, n)) for n in os.listdir(path)}
    root = os.path.dirname(os.path.dirname(os.path.dirname(path)))
    with Run().context(RunConfig(experiment="tests", root=root)):
        indexer = Indexer(checkpoint=colbert_checkpoint, config=ColBERTConfig(dim=96))
        with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
            indexer.index(name=os.path.basename(path), collection=passages)
    assert {n: os.path.getmtime(os.path.join(path, n)) for n in os.listdir(path)} == before


def test_interrupted_run_leaves_no_metadata(colbert_checkpoint, tmp_path, monkeypatch):
    import colbert.indexing.collection_indexer as ci

    def boom(*a, **k):
        raise KeyboardInterrupt("simulated interruption during finalize")

    monkeypatch.setattr(ci, "build_ivf", boom)
    with pytest.raises(KeyboardInterrupt):
        build_index(colbert_checkpoint, vaswani_passages(60), tmp_path, name="interrupted")
    path = tmp_path / "tests" / "indexes" / "interrupted"
    assert (path / "plan.json").exists() and not (path / "metadata.json").exists()
    assert not [n for n in os.listdir(path) if n.startswith(".tmp")]


def test_script_without_main_guard_runs(colbert_checkpoint, tmp_path):
    script = tmp_path / "index.py"
    script.write_text(f"""
from colbert import Indexer
from colbert.infra import Run, RunConfig, ColBERTConfig
passages = [l.split('\\t')[1] for l in open({os.path.join(REPO, 'colbert', 'data', 'vaswani', 'collection.tsv')!r})][:40]
with Run().context(RunConfig(nranks=1, experiment="demo")):
    config = ColBERTConfig(doc_maxlen=64, nbits=1, dim=96, kmeans_niters=2, checkpoint={colbert_checkpoint!r})
    print("INDEX", Indexer(checkpoint={colbert_checkpoint!r}, config=config).index(name="x", collection=passages))
""")
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "experiments" / "demo" / "indexes" / "x" / "metadata.json").exists()


@pytest.mark.slow
def test_two_ranks_on_cpu(colbert_checkpoint, tmp_path):
    passages = vaswani_passages(300)
    path = build_index(colbert_checkpoint, passages, tmp_path, name="ranks", nranks=2)
    meta = json.load(open(os.path.join(path, "metadata.json")))
    assert meta["num_chunks"] == 2 and meta["config"]["nranks"] == 2
    doclens = json.load(open(os.path.join(path, "doclens.0.json"))) + json.load(
        open(os.path.join(path, "doclens.1.json")))
    assert len(doclens) == 300 and sum(doclens) == meta["num_embeddings"]
    one = build_index(colbert_checkpoint, passages, tmp_path, name="one", nranks=1)
    assert doclens == json.load(open(os.path.join(one, "doclens.0.json")))  # encoding does not depend on ranks
    assert not [n for n in os.listdir(path) if n.startswith("sample.")]
    ivf, lengths = torch.load(os.path.join(path, "ivf.pid.pt"), weights_only=True)
    assert int(lengths.sum()) <= ivf.numel() and set(ivf[:int(lengths.sum())].tolist()) == set(range(300))

    # searchable: both ranks' chunks are found, each passage by its own text
    from colbert import Searcher

    searcher = Searcher(index=path, checkpoint=colbert_checkpoint)
    for pid in (3, 150, 297):
        pids, _, _ = searcher.search(passages[pid], k=10)
        assert pid in pids, (pid, pids)


def test_torch_kmeans_backend_is_recorded(colbert_checkpoint, tmp_path):
    path = build_index(colbert_checkpoint, vaswani_passages(80), tmp_path, kmeans_backend="torch")
    cfg = json.load(open(os.path.join(path, "plan.json")))["config"]
    assert cfg["kmeans_backend"] == "torch"
    assert os.path.exists(os.path.join(path, "metadata.json"))
