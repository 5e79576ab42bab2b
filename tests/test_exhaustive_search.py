"""Exhaustive MaxSim search (colbert.search.exhaustive) against a MaxSim written out document by document."""

import json
import os
import shutil

import pytest
import torch

from colbert.indexing.codecs.residual_codec import ResidualCodec, ResidualEmbeddings
from colbert.search.exhaustive import ExhaustiveSearcher, IndexFormatError, resolve_index_path

QUERIES = ["measurement of dielectric constants", "transistor amplifier noise", "electron beam focusing",
           "magnetic properties of thin films"]


def decompressed_documents(index_path):
    meta = json.load(open(os.path.join(index_path, "metadata.json")))
    codec = ResidualCodec.load(index_path)
    docs = []
    for i in range(meta["num_chunks"]):
        doclens = json.load(open(os.path.join(index_path, f"doclens.{i}.json")))
        codes = torch.load(os.path.join(index_path, f"{i}.codes.pt"), weights_only=True)
        residuals = torch.load(os.path.join(index_path, f"{i}.residuals.pt"), weights_only=True)
        D = codec.decompress(ResidualEmbeddings(codes, residuals)).float()
        docs += list(D.split(doclens))
    return docs


def direct_maxsim(Q, docs, floor):
    out = torch.empty(Q.size(0), len(docs), dtype=torch.float64)
    for qi in range(Q.size(0)):
        for pid, D in enumerate(docs):
            per_token = (Q[qi].double() @ D.double().T).max(dim=1).values
            out[qi, pid] = (per_token.clamp(min=0) if floor else per_token).sum()
    return out


@pytest.fixture(scope="module")
def searcher(small_index):
    return ExhaustiveSearcher(small_index[0])


def test_scores_equal_direct_maxsim(searcher, small_index):
    index_path, passages = small_index
    docs = decompressed_documents(index_path)
    assert len(docs) == len(passages) == searcher.num_documents
    assert all(torch.allclose(d.norm(dim=1), torch.ones(len(d)), atol=1e-5) for d in docs)
    Q = searcher.encode(QUERIES)
    assert Q.shape == (len(QUERIES), searcher.config.query_maxlen, searcher.config.dim)
    expected = direct_maxsim(Q, docs, floor=True)
    got = searcher.score_all(Q)
    assert got.shape == expected.shape
    assert torch.allclose(got.double(), expected, atol=1e-4, rtol=0)

    # The textbook MaxSim (no floor at zero) is available too and equal to its direct form.
    raw = ExhaustiveSearcher(index_path, floor_at_zero=False, block_embeddings=97, max_scores=5000)
    assert torch.allclose(raw.score_all(Q).double(), direct_maxsim(Q, docs, floor=False), atol=1e-4, rtol=0)


def test_cpu_blocks_are_the_codecs_decompression_bit_for_bit(searcher):
    """The exhaustive search decompresses with the decompress_rows kernel on the CPU: same bits as the codec."""
    idx = searcher.index
    expected = searcher.codec.decompress(ResidualEmbeddings(idx.codes, idx.residuals)).float()
    got = torch.cat([D for _, _, D in searcher._blocks()])
    assert got.dtype == torch.float32 and torch.equal(got, expected)


def test_blocking_does_not_change_the_ranking(searcher, small_index):
    Q = searcher.encode(QUERIES)
    full = searcher.score_all(Q)
    k = 15
    # order the direct way: score descending, ties to the smaller pid
    expected_pids = [sorted(range(full.size(1)), key=lambda p: (-full[q, p].item(), p))[:k] for q in range(len(QUERIES))]
    for block, max_scores in [(1 << 16, 1 << 24), (1, 64), (53, 3000)]:
        s = ExhaustiveSearcher(small_index[0], block_embeddings=block, max_scores=max_scores)
        scores, pids = s.rank(Q, k)
        assert pids.tolist() == expected_pids
        assert torch.allclose(scores, full.gather(1, pids), atol=1e-5)
    _, pids = searcher.rank(Q, 10_000)
    assert pids.size(1) == full.size(1)  # k beyond the collection returns every document once
    assert sorted(pids[0].tolist()) == list(range(full.size(1)))


def test_search_and_search_all_shapes(searcher, tmp_path):
    pids, ranks, scores = searcher.search(QUERIES[0], k=5)
    assert ranks == [1, 2, 3, 4, 5] and len(pids) == 5 and scores == sorted(scores, reverse=True)
    ranking = searcher.search_all({"11": QUERIES[0], "12": QUERIES[1]}, k=5)
    assert list(ranking.data) == ["11", "12"]
    assert [e[0] for e in ranking.data["11"]] == pids
    assert [e[2] for e in ranking.data["11"]] == pytest.approx(scores, abs=1e-5)
    assert len(ranking.flat()) == 10
    from colbert.evaluation import load_ranking

    saved = load_ranking(ranking.save(str(tmp_path / "r.tsv")))
    assert [e[0] for e in saved["12"]] == [str(e[0]) for e in ranking.data["12"]]


def test_bad_index_errors(small_index, tmp_path):
    with pytest.raises(FileNotFoundError, match="no index"):
        resolve_index_path(str(tmp_path / "missing"))
    broken = tmp_path / "broken"
    shutil.copytree(small_index[0], broken)
    lens = json.load(open(broken / "doclens.0.json"))
    (broken / "doclens.0.json").write_text(json.dumps([lens[0] + 1] + lens[1:]))
    with pytest.raises(IndexFormatError, match="doclens sum to"):
        ExhaustiveSearcher(str(broken))
    (broken / "doclens.0.json").write_text("[1, 2,")
    with pytest.raises(IndexFormatError, match=r"doclens\.0\.json: expected JSON"):
        ExhaustiveSearcher(str(broken))
