"""colbert.evaluation: metrics against values worked out by hand, drift, bad files, CLI exit codes."""

import json
import math
import os
import subprocess
import sys

import pytest

from colbert.cli import main as cli_main
from colbert.evaluation import (EvaluationInputError, drift_report, evaluate, load_qrels, load_queries,
                                load_ranking, write_ranking)

pytest.importorskip("ir_measures", reason="ir-measures is part of the [test] extra")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


@pytest.fixture
def qrels_file(tmp_path):
    return write(tmp_path / "qrels.tsv", ["1\ta\t1", "1\tb\t1", "1\tc\t1", "2\tx\t1", "3\tz\t1", "3\tw\t0"])


@pytest.fixture
def ranking_file(tmp_path):
    # q1: relevant a, b at ranks 2 and 4 (of a, b, c); q2: its only relevant doc first; q3 absent;
    # q9 is not judged at all.
    return write(tmp_path / "run.tsv", ["1\td\t1\t9.0", "1\ta\t2\t8.0", "1\te\t3\t7.0", "1\tb\t4\t6.0",
                                         "2\tx\t1\t1.5", "9\ta\t1\t1.0"])


def ndcg(gains_at_ranks, n_relevant):
    dcg = sum(1 / math.log2(r + 1) for r in gains_at_ranks)
    idcg = sum(1 / math.log2(r + 1) for r in range(1, min(n_relevant, 10) + 1))
    return dcg / idcg


def test_metrics_match_hand_computation(qrels_file, ranking_file):
    ev = evaluate(load_ranking(ranking_file), load_qrels(qrels_file))
    q1 = {"Recall@10": 2 / 3, "Recall@100": 2 / 3, "MRR@10": 1 / 2, "nDCG@10": ndcg([2, 4], 3)}
    q2 = {"Recall@10": 1.0, "Recall@100": 1.0, "MRR@10": 1.0, "nDCG@10": 1.0}
    q3 = dict.fromkeys(q1, 0.0)  # judged but unanswered: counts as 0, not skipped
    for label in q1:
        assert ev.per_query["1"][label] == pytest.approx(q1[label], abs=1e-6)
        assert ev.per_query["2"][label] == pytest.approx(q2[label], abs=1e-6)
        assert ev.per_query["3"][label] == pytest.approx(q3[label], abs=1e-6)
        assert ev.aggregate[label] == pytest.approx((q1[label] + q2[label]) / 3, abs=1e-6)
    assert set(ev.per_query) == {"1", "2", "3"}
    assert ev.unanswered == ["3"] and ev.unjudged == ["9"]


def test_rank_order_not_score_order_is_evaluated(tmp_path, qrels_file):
    # Equal scores: trec_eval alone breaks the tie by docid (z9 before a1) and would call this RR 1.
    qrels = write(tmp_path / "q.tsv", ["1\tz9\t1"])
    run = write(tmp_path / "r.tsv", ["1\ta1\t1\t5.0", "1\tz9\t2\t5.0"])
    ev = evaluate(load_ranking(run), load_qrels(qrels))
    assert ev.per_query["1"]["MRR@10"] == pytest.approx(0.5)
    # Lines out of rank order are put in rank order.
    run2 = write(tmp_path / "r2.tsv", ["1\tz9\t2", "1\ta1\t1"])
    assert [e[0] for e in load_ranking(run2)["1"]] == ["a1", "z9"]


def test_recall_cutoffs(tmp_path):
    qrels = write(tmp_path / "q.tsv", ["1\trel\t1"])
    run = write(tmp_path / "r.tsv", [f"1\tn{i}\t{i}" for i in range(1, 11)] + ["1\trel\t11"])
    ev = evaluate(load_ranking(run), load_qrels(qrels))
    assert ev.per_query["1"]["Recall@10"] == 0.0
    assert ev.per_query["1"]["Recall@100"] == 1.0
    assert ev.per_query["1"]["MRR@10"] == 0.0
    ev = evaluate(load_ranking(run), load_qrels(qrels), ["MRR@20", "nDCG@20"])
    assert ev.per_query["1"]["MRR@20"] == pytest.approx(1 / 11)
    assert ev.per_query["1"]["nDCG@20"] == pytest.approx(1 / math.log2(12))


