"""Cost of the ArtifactTap: the same index built three ways, alternating, in one invocation.

  no-tap  the tap code path removed: in a fresh process, before indexing, every module-level
          reference to `tap` (in colbert.indexing.*, colbert.modeling.*) is replaced by a plain
          `lambda stage, value, **ctx: value`, `tap_wants` by `lambda *a, **k: False`,
          `collection_indexer.active_tap` by `lambda: None` and `collection_indexer._tap_session`
          by `contextlib.nullcontext`, so no ContextVar is read and no tap session is opened. What
          remains is the bare Python call at each tap point (a build with the calls deleted from the
          source would also save those few dozen calls per run; they are far below timer noise).
  off     COLBERT_TAP unset: the shipped code path (one ContextVar read per tap point).
  save    COLBERT_TAP=save:<fresh temp dir>: every artifact written to disk (the folder is
          removed after the run; its size is reported).

Every run is a fresh process (this script with --child, torch/OpenMP threads set by --threads,
default 1) timing Indexer.index() only (model load, sampling, k-means, encoding, compression,
IVF) in CPU seconds of the process (time.process_time, all threads) and in wall seconds, on the same
passages, checkpoint and config as benchmarks/index_throughput.py (config A). Rounds alternate no-tap, off, save, no-tap, off, save...
Prints medians of both, the ratios off/no-tap (target <= 1.01) and save/off (target <= 1.10), and checks
with tests/parity/index_diff.py that the off, save and no-tap indexes are identical.

    python benchmarks/tap_overhead.py --n 500 --rounds 6
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import benchmark_checkpoint  # noqa: E402  (benchmarks/ is sys.path[0])

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TSV = os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv")
CONFIG_A = dict(doc_maxlen=256, nbits=4, dim=96, kmeans_niters=20, index_bsize=32, bsize=64)
MODES = ("no-tap", "off", "save")


def remove_tap_code_path() -> list[str]:
    """Replace every imported reference to the tap functions by identities; returns what was patched."""
    import importlib
    import pkgutil

    import colbert
    import colbert.indexing.collection_indexer as ci
    from colbert.tap import core

    for info in pkgutil.walk_packages(colbert.__path__, "colbert."):
        if info.name.startswith(("colbert.indexing", "colbert.modeling", "colbert.indexer")):
            try:
                importlib.import_module(info.name)
            except Exception:  # noqa: BLE001 - optional modules (e.g. GPU-only) may not import
                pass
    originals = {"tap": core.tap, "tap_wants": core.tap_wants, "active_tap": core.active_tap}
    replacements = {"tap": lambda stage, value, **ctx: value,
                    "tap_wants": lambda *a, **k: False,
                    "active_tap": lambda: None}
    patched = []
    for name, mod in list(sys.modules.items()):
        if not name.startswith("colbert.") or name.startswith("colbert.tap") or mod is None:
            continue
        for attr, orig in originals.items():
            if getattr(mod, attr, None) is orig:
                setattr(mod, attr, replacements[attr])
                patched.append(f"{name}.{attr}")
    ci._tap_session = lambda config, index_path: contextlib.nullcontext()
    patched.append("colbert.indexing.collection_indexer._tap_session")
    # Nothing in the indexing path may still reach the originals.
    for name, mod in sys.modules.items():
        if name.startswith("colbert.") and not name.startswith("colbert.tap") and mod is not None:
            for attr, orig in originals.items():
                assert getattr(mod, attr, None) is not orig, f"{name}.{attr} still bound"
    return patched


def child(args) -> None:
    patched = remove_tap_code_path() if args.child == "no-tap" else []
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    with open(args.collection, encoding="utf-8") as f:
        passages = [line.rstrip("\n").split("\t")[1] for _, line in zip(range(args.n), f)]
    import torch

    torch.set_num_threads(args.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    with Run().context(RunConfig(nranks=1, experiment="tapbench", root=args.root)):
        config = ColBERTConfig(checkpoint=args.checkpoint, **CONFIG_A)
        path = Indexer(checkpoint=args.checkpoint, config=config).index(name="bench", collection=passages,
                                                                        overwrite=True)
    print(json.dumps({"index_path": path, "seconds": time.perf_counter() - t0,
                      "cpu_seconds": time.process_time() - c0, "patched": patched}))


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="passages to index")
    ap.add_argument("--rounds", type=int, default=3, help="runs per mode, alternating")
    ap.add_argument("--collection", default=DEFAULT_TSV)
    ap.add_argument("--checkpoint", help="ColBERT checkpoint (default: MiniLM + seeded 96-dim projection)")
    ap.add_argument("--workdir", help="where indexes go (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/OpenMP threads per run (default 1: on a shared machine CPU time is then "
                         "close to the work done, while wall time mostly measures other jobs)")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0

    sys.path.insert(0, os.path.join(REPO, "tests", "parity"))
    from index_diff import diff_indexes

    work = args.workdir or tempfile.mkdtemp(prefix="colbert-tap-tapbench-")
    ckpt = benchmark_checkpoint(work, args.checkpoint)
    times = {m: [] for m in MODES}
    cpu = {m: [] for m in MODES}
    paths, tap_bytes, patched = {}, [], []
    loads = [os.getloadavg()]
    for r in range(args.rounds):
        for mode in MODES:
            env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
            env.pop("COLBERT_TAP", None)
            env.pop("COLBERT_TAP_DIR", None)
            tap_dir = None
            if mode == "save":
                tap_dir = tempfile.mkdtemp(prefix="tap-", dir=work)
                env["COLBERT_TAP"] = f"save:{tap_dir}"
                env["COLBERT_TAP_QUIET"] = "1"
            root = os.path.join(work, mode)
            os.makedirs(root, exist_ok=True)
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
            cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--n", str(args.n),
                   "--threads", str(args.threads),
                   "--collection", args.collection, "--checkpoint", ckpt, "--root", root]
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-5000:], file=sys.stderr)
                raise SystemExit(f"{mode} run failed (exit {proc.returncode})")
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            times[mode].append(out["seconds"])
            cpu[mode].append(out["cpu_seconds"])
            paths[mode] = out["index_path"]
            if mode == "no-tap":
                patched = out["patched"]
            if tap_dir:
                tap_bytes.append(folder_bytes(tap_dir))
                with open(os.path.join(tap_dir, "manifest.json")) as f:
                    n_artifacts = len(json.load(f)["artifacts"])
                shutil.rmtree(tap_dir)
            loads.append(os.getloadavg())
            print(f"round {r + 1}: {mode:7s} wall {out['seconds']:7.2f} s  CPU {out['cpu_seconds']:7.2f} s  "
                  f"load {loads[-1][0]:.2f}", flush=True)

    problems = []
    for mode in ("off", "save"):
        problems += [f"{mode} vs no-tap: {p}" for p in diff_indexes(paths[mode], paths["no-tap"])]
    load1 = [x[0] for x in loads]
    mib = statistics.median(tap_bytes) / 2**20
    print(f"\nno-tap patched {len(patched)} references: {', '.join(patched)}")
    print(f"{args.n:,} passages, config A, {args.threads} thread(s), {args.rounds} round(s) per mode; "
          f"1-min load average {min(load1):.2f}-{max(load1):.2f}; save folder {mib:.1f} MiB, {n_artifacts} artifacts")
    md = ["| measure | no-tap median | off median | save median | off / no-tap (target <= 1.01) "
          "| save / off (target <= 1.10) |", "|---|---:|---:|---:|---:|---:|"]
    for label, data in (("CPU s (process_time)", cpu), ("wall s", times)):
        med = {m: statistics.median(v) for m, v in data.items()}
        r_off, r_save = med["off"] / med["no-tap"], med["save"] / med["off"]
        print(f"{label}:")
        for m in MODES:
            print(f"  {m:7s} runs {', '.join(f'{t:.2f}' for t in data[m])}  median {med[m]:.2f}")
        print(f"  off / no-tap = {r_off:.3f} ({'met' if r_off <= 1.01 else 'NOT met'}), "
              f"save / off = {r_save:.3f} ({'met' if r_save <= 1.10 else 'NOT met'})")
        md.append(f"| {label} | {med['no-tap']:.2f} | {med['off']:.2f} | {med['save']:.2f} | "
                  f"**{r_off:.3f}** | **{r_save:.3f}** |")
    print(f"indexes identical (off, save vs no-tap): {'yes' if not problems else 'NO'}")
    for p in problems:
        print(f"  {p}")
    print("\nMarkdown:\n")
    print("\n".join(md))
    print("\n| mode | CPU s per run | wall s per run |\n|---|---|---|")
    for m in MODES:
        print(f"| {m} | {', '.join(f'{t:.2f}' for t in cpu[m])} | {', '.join(f'{t:.2f}' for t in times[m])} |")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
