"""IR metrics of a ranking against qrels, computed by ir-measures (which runs trec_eval's code).

Conventions, chosen so that a number here means what it means in the literature:
* the ranking's own rank order is what is scored: documents are handed to trec_eval with score = -rank,
  because trec_eval re-sorts by score and breaks ties by docid, which would silently reorder a ranking
  whose scores tie (or a file without scores);
* every judged query that has at least one relevant document counts, and a judged query the ranking does
  not answer scores 0 on every measure (trec_eval alone would skip it and inflate the mean);
* queries the ranking answers but the qrels do not judge are left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from colbert.evaluation.files import ranking_data

# (label shown to people, ir-measures name)
DEFAULT_METRICS: tuple[tuple[str, str], ...] = (
    ("Recall@10", "R@10"),
    ("Recall@100", "R@100"),
    ("MRR@10", "RR@10"),
    ("nDCG@10", "nDCG@10"),
)

_LABEL_TO_MEASURE = {"recall": "R", "r": "R", "mrr": "RR", "rr": "RR", "ndcg": "nDCG", "map": "AP", "ap": "AP",
                     "p": "P", "precision": "P", "success": "Success"}


def _ir_measures():
    try:
        import ir_measures
    except ImportError:
        raise ImportError("evaluation needs the 'ir-measures' package: pip install ir-measures "
                          "(it comes with colbert-tap's [eval] and [test] extras)") from None
    return ir_measures


def parse_metrics(names: list[str] | None) -> tuple[tuple[str, str], ...]:
    """['Recall@100', 'MRR@10', 'nDCG@10'] -> ((label, ir-measures name), ...). Unknown names raise ValueError."""
    if not names:
        return DEFAULT_METRICS
    out = []
    for name in names:
        base, sep, cutoff = name.partition("@")
        measure = _LABEL_TO_MEASURE.get(base.strip().lower())
        if measure is None or (sep and not cutoff.strip().isdigit()):
            raise ValueError(f"unknown metric {name!r}; expected one of Recall@k, MRR@k, nDCG@k, MAP, P@k, Success@k")
        out.append((name, f"{measure}@{int(cutoff)}" if sep else measure))
    return tuple(out)


@dataclass
class Evaluation:
    metrics: tuple[tuple[str, str], ...]
    per_query: dict[str, dict[str, float]]          # qid -> label -> value, judged queries only
    aggregate: dict[str, float]                      # label -> mean over per_query
    unanswered: list[str] = field(default_factory=list)   # judged queries missing from the ranking
    unjudged: list[str] = field(default_factory=list)     # answered queries missing from the qrels

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.metrics]

    def to_dict(self) -> dict:
        return {"queries": len(self.per_query), "aggregate": self.aggregate, "unanswered": self.unanswered,
                "unjudged": self.unjudged, "per_query": self.per_query}


def evaluate(ranking, qrels, metrics=None) -> Evaluation:
    """ranking: a Ranking or {qid: [(pid, rank, score), ...]}; qrels: {qid: {pid: relevance}}. Ids are
    compared as text (colbert.evaluation.files), so a Searcher's int-keyed Ranking needs no conversion."""
    ranking = ranking_data(ranking)
    ir_measures = _ir_measures()
    metrics = parse_metrics(metrics) if metrics is None or isinstance(metrics, list) else tuple(metrics)
    measures = {label: ir_measures.parse_measure(name) for label, name in metrics}
    judged = {q: rels for q, rels in qrels.items() if any(r > 0 for r in rels.values())}
    if not judged:
        raise ValueError("the qrels hold no relevant (relevance > 0) document, so no metric is defined")
    qrel_rows = [ir_measures.Qrel(q, p, r) for q, rels in judged.items() for p, r in rels.items()]
    run_rows = [ir_measures.ScoredDoc(q, pid, -float(rank))
                for q, entries in ranking.items() if q in judged for pid, rank, _ in entries]

    per_query = {q: {label: 0.0 for label in measures} for q in judged}
    by_measure = {m: label for label, m in measures.items()}
    if run_rows:
        for m in ir_measures.iter_calc(list(measures.values()), qrel_rows, run_rows):
            per_query[m.query_id][by_measure[m.measure]] = float(m.value)
    aggregate = {label: sum(v[label] for v in per_query.values()) / len(per_query) for label in measures}
    return Evaluation(metrics=metrics, per_query=per_query, aggregate=aggregate,
                      unanswered=sorted((q for q in judged if q not in ranking), key=_natural),
                      unjudged=sorted((q for q in ranking if q not in judged), key=_natural))


def _natural(qid: str):
    return (0, int(qid), "") if qid.isdigit() else (1, 0, qid)