def test_trec_qrels_and_shipped_vaswani_qrels(tmp_path):
    trec = write(tmp_path / "trec", ["1 0 a 1", "1 0 b 2"])
    assert load_qrels(trec) == {"1": {"a": 1, "b": 2}}
    vaswani = load_qrels(os.path.join(REPO, "colbert", "data", "vaswani", "qrels.tsv"))
    assert len(vaswani) == 93 and sum(len(v) for v in vaswani.values()) == 2083


def test_drift_report(tmp_path, qrels_file):
    a = {"1": [("a", 1, 3.0), ("b", 2, 2.0), ("c", 3, 1.0)],
         "2": [("x", 1, 1.0), ("y", 2, 0.5)],
         "3": [("z", 1, 2.0), ("w", 2, 1.0)],
         "4": [("q", 1, 1.0)]}
    b = {"1": [("a", 1, 3.25), ("b", 2, 2.0), ("d", 3, 1.0)],   # one pid of A's top 3 gone
         "2": [("x", 1, 1.0), ("y", 2, 0.5)],                  # identical
         "3": [("w", 1, 1.0), ("z", 2, 2.0)],                  # same set, other order
         "5": [("q", 1, 1.0)]}
    r = drift_report(a, b, k=3)
    assert r.queries == 3 and r.only_in_a == ["4"] and r.only_in_b == ["5"]
    assert r.changed == {"1": 1, "2": 0, "3": 0}
    assert r.mean_changed == pytest.approx(1 / 3) and r.max_changed == 1
    assert r.identical == 1 and r.same_set == 2
    assert r.max_score_diff == pytest.approx(0.25)
    assert r.metric is None
    # With qrels: q1 B loses c (relevant) -> worse; q2 equal; q3 B puts the relevant z second -> worse.
    qrels = load_qrels(qrels_file)
    ea, eb = evaluate(a, qrels), evaluate(b, qrels)
    r = drift_report(a, b, k=3, evaluation_a=ea, evaluation_b=eb)
    assert r.metric == "nDCG@10"
    assert (r.better, r.worse, r.equal) == (0, 2, 1)
    r = drift_report(b, a, k=3, evaluation_a=eb, evaluation_b=ea, metric="Recall@10")
    assert (r.better, r.worse, r.equal) == (1, 0, 2)
    with pytest.raises(ValueError, match="not computed"):
        drift_report(a, b, evaluation_a=ea, evaluation_b=eb, metric="MAP")


