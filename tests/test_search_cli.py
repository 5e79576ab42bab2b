"""`colbert-tap search` on a real index, and PLAID's scores held against exhaustive MaxSim."""

import pytest
import torch

from colbert.cli import main as cli_main
from colbert.evaluation import load_ranking
from colbert.search.exhaustive import ExhaustiveSearcher

QUERIES = {"1": "measurement of dielectric constants of liquids", "2": "transistor amplifier noise figure",
           "3": "electron beam focusing in travelling wave tubes", "4": "magnetic properties of thin films"}


@pytest.fixture(scope="module")
def queries_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "queries.tsv"
    path.write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    return str(path)


def test_search_cli_writes_the_searchers_ranking(small_index, queries_file, tmp_path, capsys):
    from colbert.searcher import Searcher

    index_path, passages = small_index
    out = tmp_path / "ranking.tsv"
    assert cli_main(["search", "--index", index_path, "--queries", queries_file, "-k", "10", "--out", str(out),
                     "--no-progress"]) == 0
    assert "4 queries searched" in capsys.readouterr().out
    ranking = load_ranking(str(out))
    assert list(ranking) == list(QUERIES)

    searcher = Searcher(index=index_path, verbose=0)
    for qid, text in QUERIES.items():
        pids, ranks, scores = searcher.search(text, k=10)
        assert [(int(p), r) for p, r, _ in ranking[qid]] == list(zip(pids, ranks))
        assert [s for _, _, s in ranking[qid]] == pytest.approx(scores, rel=1e-6)
        assert all(0 <= p < len(passages) for p in pids)

    # By name under --index-root gives the same file.
    import os

    out2 = tmp_path / "ranking2.tsv"
    assert cli_main(["search", "--index", os.path.basename(index_path), "--index-root", os.path.dirname(index_path),
                     "--queries", queries_file, "-k", "10", "--out", str(out2), "--no-progress"]) == 0
    assert out2.read_text() == out.read_text()


def test_search_cli_bad_input(small_index, queries_file, tmp_path, capsys):
    index_path, _ = small_index
    assert cli_main(["search", "--index", str(tmp_path / "nope"), "--queries", queries_file,
                     "--out", str(tmp_path / "o.tsv")]) == 2
    assert "no index" in capsys.readouterr().err
    bad = tmp_path / "bad_queries.tsv"
    bad.write_text("1\tfine\nno tab here\n")
    assert cli_main(["search", "--index", index_path, "--queries", str(bad), "--out", str(tmp_path / "o.tsv")]) == 2
    assert "bad_queries.tsv:2: expected qid<TAB>query text" in capsys.readouterr().err
    assert cli_main(["search", "--index", index_path, "--queries", queries_file, "-k", "0",
                     "--out", str(tmp_path / "o.tsv")]) == 2
    assert not (tmp_path / "o.tsv").exists()


def test_plaid_scores_equal_exhaustive_scores_and_never_beat_them(small_index, queries_file, tmp_path):
    from colbert.searcher import Searcher

    index_path, passages = small_index
    exhaustive = ExhaustiveSearcher(index_path)
    searcher = Searcher(index=index_path, verbose=0)
    Q = exhaustive.encode(list(QUERIES.values()))
    full = exhaustive.score_all(Q)
    for i, text in enumerate(QUERIES.values()):
        pids, _, scores = searcher.search(text, k=10)
        assert pids
        # PLAID's exact stage rescales nothing: the score of each pid it returns is that pid's exact MaxSim.
        assert torch.allclose(torch.tensor(scores), full[i, pids], atol=1e-4)
        # ... and no document it returns scores above exhaustive search's best.
        assert max(scores) <= full[i].max().item() + 1e-4

    out = tmp_path / "exhaustive.tsv"
    assert cli_main(["search", "--index", index_path, "--queries", queries_file, "-k", "5", "--out", str(out),
                     "--exhaustive", "--no-progress"]) == 0
    ranking = load_ranking(str(out))
    for i, qid in enumerate(QUERIES):
        expected = sorted(range(len(passages)), key=lambda p: (-full[i, p].item(), p))[:5]
        assert [int(p) for p, _, _ in ranking[qid]] == expected
