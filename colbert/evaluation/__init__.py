"""Retrieval-quality evaluation: ranking/qrels files, IR metrics (via ir-measures), drift between two
rankings, and renderers (rich table, markdown, json)."""

from colbert.evaluation.drift import DriftReport, drift_report
from colbert.evaluation.files import (EvaluationInputError, load_qrels, load_queries, load_ranking,
                                      ranking_data, write_ranking)
from colbert.evaluation.metrics import DEFAULT_METRICS, Evaluation, evaluate

__all__ = ["DEFAULT_METRICS", "DriftReport", "Evaluation", "EvaluationInputError", "drift_report", "evaluate",
           "load_qrels", "load_queries", "load_ranking", "ranking_data", "write_ranking"]
