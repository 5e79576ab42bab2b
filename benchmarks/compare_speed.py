"""Speed and memory of `colbert-tap compare` on two real indexes of >= 20,000 passages.

`colbert-tap compare A B` runs in a child process; the script reports its wall time and its peak RSS
(ru_maxrss of that child alone, from os.wait4), per output format, over --repeats runs.

A and B: pass --a/--b (index folders, tap folders, or index folders holding tap/). Otherwise both are
built here by real indexing with `colbert-tap index` (one rank, the MiniLM checkpoint with a seeded
96-dim projection): the shipped Vaswani collection (11,429 abstracts) repeated, each repeat's
passages suffixed " [copy k]" so that no two passages are the same text, up to --n passages
(default 20,000); doc_maxlen 128, nbits 2, kmeans_niters 4; A with index_bsize 32, B with
index_bsize 16 (encode groups of 1,600 vs 800 passages, so different padding widths in the encoder).
Building them took 1,418 s (under heavy load) and 710 s (quiet) of wall time on a 2-core machine; the
indexes are kept in --workdir and reused on the next run. Results: docs/benchmarks.md, "Compare speed".

    python benchmarks/compare_speed.py                         # build (once) and measure
    python benchmarks/compare_speed.py --a IDX_A --b IDX_B     # measure given runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from common import benchmark_checkpoint, cpu_name  # noqa: E402  (benchmarks/ is sys.path[0])

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VASWANI = os.path.join(REPO, "colbert", "data", "vaswani", "collection.tsv")


def colbert_tap_cmd() -> list[str]:
    exe = shutil.which("colbert-tap", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "colbert.cli"]


def run_measured(cmd: list[str], env=None) -> tuple[int, float, int, str]:
    """(exit code, wall seconds, peak RSS bytes of the child alone, stderr tail)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_maxrss * 1024, err[-2000:]  # ru_maxrss is KiB on Linux


def make_collection(path: str, n: int) -> None:
    with open(VASWANI, encoding="utf-8") as f:
        base = [line.rstrip("\n").split("\t")[1] for line in f if line.strip()]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        for pid in range(n):
            k, text = divmod(pid, len(base))
            out.write(f"{pid}\t{base[text]}{f' [copy {k + 1}]' if k else ''}\n")
    os.replace(tmp, path)


def build(work: str, n: int, index_bsize: int, name: str, ckpt: str) -> tuple[str, float]:
    path = os.path.join(work, "experiments", "default", "indexes", name)
    if os.path.exists(os.path.join(path, "metadata.json")):
        return path, float("nan")
    tsv = os.path.join(work, f"collection_{n}.tsv")
    if not os.path.exists(tsv):
        make_collection(tsv, n)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("COLBERT_TAP", None)
    cmd = colbert_tap_cmd() + ["index", "--checkpoint", ckpt, "--collection", tsv, "--root",
                               os.path.join(work, "experiments"), "--name", name, "--overwrite",
                               "--doc-maxlen", "128", "--nbits", "2", "--dim", "96", "--kmeans-niters", "4",
                               "--index-bsize", str(index_bsize)]
    print(f"building {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=work)
    return path, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", help="first run (skip building)")
    ap.add_argument("--b", help="second run (skip building)")
    ap.add_argument("--n", type=int, default=20_000, help="passages per built index")
    ap.add_argument("--workdir", default=os.path.join(REPO, "experiments", "compare_speed"),
                    help="where built indexes go (kept and reused)")
    ap.add_argument("--checkpoint", help="ColBERT checkpoint (default: MiniLM + seeded 96-dim projection)")
    ap.add_argument("--formats", default="table,markdown,json")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)

    build_s = {}
    if args.a and args.b:
        a, b = args.a, args.b
    else:
        os.makedirs(args.workdir, exist_ok=True)
        ckpt = benchmark_checkpoint(args.workdir, args.checkpoint)
        a, build_s["A"] = build(args.workdir, args.n, 32, f"vaswani{args.n}.bs32", ckpt)
        b, build_s["B"] = build(args.workdir, args.n, 16, f"vaswani{args.n}.bs16", ckpt)

    def describe(p):
        meta_path = os.path.join(p, "metadata.json")
        if not os.path.exists(meta_path):
            return p
        with open(meta_path) as f:
            m = json.load(f)
        n = sum(len(json.load(open(os.path.join(p, f"doclens.{i}.json")))) for i in range(m["num_chunks"]))
        size = sum(os.path.getsize(os.path.join(d, x)) for d, _, xs in os.walk(p) for x in xs)
        return (f"{p}: {n:,} passages, {m['num_embeddings']:,} embeddings, {m['num_partitions']:,} centroids, "
                f"{m['num_chunks']} chunk(s), {size / 2**20:.1f} MiB")

    for label, p in (("A", a), ("B", b)):
        built = build_s.get(label)
        print(f"{label}: {describe(p)}" + (f" (built in {built:.0f} s)" if built is not None and built == built else ""))
    rows, loads = [], [os.getloadavg()]
    for fmt in args.formats.split(","):
        walls, rss, codes = [], [], set()
        for _ in range(args.repeats):
            out = os.path.join(args.workdir if not (args.a and args.b) else "/tmp", f"compare_out.{fmt}")
            code, wall, peak, err = run_measured(colbert_tap_cmd() + ["compare", a, b, "--format", fmt,
                                                                      "--no-progress", "-o", out])
            if code == 2:
                print(err, file=sys.stderr)
                raise SystemExit(f"compare failed (exit 2) with --format {fmt}")
            walls.append(wall)
            rss.append(peak)
            codes.add(code)
            loads.append(os.getloadavg())
            print(f"  --format {fmt}: {wall:.2f} s, peak RSS {peak / 2**20:.0f} MiB, exit {code}, "
                  f"load {loads[-1][0]:.2f}", flush=True)
        rows.append((fmt, walls, statistics.median(walls), max(rss), codes))
    load1 = [x[0] for x in loads]
    print(f"\nMachine: {cpu_name()}, {os.cpu_count()} cores; 1-min load average {min(load1):.2f}-{max(load1):.2f}")
    print("\n| format | runs (s) | median s | peak RSS (MiB) | exit |\n|---|---|---:|---:|---|")
    for fmt, walls, med, peak, codes in rows:
        print(f"| {fmt} | {', '.join(f'{w:.2f}' for w in walls)} | {med:.2f} | {peak / 2**20:.0f} | "
              f"{','.join(map(str, sorted(codes)))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
