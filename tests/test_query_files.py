"""One reader and one writer for queries and rankings (colbert.evaluation.files), used by Queries,
Ranking, `colbert-tap search` and evaluation alike, with the qid type decided there."""

import pytest

from colbert.evaluation import EvaluationInputError, evaluate, load_qrels, load_queries, load_ranking, write_ranking
from colbert.search.queries import Queries
from colbert.search.ranking import Ranking


def write(path, text):
    path.write_text(text)
    return str(path)


def test_queries_reader_keeps_the_first_two_fields_everywhere(tmp_path):
    # colbert-ai's loader: split on tabs, qid and query, the rest dropped (not joined into the text)
    path = write(tmp_path / "q.tsv", "7\tfirst query\tsome label\textra\n\n12\tsecond\n")
    assert Queries(path=path).data == {7: "first query", 12: "second"}
    assert load_queries(path) == {"7": "first query", "12": "second"}
    assert Queries.cast(path).data == Queries(path=path).data


def test_queries_qid_type(tmp_path):
    path = write(tmp_path / "q.tsv", "1\tfine\nq2\tnot an integer qid\n")
    assert load_queries(path) == {"1": "fine", "q2": "not an integer qid"}  # evaluation: ids are text
    with pytest.raises(EvaluationInputError, match=r"q\.tsv:2: expected an integer qid; got 'q2'"):
        Queries(path=path)  # upstream's API: integer qids, the error names the line
    assert Queries(path=write(tmp_path / "empty.tsv", "")).data == {}
    with pytest.raises(EvaluationInputError, match="at least one query"):
        load_queries(str(tmp_path / "empty.tsv"))
    with pytest.raises(EvaluationInputError, match=r"dup\.tsv:2: expected each qid once"):
        Queries(path=write(tmp_path / "dup.tsv", "3\ta\n03\tb\n"))  # 3 and 03 are one integer qid


def test_ranking_reader_and_writer_are_shared(tmp_path):
    ranking = Ranking(data={5: [(10, 1, 2.5), (3, 2, 1.25)], 2: [(7, 1, -0.5)]})
    saved = ranking.save(str(tmp_path / "a.tsv"))
    written = write_ranking(ranking, str(tmp_path / "b.tsv"))
    assert open(saved).read() == open(written).read() == "5\t10\t1\t2.5\n5\t3\t2\t1.25\n2\t7\t1\t-0.5\n"
    assert Ranking(path=saved).data == ranking.data
    assert load_ranking(saved) == {"5": [("10", 1, 2.5), ("3", 2, 1.25)], "2": [("7", 1, -0.5)]}
    # Ranking(path=) is as strict as evaluation's reader, with the file and line in the error
    bad = write(tmp_path / "bad.tsv", "1\t4\t1\t1.0\n1\t4\t2\t0.5\n")
    with pytest.raises(EvaluationInputError, match=r"bad\.tsv:2: expected each pid at most once"):
        Ranking(path=bad)
    with pytest.raises(EvaluationInputError, match=r"ids\.tsv:1: expected an integer pid"):
        Ranking(path=write(tmp_path / "ids.tsv", "1\tdoc-a\t1\n"))
    assert Ranking(path=write(tmp_path / "noscore.tsv", "1\t4\t1\n")).data == {1: [(4, 1)]}


def test_evaluation_takes_a_searchers_ranking_as_it_is(tmp_path):
    qrels = load_qrels(write(tmp_path / "qrels.tsv", "5\t3\t1\n2\t9\t1\n"))
    ranking = Ranking(data={5: [(10, 1, 2.5), (3, 2, 1.25)], 2: [(7, 1, -0.5)]})
    as_text = load_ranking(ranking.save(str(tmp_path / "r.tsv")))
    got, want = evaluate(ranking, qrels), evaluate(as_text, qrels)
    assert got.per_query == want.per_query and got.per_query["5"]["MRR@10"] == pytest.approx(0.5)
    assert got.unanswered == [] and got.unjudged == []