@pytest.mark.parametrize("lines, expected", [
    (["1\ta"], "3 or 4 tab-separated fields"),
    (["1\ta\tone\t1.0"], "an integer rank"),
    (["1\ta\t0\t1.0"], "rank >= 1"),
    (["1\ta\t1\tabc"], "a numeric score"),
    (["1\ta\t1\tnan"], "a numeric score"),
    (["1\ta\t1", "1\ta\t2"], "each pid at most once"),
    (["1\ta\t1", "1\tb\t1"], "each rank at most once"),
])
def test_malformed_ranking_names_file_and_line(tmp_path, lines, expected):
    path = write(tmp_path / "bad.tsv", ["2\tq\t1\t1.0"] + lines)
    with pytest.raises(EvaluationInputError) as e:
        load_ranking(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{len(lines) + 1}:") and expected in msg
    assert e.value.line == len(lines) + 1


def test_malformed_qrels_and_queries(tmp_path):
    with pytest.raises(EvaluationInputError, match=r"q\.tsv:2: expected an integer relevance"):
        load_qrels(write(tmp_path / "q.tsv", ["1\ta\t1", "1\tb\tyes"]))
    with pytest.raises(EvaluationInputError, match=r"q2\.tsv:1: expected 3 tab-separated fields"):
        load_qrels(write(tmp_path / "q2.tsv", ["1\ta"]))
    with pytest.raises(EvaluationInputError, match="empty file"):
        load_qrels(write(tmp_path / "q3.tsv", []))
    with pytest.raises(EvaluationInputError, match=r"qs\.tsv:2: expected qid<TAB>query text"):
        load_queries(write(tmp_path / "qs.tsv", ["1\thello", "2 no tab"]))
    with pytest.raises(EvaluationInputError, match=r"qs2\.tsv:2: expected each qid once"):
        load_queries(write(tmp_path / "qs2.tsv", ["1\thello", "1\tagain"]))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_ranking(str(tmp_path / "missing.tsv"))


def test_write_ranking_round_trip(tmp_path):
    data = {"7": [("3", 1, 12.5), ("1", 2, 11.0)], "8": [("2", 1, -0.25)]}
    path = write_ranking(data, str(tmp_path / "sub" / "r.tsv"))
    assert open(path).read() == "7\t3\t1\t12.5\n7\t1\t2\t11.0\n8\t2\t1\t-0.25\n"
    assert load_ranking(path) == data
    assert not [f for f in os.listdir(tmp_path / "sub") if f != "r.tsv"]  # no temp file left behind


def test_cli_formats_and_exit_codes(tmp_path, capsys, qrels_file, ranking_file):
    assert cli_main(["evaluate", "--ranking", ranking_file, "--qrels", qrels_file, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    agg = out["evaluations"]["run.tsv"]["aggregate"]
    assert agg["MRR@10"] == pytest.approx((0.5 + 1.0) / 3)

    other = write(tmp_path / "other.tsv", ["1\ta\t1\t9.0", "2\ty\t1\t1.0"])
    assert cli_main(["evaluate", "--ranking", ranking_file, "--ranking-b", other, "--qrels", qrels_file,
                     "--format", "markdown", "--drift-k", "2"]) == 0
    md = capsys.readouterr().out
    assert "| ranking | queries | Recall@10 | Recall@100 | MRR@10 | nDCG@10 |" in md
    assert "| Δ (B − A) |" in md
    # q1: A's top 2 (d, a) vs B's (a): d missing -> 1; q2: x vs y -> 1
    assert "| mean pids of run.tsv's top 2 not in other.tsv's | 1.00 |" in md
    # nDCG@10 of B vs A: q1 0.469 < 0.498 (B has a at 1 only), q2 0 < 1, q3 0 = 0
    assert "better / worse / equal | 0 / 2 / 1 |" in md

    assert cli_main(["evaluate", "--ranking", ranking_file, "--qrels", qrels_file]) == 0
    table = capsys.readouterr().out
    assert "Retrieval quality" in table and "0.5000" in table  # mean Recall@100 = (2/3 + 1) / 3 = 0.5556; MRR 0.5
    assert "note: run.tsv: 1 judged queries not in the ranking scored 0" in table

    bad = write(tmp_path / "bad.tsv", ["1\ta\tfirst"])
    assert cli_main(["evaluate", "--ranking", bad, "--qrels", qrels_file]) == 2
    err = capsys.readouterr().err
    assert "bad.tsv:1: expected an integer rank; got 'first'" in err
    assert cli_main(["evaluate", "--ranking", str(tmp_path / "nope.tsv"), "--qrels", qrels_file]) == 2
    assert cli_main(["evaluate", "--ranking", ranking_file]) == 2  # neither qrels nor a second ranking
    assert cli_main(["evaluate", "--ranking", ranking_file, "--qrels", qrels_file, "--metrics", "Foo@3"]) == 2
    assert "unknown metric 'Foo@3'" in capsys.readouterr().err


def test_cli_entry_point_exit_codes(tmp_path, qrels_file, ranking_file):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "colbert.cli", *args], capture_output=True, text=True,
                              cwd=REPO)

    ok = run("evaluate", "--ranking", ranking_file, "--qrels", qrels_file, "--format", "markdown")
    assert ok.returncode == 0, ok.stderr
    bad = run("evaluate", "--ranking", write(tmp_path / "bad.tsv", ["x"]), "--qrels", qrels_file)
    assert bad.returncode == 2 and "bad.tsv:1: expected 3 or 4 tab-separated fields" in bad.stderr
    usage = run("evaluate", "--qrels", qrels_file)  # argparse: --ranking missing
    assert usage.returncode == 2 and "--ranking" in usage.stderr
    missing_queries = run("search", "--index", str(tmp_path), "--queries", str(tmp_path / "none.tsv"),
                          "--out", str(tmp_path / "o.tsv"))
    assert missing_queries.returncode == 2 and "none.tsv: no such file" in missing_queries.stderr


def test_missing_ir_measures_is_a_clear_error(monkeypatch, capsys, qrels_file, ranking_file):
    monkeypatch.setitem(sys.modules, "ir_measures", None)  # makes `import ir_measures` raise ImportError
    assert cli_main(["evaluate", "--ranking", ranking_file, "--qrels", qrels_file]) == 2
    assert "pip install ir-measures" in capsys.readouterr().err
    # Drift alone needs no metrics library.
    assert cli_main(["evaluate", "--ranking", ranking_file, "--ranking-b", ranking_file, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["drift"]["identical"] == 3
