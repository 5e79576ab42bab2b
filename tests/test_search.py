"""Searcher on a real 120-passage index: PLAID against exhaustive MaxSim, the API contract, bad input."""

from __future__ import annotations

import os

import pytest
import torch

from colbert.search.reference import EMPTY_MAX  # noqa: F401  (import proves the search package imports)

QUERIES = {
    11: "measurement of dielectric constant of liquids",
    12: "design of band pass filters",
    13: "microwave waveguide radiation",
    14: "electron beam tubes and their noise",
    15: "transistor amplifier circuits",
    16: "antenna arrays",
    17: "magnetic properties of thin films",
    18: "digital computers in design",
}


@pytest.fixture(scope="module")
def searcher(small_index, colbert_checkpoint):
    from colbert import Searcher

    index_path, _ = small_index
    return Searcher(index=index_path, checkpoint=colbert_checkpoint, verbose=0)


def exhaustive_scores(searcher, Q: torch.Tensor) -> torch.Tensor:
    """MaxSim of Q against every passage, decompressed with the codec's own (table) path, with the
    CPU path's floor at 0 per query token -> float32 (N,)."""
    from colbert.indexing.codecs.residual_codec import ResidualEmbeddings

    index = searcher.ranker.index
    D = index.codec.decompress(ResidualEmbeddings(index.codes, index.residuals))
    sims = D @ Q.squeeze(0).T
    out = []
    for start, n in zip(index.offsets[:-1].tolist(), index.doclens.tolist()):
        out.append(sims[start:start + n].max(0).values.clamp(min=0).sum() if n else torch.tensor(0.0))
    return torch.stack(out)


def test_plaid_scores_are_exact_maxsim_and_top_k_overlaps(searcher):
    overlaps = []
    for qid, text in QUERIES.items():
        pids, ranks, scores = searcher.search(text, k=10)
        assert len(pids) == 10 and ranks == list(range(1, 11))
        assert scores == sorted(scores, reverse=True)
        assert len(set(pids)) == len(pids)
        ref = exhaustive_scores(searcher, searcher.encode(text))
        torch.testing.assert_close(torch.tensor(scores), ref[pids], rtol=1e-5, atol=1e-5)
        best = set(ref.topk(10).indices.tolist())
        overlaps.append(len(best & set(pids)) / 10)
    # PLAID prunes approximately: most, not necessarily all, of the true top 10 survive
    assert sum(overlaps) / len(overlaps) >= 0.7, overlaps


def test_without_pruning_plaid_equals_exhaustive(small_index, colbert_checkpoint):
    from colbert import Searcher
    from colbert.infra import ColBERTConfig

    index_path, passages = small_index
    K = torch.load(os.path.join(index_path, "centroids.pt"), weights_only=True).size(0)
    config = ColBERTConfig(ncells=K, centroid_score_threshold=-10.0, ndocs=4 * len(passages))
    s = Searcher(index=index_path, checkpoint=colbert_checkpoint, config=config, verbose=0)
    for text in list(QUERIES.values())[:4]:
        pids, _, scores = s.search(text, k=20)
        ref = exhaustive_scores(s, s.encode(text))
        ref_scores, ref_pids = ref.sort(descending=True)
        torch.testing.assert_close(torch.tensor(scores), ref_scores[:20], rtol=1e-5, atol=1e-5)
        # ties aside, the same passages in the same order
        assert pids[:10] == ref_pids[:10].tolist()


def test_first_k_fixes_plaid_settings(small_index, colbert_checkpoint):
    from colbert import Searcher
    from colbert.infra import ColBERTConfig

    index_path, _ = small_index
    s = Searcher(index=index_path, checkpoint=colbert_checkpoint, verbose=0)
    assert (s.config.ncells, s.config.centroid_score_threshold, s.config.ndocs) == (None, None, None)
    s.search(QUERIES[11], k=50)
    assert (s.config.ncells, s.config.centroid_score_threshold, s.config.ndocs) == (2, 0.45, 1024)
    s.search(QUERIES[11], k=5)
    assert (s.config.ncells, s.config.centroid_score_threshold, s.config.ndocs) == (2, 0.45, 1024)
    # a value given in the config is kept; only the unset ones are filled
    s2 = Searcher(index=index_path, checkpoint=colbert_checkpoint, config=ColBERTConfig(ndocs=64), verbose=0)
    s2.search(QUERIES[11], k=500)
    assert (s2.config.ncells, s2.config.centroid_score_threshold, s2.config.ndocs) == (4, 0.4, 64)


