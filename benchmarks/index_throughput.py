"""Indexing throughput: colbert-tap vs colbert-ai 0.2.22 on the same passages, same checkpoint.

Runs alternate (oracle, ours, oracle, ours, ...) in one invocation so that machine noise hits both
sides alike; each run is a fresh process running the same user script (tests/parity/index_script.py)
and timing Indexer.index() (model load, sampling, k-means, encoding, compression, IVF). Both sides
use the parity venvs (same torch, transformers, faiss); after the runs the indexes are compared
file by file. Prints passages/s per side, the ratio ours/oracle, and a markdown table; also the CPU time (user+sys)
of each run's whole process tree, startup and imports included, which is less sensitive to machine load.
--encode-once-ablation adds a side, colbert-tap with COLBERT_ENCODE_ONCE=0. Where this tree has exact
mode (COLBERT_ENCODE_MODE=exact), a side "colbert-tap exact" runs too (its index may differ; the
diff count is printed). Each run goes through benchmarks/index_worker.py, which times the stages
(encode, k-means, residual statistics, compression, IVF, writes) by wrapping each side's functions
in the child processes, and reports the run's peak RSS.

    python benchmarks/index_throughput.py --n 1000 --rounds 2
    python benchmarks/index_throughput.py --collection /path/to/big.tsv --n 40000 --rounds 1
Every finished run is appended to <workdir>/runs.jsonl; --resume takes those runs instead of running
them again (for a long run at large N that was cut off: the table then says which runs came from it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time

from common import benchmark_checkpoint, cpu_name  # noqa: E402  (benchmarks/ is sys.path[0])

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "parity"))
sys.path.insert(0, REPO)

from index_diff import diff_indexes  # noqa: E402
from venvs import ensure_venv, run_in  # noqa: E402

DEFAULT_TSV = os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv")
EXACT = "colbert-tap exact"
STAGE_NAMES = ("encode", "k-means", "residual statistics", "compression", "IVF", "writes")


def has_exact_mode() -> bool:
    """Whether this tree's ColBERTConfig has the exact encode mode (issue 10; until then the side is left out)."""
    sys.path.insert(0, REPO)
    from colbert.infra.config import ColBERTConfig

    return "encode_mode" in ColBERTConfig.field_names()


def _read_stages(stage_dir: str) -> dict:
    """Sum of the per-process stage totals that index_worker.py wrote for one run."""
    totals = dict.fromkeys(STAGE_NAMES, 0.0)
    names = sorted(n for n in os.listdir(stage_dir) if not n.endswith(".rss.json"))
    if not names:
        raise RuntimeError(f"{stage_dir}: index_worker.py wrote no stage times (expected one <pid>.json "
                           "per process that indexed)")
    for name in names:
        with open(os.path.join(stage_dir, name)) as f:
            for k, v in json.load(f).items():
                totals[k] += v
    return totals


def _read_rss_by_stage(stage_dir: str) -> dict:
    """Largest resident set (MB) seen during each stage, over the run's processes (index_worker.py)."""
    peaks = {}
    for name in sorted(os.listdir(stage_dir)):
        if name.endswith(".rss.json"):
            with open(os.path.join(stage_dir, name)) as f:
                for k, v in json.load(f).items():
                    peaks[k] = max(peaks.get(k, 0.0), v)
    return peaks


def _run_key(args) -> dict:
    return {"n": args.n, "collection": os.path.abspath(args.collection), "config": args.config}


def _append_run(path: str, args, side: str, r: int, out: dict, stages: dict, cpu_s: float,
                rss_by_stage: dict) -> None:
    """One finished run, so that --resume can carry it into a later invocation (a long run at large N
    that was cut off keeps what it measured)."""
    with open(path, "a") as f:
        f.write(json.dumps({**_run_key(args), "side": side, "round": r, "seconds": out["seconds"],
                            "stages": stages, "peak_rss_mb": out["peak_rss_mb"], "cpu_s": cpu_s,
                            "index_path": out["index_path"], "rss_by_stage": rss_by_stage,
                            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}) + "\n")


