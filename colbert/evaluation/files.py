"""Readers and a writer for the TSV files search and evaluation exchange.

ranking  qid <TAB> pid <TAB> rank [<TAB> score]   (what Searcher/Ranking.save write)
qrels    qid <TAB> pid <TAB> relevance            (the shipped Vaswani qrels), or the TREC form
         qid iter docid relevance (4 whitespace-separated fields)
queries  qid <TAB> text [<TAB> anything]       (fields after the second are dropped, as colbert-ai's
                                                Queries loader drops them)

These are the only readers and the only writer of queries and rankings: colbert.search.queries.Queries,
colbert.search.ranking.Ranking, `colbert-tap search` and evaluation all go through them.
Every reader raises EvaluationInputError naming the file, the 1-based line, what was expected and what
was found, because a silently skipped line would silently change a metric.

The qid type, decided here once: an id is the text of its field (stripped), because qrels and rankings
from other tools need not use integer ids and trec_eval compares them as strings. The one exception is
upstream's Python API: Queries and Ranking read a file with integer_ids=True, so that their qids (and
a ranking's pids) are ints as colbert-ai's are, and a non-integer id is an error at its line.
`ranking_data` maps such a ranking back to the text form, so evaluation never compares an int with a str.
"""

from __future__ import annotations

import math
import os

from colbert.utils.io import atomic_write_text

# {qid: [(pid, rank, score), ...]} in rank order; score is None when the file has no score column.
RankingData = dict[str, list[tuple[str, int, float | None]]]
Qrels = dict[str, dict[str, int]]


class EvaluationInputError(ValueError):
    def __init__(self, path: str, line: int | None, expected: str, actual: str):
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: expected {expected}; got {actual}")
        self.path, self.line, self.expected, self.actual = path, line, expected, actual


def _lines(path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise EvaluationInputError(path, None, "a file", "a directory")
    with open(path, encoding="utf-8") as f:
        try:
            for number, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
        except UnicodeDecodeError as e:
            raise EvaluationInputError(path, None, "UTF-8 text", f"undecodable bytes ({e.reason})") from None


def _show(line: str) -> str:
    return repr(line if len(line) <= 80 else line[:77] + "...")


def _int(path, number, line, value, what, minimum=None) -> int:
    try:
        out = int(value)
    except ValueError:
        raise EvaluationInputError(path, number, f"an integer {what}", f"{value!r} in {_show(line)}") from None
    if minimum is not None and out < minimum:
        raise EvaluationInputError(path, number, f"{what} >= {minimum}", f"{out} in {_show(line)}")
    return out


def _id(path, number, line, value: str, what: str, integer_ids: bool):
    return _int(path, number, line, value, what) if integer_ids else value


def load_ranking(path: str, integer_ids: bool = False) -> RankingData:
    data: RankingData = {}
    seen: dict[str, tuple[set, set]] = {}
    for number, line in _lines(path):
        fields = line.split("\t")
        if len(fields) not in (3, 4):
            raise EvaluationInputError(path, number, "3 or 4 tab-separated fields (qid, pid, rank[, score])",
                                       f"{len(fields)} field(s) in {_show(line)}")
        qid, pid = fields[0].strip(), fields[1].strip()
        if not qid or not pid:
            raise EvaluationInputError(path, number, "non-empty qid and pid", _show(line))
        qid = _id(path, number, line, qid, "qid", integer_ids)
        pid = _id(path, number, line, pid, "pid", integer_ids)
        rank = _int(path, number, line, fields[2], "rank", minimum=1)
        score = None
        if len(fields) == 4:
            try:
                score = float(fields[3])
            except ValueError:
                raise EvaluationInputError(path, number, "a numeric score", f"{fields[3]!r} in {_show(line)}") from None
            if math.isnan(score):
                raise EvaluationInputError(path, number, "a numeric score", f"NaN in {_show(line)}")
        pids, ranks = seen.setdefault(qid, (set(), set()))
        if pid in pids:
            raise EvaluationInputError(path, number, f"each pid at most once per query",
                                       f"pid {pid} a second time for qid {qid}")
        if rank in ranks:
            raise EvaluationInputError(path, number, f"each rank at most once per query",
                                       f"rank {rank} a second time for qid {qid}")
        pids.add(pid)
        ranks.add(rank)
        data.setdefault(qid, []).append((pid, rank, score))
    for entries in data.values():
        entries.sort(key=lambda e: e[1])
    return data


def load_qrels(path: str) -> Qrels:
    qrels: Qrels = {}
    for number, line in _lines(path):
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) == 3:
            qid, pid, rel = fields
        elif len(fields) == 4:
            qid, _, pid, rel = fields
        else:
            raise EvaluationInputError(path, number, "3 tab-separated fields (qid, pid, relevance) or 4 TREC "
                                       "fields (qid, iter, docid, relevance)", f"{len(fields)} field(s) in {_show(line)}")
        qid, pid = qid.strip(), pid.strip()
        relevance = _int(path, number, line, rel.strip(), "relevance")
        judged = qrels.setdefault(qid, {})
        if pid in judged and judged[pid] != relevance:
            raise EvaluationInputError(path, number, f"one relevance per (qid, pid)",
                                       f"qid {qid} pid {pid} judged {judged[pid]} and {relevance}")
        judged[pid] = relevance
    if not qrels:
        raise EvaluationInputError(path, None, "at least one judgement", "an empty file")
    return qrels


def load_queries(path: str, integer_ids: bool = False, allow_empty: bool = False) -> dict:
    """{qid: text} in file order. Like colbert-ai's loader, each line is split on tabs and only the first
    two fields are kept; unlike it, a malformed line is an error naming its line, not an assertion.
    allow_empty: an empty file gives {} (what Queries(path) does, as upstream) instead of an error."""
    queries: dict = {}
    for number, line in _lines(path):
        fields = line.strip().split("\t")
        if len(fields) < 2:
            raise EvaluationInputError(path, number, "qid<TAB>query text", f"no tab in {_show(line)}")
        qid, text = fields[0].strip(), fields[1]
        if not qid or not text.strip():
            raise EvaluationInputError(path, number, "a non-empty qid and query text", _show(line))
        qid = _id(path, number, line, qid, "qid", integer_ids)
        if qid in queries:
            raise EvaluationInputError(path, number, "each qid once", f"qid {qid} a second time")
        queries[qid] = text
    if not queries and not allow_empty:
        raise EvaluationInputError(path, None, "at least one query", "an empty file")
    return queries


def ranking_data(ranking) -> RankingData:
    """A Ranking (or any {qid: [(pid, rank[, score]), ...]}) -> evaluation's form: ids as text, every
    entry (pid, rank, score or None)."""
    return {str(qid): [(str(e[0]), int(e[1]), e[2] if len(e) > 2 else None) for e in entries]
            for qid, entries in ranking.items()}


def write_ranking(data, path: str) -> str:
    """data: a Ranking or {qid: [(pid, rank, score), ...]} -> qid<TAB>pid<TAB>rank<TAB>score lines (no score
    field where it is None), written atomically. Ranking.save writes its TSV with this too."""
    lines = []
    for qid, entries in data.items():
        for entry in entries:
            fields = (qid, *entry)
            if fields[-1] is None:
                fields = fields[:-1]
            lines.append("\t".join(map(str, fields)))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return path
