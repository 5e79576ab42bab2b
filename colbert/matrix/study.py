"""The search study of a matrix (--search): per consecutive pair, metrics and ranking drift, with
search-code drift (both versions searching the FIRST run's index) told apart from the total drift
(each version searching its own index). Metrics and drift come from colbert.evaluation."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def _metric_names(k: int) -> list[str]:
    return [f"Recall@{k}", f"MRR@{k}"]


def _drift_json(d) -> dict:
    return {"mean_changed": round(d.mean_changed, 4), "max_changed": d.max_changed, "identical": d.identical,
            "same_set": d.same_set, "queries": d.queries, "max_score_diff": d.max_score_diff,
            "metric": d.metric, "better": d.better if d.metric else None, "worse": d.worse if d.metric else None,
            "equal": d.equal if d.metric else None}


def search_study(matrix, targets) -> dict:
    from colbert.evaluation.drift import drift_report
    from colbert.evaluation.files import load_qrels, load_queries, load_ranking
    from colbert.evaluation.metrics import evaluate

    s = matrix.spec.search
    qrels = None
    if s.qrels:
        # judged queries that the queries file does not ask are not part of the study
        asked = set(load_queries(s.queries))
        qrels = {q: rels for q, rels in load_qrels(s.qrels).items() if q in asked}
    metrics = _metric_names(s.k)
    runs = {}
    for t in targets:
        r = matrix.results[t.name]
        entry = {"own": None, "first": None, "metrics_own": None, "metrics_first": None}
        for which in ("own", "first"):
            path = (r.search or {}).get(which) if r.ok else None
            if path:
                ranking = load_ranking(path)
                entry[which] = ranking
                if qrels is not None:
                    entry["metrics_" + which] = evaluate(ranking, qrels, metrics)
        runs[t.name] = entry
    pairs = []
    for a, b in zip(targets, targets[1:]):
        ea, eb = runs[a.name], runs[b.name]
        row = {"a": a.name, "b": b.name, "k": s.k, "error": None}
        if ea["own"] is None or eb["own"] is None:
            row["error"] = "not searched: " + ", ".join(x.name for x, e in ((a, ea), (b, eb)) if e["own"] is None)
            pairs.append(row)
            continue
        metric = metrics[1] if qrels is not None else None
        total = drift_report(ea["own"], eb["own"], k=s.k, evaluation_a=ea["metrics_own"],
                             evaluation_b=eb["metrics_own"], metric=metric)
        row["total"] = _drift_json(total)
        if qrels is not None:
            row["metrics_a"] = dict(ea["metrics_own"].aggregate)
            row["metrics_b"] = dict(eb["metrics_own"].aggregate)
        if ea["first"] is not None and eb["first"] is not None:
            code = drift_report(ea["first"], eb["first"], k=s.k, evaluation_a=ea["metrics_first"],
                                evaluation_b=eb["metrics_first"], metric=metric)
            row["search_code"] = _drift_json(code)  # same (first) index, two torch versions searching it
            if qrels is not None:
                row["metrics_a_on_first"] = dict(ea["metrics_first"].aggregate)
                row["metrics_b_on_first"] = dict(eb["metrics_first"].aggregate)
            # B's code on B's index vs B's code on the first index: what B's index alone changes
            index = drift_report(eb["first"], eb["own"], k=s.k, evaluation_a=eb["metrics_first"],
                                 evaluation_b=eb["metrics_own"], metric=metric)
            row["index_vs_first"] = _drift_json(index)
        pairs.append(row)
    return {"queries": s.queries, "qrels": s.qrels, "k": s.k, "metrics": metrics if qrels is not None else [],
            "pairs": pairs}
