"""`colbert-tap evaluate`: metrics of one ranking, or of two plus the drift between them."""

from __future__ import annotations

import os
import sys


def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="Recall/MRR/nDCG of a ranking TSV against qrels; drift between two rankings",
                       description="Scores a qid<TAB>pid<TAB>rank[<TAB>score] ranking against qrels (qid<TAB>pid<TAB>"
                                   "relevance, or TREC qid iter docid relevance). With --ranking-b, also reports how "
                                   "far B's top k drifts from A's. Exit status 2 on bad input.")
    p.add_argument("--ranking", required=True, help="ranking A (TSV)")
    p.add_argument("--ranking-b", help="ranking B (TSV), compared with A")
    p.add_argument("--qrels", help="relevance judgements (needed unless only the drift of two rankings is wanted)")
    p.add_argument("--metrics", nargs="+", metavar="M",
                   help="e.g. Recall@10 Recall@100 MRR@10 nDCG@10 (the default)")
    p.add_argument("--drift-k", type=int, default=10, help="top k compared by the drift report (default 10)")
    p.add_argument("--drift-metric", help="per-query better/worse/equal under this metric (default nDCG@10)")
    p.add_argument("--format", choices=["table", "markdown", "json"], default="table")
    p.add_argument("--names", nargs=2, metavar=("A", "B"), help="labels of the two rankings (default: file names)")
    p.set_defaults(func=cmd_evaluate)


def _label(path: str) -> str:
    return os.path.basename(path) or path


def cmd_evaluate(args) -> int:
    from colbert.evaluation.drift import drift_report
    from colbert.evaluation.files import load_qrels, load_ranking
    from colbert.evaluation.metrics import evaluate, parse_metrics
    from colbert.evaluation.render import render

    if not args.qrels and not args.ranking_b:
        raise ValueError("give --qrels (to compute metrics) or --ranking-b (to compare two rankings), or both")
    metrics = parse_metrics(args.metrics)
    paths = [args.ranking] + ([args.ranking_b] if args.ranking_b else [])
    names = list(args.names) if args.names else [_label(p) for p in paths]
    if len(names) == 2 and names[0] == names[1]:
        names = [f"A: {names[0]}", f"B: {names[1]}"]
    rankings = [load_ranking(p) for p in paths]
    qrels = load_qrels(args.qrels) if args.qrels else None
    evaluations = {n: evaluate(r, qrels, metrics) for n, r in zip(names, rankings)} if qrels else {}
    drift = None
    if len(rankings) == 2:
        evs = list(evaluations.values()) or [None, None]
        drift = drift_report(rankings[0], rankings[1], k=args.drift_k, evaluation_a=evs[0], evaluation_b=evs[1],
                             metric=args.drift_metric)
    color = args.format == "table" and sys.stdout.isatty()
    print(render(evaluations, drift, fmt=args.format, names=tuple(names[:2]) if len(names) == 2 else None,
                 color=color))
    return 0