def _finished_runs(path: str, args) -> dict:
    """{(side, round): run} of runs.jsonl entries made with this --n, --collection and --config."""
    found = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                run = json.loads(line)
                if {k: run.get(k) for k in ("n", "collection", "config")} == _run_key(args) \
                        and os.path.exists(os.path.join(run["index_path"], "metadata.json")):
                    found[run["side"], run["round"]] = run
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="passages to index")
    ap.add_argument("--rounds", type=int, default=2, help="runs per side, alternating")
    ap.add_argument("--collection", default=DEFAULT_TSV, help="pid<TAB>passage TSV (default: shipped Vaswani)")
    ap.add_argument("--config", default="A", choices=["A", "B"],
                    help="A: doc_maxlen 256, nbits 4, dim 96, kmeans_niters 20, index_bsize 32; B: nbits 2, defaults")
    ap.add_argument("--checkpoint", help="ColBERT checkpoint (default: MiniLM + seeded 96-dim projection)")
    ap.add_argument("--workdir", help="where indexes go (default: a temp dir)")
    ap.add_argument("--no-exact", action="store_true", help="leave out the colbert-tap exact side")
    ap.add_argument("--no-parity", action="store_true",
                    help="leave out the colbert-tap parity side (for a long run at large N: colbert-ai and exact)")
    ap.add_argument("--no-oracle", action="store_true",
                    help="leave out colbert-ai (a long run at large N of colbert-tap's sides alone): no ratios, "
                         "no diff against colbert-ai's index")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the runs an earlier invocation with the same --workdir, --n, --collection and "
                         "--config finished (<workdir>/runs.jsonl) instead of running them again")
    ap.add_argument("--timeout", type=int, default=3 * 3600, help="seconds per run before it is killed")
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
    script = os.path.join(REPO, "benchmarks", "index_worker.py")
    sides = [] if args.no_oracle else [("colbert-ai 0.2.22", oracle_py, False, {})]
    if not args.no_parity:
        sides.append(("colbert-tap", ours_py, True, {}))
    if has_exact_mode() and not args.no_exact:
        sides.append((EXACT, ours_py, True, {"COLBERT_ENCODE_MODE": "exact"}))
    if args.encode_once_ablation:
        sides.append(("colbert-tap, COLBERT_ENCODE_ONCE=0", ours_py, True, {"COLBERT_ENCODE_ONCE": "0"}))
    for name in ("COLBERT_ENCODE_MODE", "COLBERT_ENCODE_ONCE"):  # each side sets its own
        os.environ.pop(name, None)
    times = {side: [] for side, *_ in sides}
    stages = {side: [] for side, *_ in sides}  # per run: {stage: seconds}
    rss = {side: [] for side, *_ in sides}
    cpu = {side: [] for side, *_ in sides}  # user+sys of the run's whole process tree (RUSAGE_CHILDREN delta)
    rss_stage = {side: [] for side, *_ in sides}  # per run: {stage: peak MB}
    loads = [os.getloadavg()]
    paths = {}
    runs_log = os.path.join(work, "runs.jsonl")
    done = _finished_runs(runs_log, args) if args.resume else {}
    for r in range(args.rounds):
        for side, python, ours, extra_env in sides:
            if (side, r) in done:  # --resume: a run an earlier invocation finished
                run = done[side, r]
                times[side].append(run["seconds"])
                stages[side].append(run["stages"])
                rss[side].append(run["peak_rss_mb"])
                rss_stage[side].append(run.get("rss_by_stage", {}))
                cpu[side].append(run["cpu_s"])
                paths[side] = run["index_path"]
                console.print(f"round {r + 1}: {side:34s} {run['seconds']:7.1f} s  (from {runs_log}, "
                              f"finished {run['finished']})")
                continue
            # Named by side, not by position: with --resume and another set of sides, a position would
            # point a new run at an earlier side's index and overwrite it.
            root = os.path.join(work, re.sub(r"[^a-z0-9]+", "-", side.lower()).strip("-"))
            os.makedirs(root, exist_ok=True)
            stage_dir = tempfile.mkdtemp(prefix="stages-", dir=work)
            env = {**extra_env, "COLBERT_BENCH_STAGES_DIR": stage_dir}
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            out = json.loads(run_in(python, script, ckpt, args.collection, str(args.n), root, args.config,
                                    ours=ours, cwd=root, timeout=args.timeout,
                                    extra_env=env).strip().splitlines()[-1])
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            times[side].append(out["seconds"])
            stages[side].append(_read_stages(stage_dir))
            rss[side].append(out["peak_rss_mb"])
            rss_stage[side].append(_read_rss_by_stage(stage_dir))
            cpu[side].append(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
            paths[side] = out["index_path"]
            loads.append(os.getloadavg())
            _append_run(runs_log, args, side, r, out, stages[side][-1], cpu[side][-1], rss_stage[side][-1])
            console.print(f"round {r + 1}: {side:34s} {out['seconds']:7.1f} s  "
                          f"({args.n / out['seconds']:.1f} passages/s)  process CPU {cpu[side][-1]:.1f} s  "
                          f"peak RSS {rss[side][-1]:.0f} MB  load {loads[-1][0]:.2f}")
            console.print("    " + "  ".join(f"{k} {v:.1f}" for k, v in stages[side][-1].items()))
            console.print("    peak RSS MB by stage: " + "  ".join(f"{k} {v:.0f}" for k, v in rss_stage[side][-1].items()))
    oracle_side = None if args.no_oracle else sides[0][0]
    problems, diffs = [], {}
    for side, *_ in sides[1:] if oracle_side else ():
        found = diff_indexes(paths[side], paths[oracle_side])
        diffs[side] = len(found)
        if side != EXACT:  # exact mode is allowed to differ; only its count is reported
            problems += [f"{side} vs {oracle_side}: {p}" for p in found]
    identical = "yes" if not problems else f"NO ({len(problems)} differences)"
    with open(os.path.join(paths[oracle_side or sides[0][0]], "metadata.json")) as f:
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
    ratio = med[oracle_side] / med["colbert-tap"] if "colbert-tap" in med and oracle_side else None
    if ratio is not None:
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

    console.print(f"peak RSS (MB, median): " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in rss.items()))
    for side, runs in rss_stage.items():
        console.print(f"peak RSS MB by stage, {side} (largest over runs): " + "  ".join(
            f"{k} {max(r.get(k, 0.0) for r in runs):.0f}" for k in sorted({k for r in runs for k in r})))
    if EXACT in times and oracle_side:
        console.print(f"ratio exact / colbert-ai: {med[oracle_side] / med[EXACT]:.2f} "
                      f"(diff_indexes vs colbert-ai: {diffs[EXACT]} differences)")
    stage_med = {side: {st: statistics.median(r[st] for r in runs) for st in STAGE_NAMES}
                 for side, runs in stages.items()}
    print("\nMarkdown:\n")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.n:,} passages of {os.path.basename(args.collection)} (avg {avg_doclen:.1f} tokens/passage "
          f"in the index), config {args.config}, {args.rounds} round(s), 1-min load average "
          f"{min(load1):.2f}-{max(load1):.2f}.\n")
    for (side, r), run in sorted(done.items()):
        if side in times:
            print(f"Round {r + 1} of {side} is carried from an earlier invocation (--resume; it finished "
                  f"{run['finished']}); it was not alternated with the runs made here.\n")
    print("| side | runs (s) | median s | passages/s | process CPU s (runs) |\n|---|---|---:|---:|---|")
    for side in times:
        print(f"| {side} | {', '.join(f'{t:.1f}' for t in times[side])} | {med[side]:.1f} | "
              f"{args.n / med[side]:.2f} | {', '.join(f'{c:.1f}' for c in cpu[side])} |")
    if ratio is not None:
        print(f"| **ratio** colbert-tap / colbert-ai | | | **{ratio:.2f}** (identical output: {identical}) |")
    if EXACT in times and oracle_side:
        print(f"| **ratio** {EXACT} / colbert-ai | | | **{med[oracle_side] / med[EXACT]:.2f}** "
              f"({diffs[EXACT]} differences from colbert-ai's index) |")
    print("\n| side | passages/s | ratio | peak RSS MB | diff vs colbert-ai | "
          + " | ".join(f"{st} s" for st in STAGE_NAMES) + " | other s |\n|---|---:|---:|---:|---|"
          + "---:|" * (len(STAGE_NAMES) + 1))
    for side in times:
        other = med[side] - sum(stage_med[side].values())
        d = "-" if side == oracle_side or not oracle_side else (
            "0 (identical)" if diffs[side] == 0 else f"{diffs[side]} differences")
        r_ = f"{med[oracle_side] / med[side]:.2f}" if oracle_side else "-"
        print(f"| {side} | {args.n / med[side]:.2f} | {r_} | "
              f"{statistics.median(rss[side]):.0f} | {d} | "
              + " | ".join(f"{stage_med[side][st]:.1f}" for st in STAGE_NAMES) + f" | {other:.1f} |")
    print("\n| side | " + " | ".join(f"peak RSS MB in {st}" for st in (*STAGE_NAMES, "other"))
          + " |\n|---|" + "---:|" * (len(STAGE_NAMES) + 1))
    for side, runs in rss_stage.items():
        print(f"| {side} | " + " | ".join(f"{max(r.get(st, 0.0) for r in runs):.0f}"
                                          for st in (*STAGE_NAMES, "other")) + " |")
    print("\nStage times are medians over runs, exclusive (a timed call nested in another counts once); "
          "colbert-ai compresses and writes in a saver thread that overlaps encoding, so its stages may "
          "sum to more than the wall time (other < 0). other = model load, sampling, tokenizer setup, "
          "the rest of Indexer.index().")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
