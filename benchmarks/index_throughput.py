"""Indexing throughput: colbert-tap vs colbert-ai 0.2.22 on the same passages, same checkpoint.

Runs alternate (oracle, ours, oracle, ours, ...) in one invocation so that machine noise hits both
sides alike; each run is a fresh process running the same user script (tests/parity/index_script.py)
and timing Indexer.index() (model load, sampling, k-means, encoding, compression, IVF). Both sides
use the parity venvs (same torch, transformers, faiss); after the runs the indexes are compared
file by file. Prints passages/s per side, the ratio ours/oracle, and a markdown table; also the CPU time (user+sys)
of each run's whole process tree, startup and imports included, which is less sensitive to machine load.
--encode-once-ablation adds a third side, colbert-tap with COLBERT_ENCODE_ONCE=0.

    python benchmarks/index_throughput.py --n 1000 --rounds 2
    python benchmarks/index_throughput.py --collection /path/to/big.tsv --n 40000 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile

from common import benchmark_checkpoint, cpu_name  # noqa: E402  (benchmarks/ is sys.path[0])

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "parity"))
sys.path.insert(0, REPO)

from index_diff import diff_indexes  # noqa: E402
from venvs import ensure_venv, run_in  # noqa: E402

DEFAULT_TSV = os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="passages to index")
    ap.add_argument("--rounds", type=int, default=2, help="runs per side, alternating")
    ap.add_argument("--collection", default=DEFAULT_TSV, help="pid<TAB>passage TSV (default: shipped Vaswani)")
    ap.add_argument("--config", default="A", choices=["A", "B"],
                    help="A: doc_maxlen 256, nbits 4, dim 96, kmeans_niters 20, index_bsize 32; B: nbits 2, defaults")
    ap.add_argument("--checkpoint", help="ColBERT checkpoint (default: MiniLM + seeded 96-dim projection)")
    ap.add_argument("--workdir", help="where indexes go (default: a temp dir)")
    ap.add_argument("--encode-once-ablation", action="store_true",
                    help="add a third side: colbert-tap with COLBERT_ENCODE_ONCE=0 (every sampled passage "
                         "encoded twice, as upstream does)")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=130)
    oracle_py, ours_py = ensure_venv("oracle"), ensure_venv("ours-tf457")
    work = args.workdir or tempfile.mkdtemp(prefix="colbert-tap-bench-")
    ckpt = benchmark_checkpoint(work, args.checkpoint)
    script = os.path.join(REPO, "tests", "parity", "index_script.py")
    sides = [("colbert-ai 0.2.22", oracle_py, False, {}), ("colbert-tap", ours_py, True, {})]
    if args.encode_once_ablation:
        sides.append(("colbert-tap, COLBERT_ENCODE_ONCE=0", ours_py, True, {"COLBERT_ENCODE_ONCE": "0"}))
    times = {side: [] for side, *_ in sides}
    cpu = {side: [] for side, *_ in sides}  # user+sys of the run's whole process tree (RUSAGE_CHILDREN delta)
    loads = [os.getloadavg()]
    paths = {}
    for r in range(args.rounds):
        for i, (side, python, ours, extra_env) in enumerate(sides):
            root = os.path.join(work, f"side{i}")
            os.makedirs(root, exist_ok=True)
            saved = {k: os.environ.get(k) for k in extra_env}
            os.environ.update(extra_env)
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            try:
                out = json.loads(run_in(python, script, ckpt, args.collection, str(args.n), root, args.config,
                                        ours=ours, cwd=root).strip().splitlines()[-1])
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            times[side].append(out["seconds"])
            cpu[side].append(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
            paths[side] = out["index_path"]
            loads.append(os.getloadavg())
            console.print(f"round {r + 1}: {side:34s} {out['seconds']:7.1f} s  "
                          f"({args.n / out['seconds']:.1f} passages/s)  process CPU {cpu[side][-1]:.1f} s  load {loads[-1][0]:.2f}")
    oracle_side = sides[0][0]
    problems = []
    for side, *_ in sides[1:]:
        problems += [f"{side} vs {oracle_side}: {p}" for p in diff_indexes(paths[side], paths[oracle_side])]
    identical = "yes" if not problems else f"NO ({len(problems)} differences)"
    with open(os.path.join(paths[oracle_side], "metadata.json")) as f:
        meta = json.load(f)
    avg_doclen = meta["avg_doclen"]
    load1 = [l[0] for l in loads]

    table = Table(title=f"Indexing throughput, {args.n:,} passages, config {args.config}")
    for col in ("side", "runs (s)", "median s", "passages/s"):
        table.add_column(col, justify="right" if col != "side" else "left")
    med = {k: statistics.median(v) for k, v in times.items()}
    for side, ts in times.items():
        table.add_row(side, ", ".join(f"{t:.1f}" for t in ts), f"{med[side]:.1f}", f"{args.n / med[side]:.2f}")
    console.print(table)
    ratio = med[oracle_side] / med["colbert-tap"]
    console.print(f"ratio (colbert-tap passages/s / colbert-ai passages/s): [bold]{ratio:.2f}[/bold]; "
                  f"all indexes bit-identical to colbert-ai's (diff_indexes): {identical}")
    if args.encode_once_ablation:
        off = "colbert-tap, COLBERT_ENCODE_ONCE=0"
        console.print(f"encode-once saving: {med[off]:.1f} s -> {med['colbert-tap']:.1f} s "
                      f"({100 * (1 - med['colbert-tap'] / med[off]):.0f}% less time)")
    for p in problems:
        console.print(f"  {p}")
    console.print(f"avg doclen (tokens per passage in the index, doc_maxlen-capped): {avg_doclen:.1f}; "
                  f"load average (1 min) before/after runs: {', '.join(f'{x:.2f}' for x in load1)}")
    import torch

    print("\nMarkdown:\n")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.n:,} passages of {os.path.basename(args.collection)} (avg {avg_doclen:.1f} tokens/passage "
          f"in the index), config {args.config}, {args.rounds} round(s), 1-min load average "
          f"{min(load1):.2f}-{max(load1):.2f}.\n")
    print("| side | runs (s) | median s | passages/s | process CPU s (runs) |\n|---|---|---:|---:|---|")
    for side in times:
        print(f"| {side} | {', '.join(f'{t:.1f}' for t in times[side])} | {med[side]:.1f} | "
              f"{args.n / med[side]:.2f} | {', '.join(f'{c:.1f}' for c in cpu[side])} |")
    print(f"| **ratio** colbert-tap / colbert-ai | | | **{ratio:.2f}** (identical output: {identical}) |")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