def test_search_all_forms_and_ranking(searcher, tmp_path):
    ranking = searcher.search_all(QUERIES, k=5)
    assert list(ranking.data) == list(QUERIES)
    for qid, text in QUERIES.items():
        # one query alone vs all in one encoder batch: equal up to batch-size rounding in the encoder
        pids, ranks, scores = searcher.search(text, k=5)
        assert [x[:2] for x in ranking.data[qid]] == list(zip(pids, ranks))
        torch.testing.assert_close(torch.tensor([x[2] for x in ranking.data[qid]]), torch.tensor(scores),
                                   rtol=1e-5, atol=1e-5)
    flat = ranking.flat()
    assert flat == ranking.flat_ranking == ranking.tolist()
    assert flat[0][:3] == (11, ranking.data[11][0][0], 1) and len(flat) == 5 * len(QUERIES)

    tsv = tmp_path / "q.tsv"
    tsv.write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    assert searcher.search_all(str(tsv), k=5).data == ranking.data
    as_list = searcher.search_all(list(QUERIES.values()), k=5)
    assert list(as_list.data) == list(range(len(QUERIES)))
    assert as_list.data[0] == ranking.data[11]


def test_ranking_save_roundtrip(searcher, tmp_path):
    import json

    from colbert.infra import Run, RunConfig
    from colbert.search.ranking import Ranking

    ranking = searcher.search_all(QUERIES, k=3)
    path = ranking.save(str(tmp_path / "out" / "ranking.tsv"))
    lines = open(path).read().splitlines()
    assert len(lines) == 3 * len(QUERIES)
    qid, pid, rank, score = lines[0].split("\t")
    assert (int(qid), int(pid), int(rank), float(score)) == ranking.flat()[0]
    meta = json.load(open(path + ".meta"))
    assert meta["provenance"]["source"] == "Searcher::search_all" and meta["provenance"]["k"] == 3
    assert "hostname" in meta["metadata"]
    back = Ranking(path=path)
    assert back.tolist() == [(q, p, r, float(str(s))) for q, p, r, s in ranking.tolist()]
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".tmp")]  # atomic writes leave no temp
    # a relative name goes under Run().path_, as upstream's Run().open does
    with Run().context(RunConfig(root=str(tmp_path / "runs"), experiment="e", name="n")):
        rel = ranking.save("rel.tsv")
    assert rel.startswith(str(tmp_path / "runs" / "e")) and os.path.isfile(rel)


def test_pids_and_filter_fn(searcher):
    text = QUERIES[12]
    subset = [3, 7, 50, 99, 100]
    pids, ranks, scores = searcher.search(text, k=10, pids=subset)
    assert sorted(pids) == subset and ranks == [1, 2, 3, 4, 5]
    ref = exhaustive_scores(searcher, searcher.encode(text))
    torch.testing.assert_close(torch.tensor(scores), ref[pids], rtol=1e-5, atol=1e-5)

    allowed = torch.arange(0, 120, 2)
    pids, _, _ = searcher.search(text, k=10, filter_fn=lambda p: p[torch.isin(p, allowed.to(p.dtype))])
    assert pids and all(p % 2 == 0 for p in pids)
    assert searcher.search(text, k=10, filter_fn=lambda p: p[:0]) == ([], [], [])
    with pytest.raises(ValueError, match="filter_fn must return"):
        searcher.search(text, k=10, filter_fn=lambda p: p.tolist())
    with pytest.raises(IndexError, match=r"\[0, 120\)"):
        searcher.search(text, k=10, pids=[5, 120])


@pytest.mark.parametrize("k", [0, -3, 2.5, True, "10"])
def test_bad_k(searcher, k):
    with pytest.raises(ValueError, match="k must be"):
        searcher.search(QUERIES[11], k=k)
    with pytest.raises(ValueError, match="k must be"):
        searcher.search_all(QUERIES, k=k)


@pytest.mark.parametrize("text", ["", "   \t"])
def test_empty_query(searcher, text):
    with pytest.raises(ValueError, match="empty"):
        searcher.search(text)
    with pytest.raises(ValueError, match="query 1 is empty"):
        searcher.search_all(["fine", text])


