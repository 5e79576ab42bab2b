"""Indexing throughput: colbert-tap vs colbert-ai 0.2.22 on the same passages, same checkpoint.

Runs alternate (oracle, ours, oracle, ours, ...) in one invocation so that machine noise hits both
sides alike; each run is a fresh process running the same user script (tests/parity/index_script.py)
and timing Indexer.index() (model load, sampling, k-means, encoding, compression, IVF). Both sides
use the parity venvs (same torch, transformers, faiss); after the runs the indexes are compared
file by file. Prints passages/s per side, the ratio ours/oracle, and a markdown table.

    python benchmarks/index_throughput.py --n 1000 --rounds 2
    python benchmarks/index_throughput.py --collection /path/to/big.tsv --n 40000 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "parity"))
sys.path.insert(0, REPO)

from index_diff import diff_indexes  # noqa: E402
from venvs import ensure_venv, run_in  # noqa: E402

DEFAULT_TSV = os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="passages to index")
    ap.add_argument("--rounds", type=int, default=2, help="runs per side, alternating")
    ap.add_argument("--collection", default=DEFAULT_TSV, help="pid<TAB>passage TSV (default: shipped Vaswani)")
    ap.add_argument("--config", default="A", choices=["A", "B"],
                    help="A: doc_maxlen 256, nbits 4, dim 96, kmeans_niters 20, index_bsize 32; B: nbits 2, defaults")
    ap.add_argument("--checkpoint", help="ColBERT checkpoint (default: MiniLM + seeded 96-dim projection)")
    ap.add_argument("--workdir", help="where indexes go (default: a temp dir)")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    oracle_py, ours_py = ensure_venv("oracle"), ensure_venv("ours-tf457")
    work = args.workdir or tempfile.mkdtemp(prefix="colbert-tap-bench-")
    ckpt = args.checkpoint
    if not ckpt:
        from colbert.modeling.make_checkpoint import make_checkpoint

        ckpt = os.path.join(work, "checkpoint")
        if not os.path.exists(os.path.join(ckpt, "artifact.metadata")):
            make_checkpoint("minilm", ckpt, dim=96, seed=12345, overwrite=True)
    script = os.path.join(REPO, "tests", "parity", "index_script.py")
    times = {"colbert-ai 0.2.22": [], "colbert-tap": []}
    paths = {}
    for r in range(args.rounds):
        for side, python, ours in (("colbert-ai 0.2.22", oracle_py, False), ("colbert-tap", ours_py, True)):
            root = os.path.join(work, f"{'ours' if ours else 'oracle'}")
            os.makedirs(root, exist_ok=True)
            out = json.loads(run_in(python, script, ckpt, args.collection, str(args.n), root, args.config,
                                    ours=ours, cwd=root).strip().splitlines()[-1])
            times[side].append(out["seconds"])
            paths[side] = out["index_path"]
            console.print(f"round {r + 1}: {side:18s} {out['seconds']:7.1f} s  "
                          f"({args.n / out['seconds']:.1f} passages/s)")
    problems = diff_indexes(paths["colbert-tap"], paths["colbert-ai 0.2.22"])
    identical = "yes" if not problems else f"NO ({len(problems)} differences)"

    table = Table(title=f"Indexing throughput, {args.n:,} passages, config {args.config}")
    for col in ("side", "runs (s)", "median s", "passages/s"):
        table.add_column(col, justify="right" if col != "side" else "left")
    med = {k: statistics.median(v) for k, v in times.items()}
    for side, ts in times.items():
        table.add_row(side, ", ".join(f"{t:.1f}" for t in ts), f"{med[side]:.1f}", f"{args.n / med[side]:.2f}")
    console.print(table)
    ratio = med["colbert-ai 0.2.22"] / med["colbert-tap"]
    console.print(f"ratio (colbert-tap passages/s ÷ colbert-ai passages/s): [bold]{ratio:.2f}[/bold]; "
                  f"indexes bit-identical: {identical}")
    for p in problems:
        console.print(f"  {p}")
    import torch

    print("\nMarkdown:\n")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.n:,} passages of {os.path.basename(args.collection)}, config {args.config}, {args.rounds} round(s).\n")
    print("| side | median s | passages/s |\n|---|---:|---:|")
    for side in times:
        print(f"| {side} | {med[side]:.1f} | {args.n / med[side]:.2f} |")
    print(f"| **ratio** | | **{ratio:.2f}** (identical output: {identical}) |")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
