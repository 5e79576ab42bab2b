"""Exact encode mode against parity on the whole Vaswani collection: quality, drift and indexing time.

Indexes the shipped Vaswani passages twice with colbert-tap, encode mode "parity" (upstream's padded
batches, bit-identical to colbert-ai) and "exact" (each passage at its own length), same checkpoint
(all-MiniLM-L6-v2 + seeded 96-dim projection) and settings (nbits 2, doc_maxlen 256, index_bsize 32),
then:
* PLAID search with upstream's k=100 settings on both, 93 queries: Recall@10, Recall@100, MRR@10,
  nDCG@10 (ir-measures through colbert.evaluation), and how far exact's rankings drift from parity's;
* `colbert-tap compare` of the two indexes: per index file, elements differing and max |a-b|;
* with --init-controls K: K more exact indexes whose sample is ordered by a salted content key. Their
  embeddings are exact mode's, bit for bit; only the order k-means and the held-out split see changes,
  which is what separates exact from parity besides the last bits. Their spread is the k-means
  initialisation's own noise, against which the exact/parity difference is to be read.

Indexes are cached under --workdir (delete them to re-time). The two indexing runs are sequential,
not alternated (each is long); the load average before and after each is printed beside its time.

    python benchmarks/exact_quality.py                      # all 11,429 passages
    python benchmarks/exact_quality.py --limit 2000
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
MODES = ("parity", "exact")


def ensure_index(workdir: str, checkpoint: str, mode: str, limit: int | None, bsize: int, salt: str = ""):
    """(index path, seconds spent indexing now or None when cached, load averages before/after)."""
    import hashlib

    from colbert.cli import _read_collection, run_index
    from colbert.indexing import collection_indexer, encode_mode

    name = f"{mode}.bsize={bsize}" + (f".n={limit}" if limit else "") + (f".salt={salt}" if salt else "")
    # the control: the same embeddings, the sample in another order (what content_key decides)
    collection_indexer.content_key = (encode_mode.content_key if not salt else
                                      lambda p: hashlib.sha256((salt + p).encode("utf-8")).digest())
    path = os.path.join(workdir, "vaswani", "indexes", name)
    if os.path.exists(os.path.join(path, "metadata.json")):
        return path, None, None
    collection = _read_collection(os.path.join(VASWANI, "collection.tsv"), limit)
    load0, t0 = os.getloadavg()[0], time.time()
    out = run_index(checkpoint, collection, workdir, name, experiment="vaswani", overwrite=True, nbits=2, dim=96,
                    doc_maxlen=256, index_bsize=bsize, encode_mode=mode)
    return out, time.time() - t0, (load0, os.getloadavg()[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=os.path.join(REPO, "experiments", "exact_quality"))
    ap.add_argument("--limit", type=int, help="index only the first N passages")
    ap.add_argument("--index-bsize", type=int, default=32)
    ap.add_argument("--init-controls", type=int, default=0, metavar="K",
                    help="K more exact indexes, sample ordered by a salted content key (k-means init noise)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from colbert.compare.engine import compare_runs
    from colbert.compare.render import fmt_num
    from colbert.evaluation import drift_report, evaluate, load_qrels, load_queries, ranking_data
    from colbert.searcher import Searcher

    os.makedirs(args.workdir, exist_ok=True)
    checkpoint = benchmark_checkpoint(args.workdir)
    built = {m: ensure_index(args.workdir, checkpoint, m, args.limit, args.index_bsize) for m in MODES}
    queries = load_queries(os.path.join(VASWANI, "queries.tsv"), integer_ids=True)
    qrels = load_qrels(os.path.join(VASWANI, "qrels.tsv"))
    runs, evals, seconds = {}, {}, {}
    for m in MODES:
        searcher = Searcher(index=built[m][0], checkpoint=checkpoint, verbose=0)
        t0 = time.perf_counter()
        runs[m] = ranking_data(searcher.search_all(queries, k=100).data)
        seconds[m] = time.perf_counter() - t0
        evals[m] = evaluate(runs[m], qrels)
    drift10 = drift_report(runs["parity"], runs["exact"], k=10, evaluation_a=evals["parity"],
                           evaluation_b=evals["exact"])
    drift100 = drift_report(runs["parity"], runs["exact"], k=100)
    report = compare_runs(built["parity"][0], built["exact"][0])

    metas = {}
    for m in MODES:
        with open(os.path.join(built[m][0], "metadata.json")) as f:
            metas[m] = json.load(f)
    n_docs = round(metas["parity"]["num_embeddings"] / metas["parity"]["avg_doclen"])
    print(f"\n## Exact vs parity encode mode on Vaswani ({n_docs:,} passages, 93 queries)\n")
    print("Settings: nbits 2, doc_maxlen 256, dim 96, index_bsize "
          f"{args.index_bsize}; PLAID k=100 (ncells 2, threshold 0.45, ndocs 1024).\n")
    print("| encode mode | indexing s (load before → after) | centroids | embeddings | Recall@10 | Recall@100 | "
          "MRR@10 | nDCG@10 | s for 93 queries |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for m in MODES:
        a, (_, s, load) = evals[m].aggregate, built[m]
        took = "cached" if s is None else f"{s:.0f} ({load[0]:.2f} → {load[1]:.2f})"
        print(f"| {m} | {took} | {metas[m]['num_partitions']:,} | {metas[m]['num_embeddings']:,} | "
              f"{a['Recall@10']:.4f} | {a['Recall@100']:.4f} | {a['MRR@10']:.4f} | {a['nDCG@10']:.4f} | "
              f"{seconds[m]:.1f} |")
    print(f"\nRankings, exact against parity: top 10: {drift10.mean_changed:.2f} of parity's pids missing on average "
          f"(max {drift10.max_changed}), identical top 10 for {drift10.identical}/{drift10.queries} queries; "
          f"top 100: {drift100.mean_changed:.2f} missing on average (max {drift100.max_changed}). Per query "
          f"nDCG@10, exact vs parity: {drift10.better} better, {drift10.worse} worse, {drift10.equal} equal.\n")
    print(f"`colbert-tap compare` parity exact: {report.verdict_line()}\n")
    if args.init_controls:
        rows = []
        for i in range(args.init_controls):
            path, s, _ = ensure_index(args.workdir, checkpoint, "exact", args.limit, args.index_bsize, salt=f"c{i}")
            searcher = Searcher(index=path, checkpoint=checkpoint, verbose=0)
            rows.append(evaluate(ranking_data(searcher.search_all(queries, k=100).data), qrels).aggregate)
        print(f"k-means initialisation noise: {args.init_controls} exact indexes whose sample is ordered by a salted "
              "content key (same embeddings, bit for bit):\n")
        print("| metric | parity | exact | exact, salted orders (min – max) |\n| --- | ---: | ---: | ---: |")
        for metric in ("Recall@10", "Recall@100", "MRR@10", "nDCG@10"):
            vals = [r[metric] for r in rows]
            print(f"| {metric} | {evals['parity'].aggregate[metric]:.4f} | {evals['exact'].aggregate[metric]:.4f} | "
                  f"{min(vals):.4f} – {max(vals):.4f} |")
        print()
    print("| index file | elements differing | max \\|a−b\\| |")
    print("| --- | ---: | ---: |")
    for r in report.rows:
        if r.stage is None:
            continue
        differ = "" if r.n_diff is None else f"{r.n_diff:,} / {r.n_total:,}"
        print(f"| {r.name} | {differ or r.status} | {fmt_num(r.max_abs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