def test_k_larger_than_collection_returns_at_most_n(small_index, colbert_checkpoint):
    from colbert import Searcher
    from colbert.infra import ColBERTConfig

    index_path, passages = small_index
    s = Searcher(index=index_path, checkpoint=colbert_checkpoint, verbose=0,
                 config=ColBERTConfig(ncells=4096, centroid_score_threshold=-10.0, ndocs=100_000))
    pids, ranks, scores = s.search(QUERIES[13], k=10_000)
    assert len(pids) == len(set(pids)) == len(scores) == len(ranks) <= len(passages)
    assert len(pids) == len(passages)  # nothing pruned: every passage is a candidate of some cell


def test_long_query_is_truncated_to_query_maxlen(searcher):
    long = " ".join(["microwave waveguide"] * 200)
    Q = searcher.encode(long)
    assert Q.shape == (1, searcher.config.query_maxlen, 96)
    pids, _, _ = searcher.search(long, k=5)
    assert len(pids) == 5
    # tokens past query_maxlen are dropped, so a longer tail changes nothing
    assert torch.equal(Q, searcher.encode(long + " completely different words at the end"))


def test_index_resolution_through_run_context(small_index, colbert_checkpoint):
    from colbert import Searcher
    from colbert.infra import Run, RunConfig

    index_path, _ = small_index
    root = os.path.dirname(os.path.dirname(os.path.dirname(index_path)))  # <root>/tests/indexes/test
    with Run().context(RunConfig(root=root, experiment="tests")):
        s = Searcher(index="test", checkpoint=colbert_checkpoint, verbose=0)
    assert os.path.samefile(s.index, index_path)
    s2 = Searcher(index="test", index_root=os.path.dirname(index_path), verbose=0)  # checkpoint from metadata
    assert os.path.samefile(s2.index, index_path) and s2.config.checkpoint == colbert_checkpoint
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Searcher(index="nope", index_root=str(os.path.dirname(index_path)), checkpoint=colbert_checkpoint)


def test_same_ranking_with_pure_torch_kernels(searcher, monkeypatch):
    from colbert.search import extensions

    compiled = searcher.search_all(QUERIES, k=10)
    monkeypatch.setenv("COLBERT_EXTENSIONS", "off")
    extensions._reset()
    try:
        fallback = searcher.search_all(QUERIES, k=10)
    finally:
        monkeypatch.delenv("COLBERT_EXTENSIONS")
        extensions._reset()
    for qid in QUERIES:
        a, b = compiled.data[qid], fallback.data[qid]
        assert [x[0] for x in a] == [x[0] for x in b]
        torch.testing.assert_close(torch.tensor([x[2] for x in a]), torch.tensor([x[2] for x in b]),
                                   rtol=1e-6, atol=1e-6)


def test_gpu_algorithm_agrees_with_cpu_path(small_index, searcher):
    """Upstream's GPU algorithm (float16 centroids/embeddings, no floor, topk pruning), run on CPU
    tensors: no GPU here, but its logic is checked against the CPU path on the same index."""
    from colbert.search.index_scorer import IndexScorer

    searcher.search(QUERIES[11], k=10)  # fixes the PLAID settings, as for any first search
    gpu_algo = IndexScorer(searcher.ranker.index, use_gpu=True, device="cpu")
    assert gpu_algo.centroids.dtype == torch.float16
    Q = searcher.encode(list(QUERIES.values()))
    overlap = []
    for i in range(len(QUERIES)):
        cpu_pids, cpu_scores = searcher.ranker.rank(searcher.config, Q[i:i + 1])
        gpu_pids, gpu_scores = gpu_algo.rank(searcher.config, Q[i:i + 1])
        assert len(gpu_pids) == len(set(gpu_pids)) and gpu_scores == sorted(gpu_scores, reverse=True)
        common = set(cpu_pids[:10]) & set(gpu_pids[:10])
        overlap.append(len(common) / 10)
        cpu_of, gpu_of = dict(zip(cpu_pids, cpu_scores)), dict(zip(gpu_pids, gpu_scores))
        for pid in common:  # float16 embeddings: scores agree to float16 precision
            assert abs(cpu_of[pid] - gpu_of[pid]) <= 2e-3 * abs(cpu_of[pid]) + 1e-2, (pid, cpu_of[pid], gpu_of[pid])
    assert sum(overlap) / len(overlap) >= 0.8, overlap
