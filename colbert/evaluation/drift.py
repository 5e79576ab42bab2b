"""How far ranking B drifts from ranking A (e.g. colbert-tap vs colbert-ai, PLAID vs exhaustive).

Per query answered by both, over each side's top k (by rank):
* changed = number of pids in A's top k that are not in B's top k (0 .. k);
* identical = the two top-k pid lists are equal, order included;
* the largest |score_A - score_B| over pids both return (when both files carry scores).
With qrels, each judged query is also called better / worse / equal for B under one metric
(default nDCG@10), plus the aggregate of every metric on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from colbert.evaluation.files import ranking_data

# Two metric values closer than this are equal: trec_eval's own output carries ~1e-4 precision and a
# different float summation order must not count as a win.
EQUAL_TOLERANCE = 1e-9


@dataclass
class DriftReport:
    k: int
    queries: int                       # answered by both
    only_in_a: list[str]
    only_in_b: list[str]
    changed: dict[str, int]            # qid -> pids of A's top k missing from B's top k
    identical: int                     # queries whose top-k lists are equal in order
    same_set: int                      # queries whose top-k sets are equal
    max_score_diff: float | None       # over (qid, pid) in both top k, when both have scores
    metric: str | None = None          # the per-query comparison metric
    better: int = 0                    # B better than A under `metric`
    worse: int = 0
    equal: int = 0
    aggregate_a: dict[str, float] = field(default_factory=dict)
    aggregate_b: dict[str, float] = field(default_factory=dict)

    @property
    def mean_changed(self) -> float:
        return sum(self.changed.values()) / len(self.changed) if self.changed else 0.0

    @property
    def max_changed(self) -> int:
        return max(self.changed.values(), default=0)

    def to_dict(self) -> dict:
        return {"k": self.k, "queries": self.queries, "only_in_a": self.only_in_a, "only_in_b": self.only_in_b,
                "mean_changed": self.mean_changed, "max_changed": self.max_changed, "identical": self.identical,
                "same_set": self.same_set, "max_score_diff": self.max_score_diff, "metric": self.metric,
                "better": self.better, "worse": self.worse, "equal": self.equal,
                "aggregate_a": self.aggregate_a, "aggregate_b": self.aggregate_b, "changed": self.changed}


def drift_report(a, b, k: int = 10, evaluation_a=None, evaluation_b=None, metric: str | None = None) -> DriftReport:
    """a, b: Rankings or {qid: [(pid, rank, score), ...]} sorted by rank; evaluation_*: metrics.Evaluation
    of each (same qrels and metrics) to add the per-query verdicts."""
    if k < 1:
        raise ValueError(f"drift k must be >= 1, got {k}")
    a, b = ranking_data(a), ranking_data(b)
    both = [q for q in a if q in b]
    changed, identical, same_set, max_diff = {}, 0, 0, None
    for q in both:
        top_a, top_b = a[q][:k], b[q][:k]
        pids_a, pids_b = [e[0] for e in top_a], [e[0] for e in top_b]
        set_b = set(pids_b)
        changed[q] = sum(1 for p in pids_a if p not in set_b)
        identical += pids_a == pids_b
        same_set += set(pids_a) == set_b
        scores_b = {e[0]: e[2] for e in top_b}
        for pid, _, score in top_a:
            other = scores_b.get(pid)
            if score is not None and other is not None:
                diff = abs(score - other)
                max_diff = diff if max_diff is None else max(max_diff, diff)
    report = DriftReport(k=k, queries=len(both), only_in_a=[q for q in a if q not in b],
                         only_in_b=[q for q in b if q not in a], changed=changed, identical=identical,
                         same_set=same_set, max_score_diff=max_diff)
    if evaluation_a is not None and evaluation_b is not None:
        labels = evaluation_a.labels
        if labels != evaluation_b.labels:
            raise ValueError(f"the two evaluations measure different metrics: {labels} vs {evaluation_b.labels}")
        metric = metric or ("nDCG@10" if "nDCG@10" in labels else labels[-1])
        if metric not in labels:
            raise ValueError(f"metric {metric!r} was not computed; computed: {', '.join(labels)}")
        report.metric = metric
        for q, values_a in evaluation_a.per_query.items():
            delta = evaluation_b.per_query[q][metric] - values_a[metric]
            if abs(delta) <= EQUAL_TOLERANCE:
                report.equal += 1
            elif delta > 0:
                report.better += 1
            else:
                report.worse += 1
        report.aggregate_a = dict(evaluation_a.aggregate)
        report.aggregate_b = dict(evaluation_b.aggregate)
    return report
