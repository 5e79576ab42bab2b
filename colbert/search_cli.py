"""`colbert-tap search`: run a queries TSV through the Searcher (or exhaustive MaxSim) and write a ranking TSV
(qid<TAB>pid<TAB>rank<TAB>score), the format `colbert-tap evaluate` reads."""

from __future__ import annotations

import os
import sys
import time


def add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="search an index with a qid<TAB>query TSV and write a ranking TSV",
                       description="Exit status 2 on bad input (missing index, malformed queries file).")
    p.add_argument("--index", required=True, help="index path, or its name under --index-root")
    p.add_argument("--index-root", help="folder holding indexes (default: the index is a path)")
    p.add_argument("--checkpoint", help="ColBERT checkpoint (default: the one the index was built with)")
    p.add_argument("--queries", required=True, help="qid<TAB>query text TSV")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--out", required=True, help="ranking TSV to write (atomically)")
    p.add_argument("--exhaustive", action="store_true",
                   help="score every document exactly instead of PLAID (slow; the quality ceiling)")
    g = p.add_argument_group("PLAID settings (unset: upstream's defaults for k)")
    g.add_argument("--ncells", type=int)
    g.add_argument("--centroid-score-threshold", type=float)
    g.add_argument("--ndocs", type=int)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_search)


def _resolve(index: str, index_root: str | None) -> str:
    from colbert.search.index_loader import resolve_index_path

    return resolve_index_path(index, index_root)


def cmd_search(args) -> int:
    from tqdm import tqdm

    from colbert.evaluation.files import load_queries, write_ranking
    from colbert.infra.validation import check_search_settings
    from colbert.search.ranking import Ranking

    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    check_search_settings(args.ncells, args.centroid_score_threshold, args.ndocs)
    # qids keep the file's spelling (colbert.evaluation.files), so the ranking and the tap's file names
    # repeat them; the text is what Searcher.search_all would read from the same file
    queries = load_queries(args.queries)
    index_path = _resolve(args.index, args.index_root)
    if args.checkpoint and not os.path.exists(args.checkpoint):
        raise FileNotFoundError(f"{args.checkpoint}: no such checkpoint")
    settings = {k: getattr(args, k) for k in ("ncells", "centroid_score_threshold", "ndocs")
                if getattr(args, k) is not None}
    t0 = time.time()
    if args.exhaustive:
        from colbert.search.exhaustive import ExhaustiveSearcher

        searcher = ExhaustiveSearcher(index_path, checkpoint=args.checkpoint)
    else:
        from colbert.infra import ColBERTConfig
        from colbert.searcher import Searcher

        config = ColBERTConfig(**settings) if settings else None
        searcher = Searcher(index=index_path, checkpoint=args.checkpoint, config=config)
    loaded = time.time() - t0
    data = {}
    t1 = time.time()
    with _tap_session(searcher, args.k, queries):
        for qid, text in tqdm(queries.items(), desc="searching", unit="query", disable=args.no_progress,
                              file=sys.stderr):
            pids, ranks, scores = _search_one(searcher, text, args.k, qid)
            data[qid] = list(zip(pids, ranks, scores))
    elapsed = time.time() - t1
    # the Searcher's own result class, written as the TSV alone at --out as given (Ranking.save would add a
    # .meta and resolve a relative path under Run().path_)
    write_ranking(Ranking(data=data), args.out)
    print(f"{len(data)} queries searched in {elapsed:.2f} s ({1000 * elapsed / len(data):.1f} ms/query; "
          f"index and model loaded in {loaded:.1f} s); ranking written to {args.out}")
    return 0


def _tap_session(searcher, k: int, queries):
    """One tap session for the whole queries file, as Searcher.search_all opens, so a COLBERT_TAP save
    keeps every query's artifacts (named by its qid) instead of each search() call's q0 replacing the
    last. The exhaustive searcher has no tap points."""
    import contextlib

    from colbert.searcher import Searcher

    if not isinstance(searcher, Searcher):
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def session():
        with searcher._tap_session(k, "colbert-tap search") as t:
            if t is not None:
                from colbert.tap.stages import artifact_filename

                for qid in queries:  # a qid that cannot name a tap file fails before any search
                    artifact_filename("Q", qid=qid)
            yield t

    return session()


def _search_one(searcher, text: str, k: int, qid):
    from colbert.searcher import Searcher

    if not isinstance(searcher, Searcher):
        return searcher.search(text, k=k)
    # Searcher.search's steps (one query encoded alone, so scores equal search()'s) inside the
    # session above, with the file's qid instead of search()'s 0
    return searcher.dense_search(searcher.encode(text), k, qid=qid)
