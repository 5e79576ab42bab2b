"""Search latency: colbert-tap vs colbert-ai 0.2.22 on one index, the 93 Vaswani queries, in ONE invocation.

* One index of the first N Vaswani passages (default 1,000), built once by colbert-tap in the parity venv
  (parity config B: nbits=2, upstream defaults otherwise) and cached under --workdir; our indexes are
  bit-identical to colbert-ai's (tests/parity), so the same index serves both sides.
* Both sides run in their parity venvs (same torch, transformers, tokenizers), as persistent worker
  processes (benchmarks/search_latency_worker.py) that build a Searcher and answer every query once as a
  warm-up (so both sides' C++ extensions are built and loaded) before any timing. Then timed rounds
  alternate between the sides (who goes first alternates too); a round answers all 93 queries
  (--interleave query alternates query by query instead). A query is answered the way `Searcher.search(text, k)`
  does it, `encode(text)` then `dense_search(Q, k)`, timed apart and together. While one side runs the
  other waits on its stdin, so they never compete for the CPU. torch threads: 1 on both sides by default.
* Cold start (--cold, on by default): a fresh process from interpreter start to the first answered
  query, with an empty extension cache: colbert-ai with an empty TORCH_EXTENSIONS_DIR (it JIT-builds four
  extensions), colbert-tap as installed (the ahead-of-time module colbert._ext_cpu, compiled at install
  time) with an empty COLBERT_EXTENSIONS_CACHE, and colbert-tap without the AOT module (a copy of the
  package without it: the JIT build a `pip install` without torch at build time would leave to the first
  use; its compile time approximates the install-time compile). Each is then repeated with the cache it
  filled (a restart).

    python benchmarks/search_latency.py                  # 1,000 passages, k=10, 5 rounds per side
    python benchmarks/search_latency.py --k 100 --rounds 3 --no-cold
    python benchmarks/search_latency.py --busy 2 --threads 2 --no-cold   # beside 2 CPU-bound spinners

--busy N starts N CPU-bound processes (a pure-Python spin loop each) before the workers and stops them
at the end, so both sides are timed on a loaded machine the same way; the load average is reported.
--index/--checkpoint reuse an existing index instead of building the N-passage one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "parity"))
sys.path.insert(0, REPO)

from venvs import ensure_venv, run_in  # noqa: E402

from common import benchmark_checkpoint, cpu_name, load_text  # noqa: E402

WORKER = os.path.join(REPO, "benchmarks", "search_latency_worker.py")
INDEX_SCRIPT = os.path.join(REPO, "tests", "parity", "index_script.py")
VASWANI = os.path.join(REPO, "colbert", "data", "vaswani")


def side_env(ours: bool, pythonpath: str = REPO, **extra) -> dict:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("COLBERT_TAP", None)  # a tap session would time artifact writes, not search
    if ours:
        env["PYTHONPATH"] = pythonpath
    else:
        env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def ensure_index(workdir: str, n: int, ours_py: str, checkpoint: str | None) -> tuple[str, str]:
    """(index path, checkpoint) of the cached N-passage index, building both if missing."""
    record = os.path.join(workdir, f"index-{n}.json")
    if os.path.exists(record):
        with open(record) as f:
            saved = json.load(f)
        if os.path.exists(os.path.join(saved["index_path"], "metadata.json")) and os.path.isdir(saved["checkpoint"]):
            return saved["index_path"], saved["checkpoint"]
    checkpoint = benchmark_checkpoint(workdir, checkpoint)
    print(f"building the {n}-passage index (once; cached in {workdir}) ...", file=sys.stderr, flush=True)
    out = run_in(ours_py, INDEX_SCRIPT, checkpoint, os.path.join(VASWANI, "collection.tsv"), str(n),
                 os.path.join(workdir, "root"), "B", ours=True, cwd=workdir)
    index_path = json.loads(out.strip().splitlines()[-1])["index_path"]
    with open(record, "w") as f:
        json.dump({"index_path": index_path, "checkpoint": checkpoint, "n": n, "config": "parity B (nbits=2)"}, f)
    return index_path, checkpoint


SPIN = "import signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\nx = 0\nwhile True:\n    x += 1\n"


def start_busy(n: int) -> list:
    """n CPU-bound spinners: the neighbour load of a shared server, the same for both sides."""
    return [subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]


def stop_busy(procs: list) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


class Worker:
    def __init__(self, name, python, env, args, log_path):
        self.name = name
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([python, WORKER, "serve", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env, text=True, cwd=os.path.dirname(log_path))
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"{self.name} worker exited ({self.proc.returncode}); see {self.log.name}")
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError(f"{self.name} worker: {msg['error']}")
        return msg

    def round(self) -> list[dict]:
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        return self._read()["answers"]

    def query(self, i: int) -> dict:
        self.proc.stdin.write(f"query {i}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


def percentile(values, q):
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(latencies):
    return {"median_ms": 1000 * statistics.median(latencies), "p90_ms": 1000 * percentile(latencies, 0.9),
            "mean_ms": 1000 * statistics.fmean(latencies), "n": len(latencies)}


def cold_start(name, python, env, args, cwd) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([python, WORKER, "cold", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"cold start of {name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def package_copy_without_aot(dest: str) -> str:
    """colbert/ and csrc/ copied without compiled modules: what an install without the AOT build holds."""
    shutil.copytree(os.path.join(REPO, "colbert"), os.path.join(dest, "colbert"),
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "experiments"))
    shutil.copytree(os.path.join(REPO, "csrc"), os.path.join(dest, "csrc"),
                    ignore=shutil.ignore_patterns("__pycache__", "build"))
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="passages indexed (default 1000)")
    ap.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per side, alternating (default 5)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads on both sides (default 1: one-thread latency is the figure that stays "
                         "meaningful on a shared, loaded machine)")
    ap.add_argument("--workdir", default=os.path.join(REPO, "experiments", "search_latency"))
    ap.add_argument("--checkpoint", help="ColBERT checkpoint (default: MiniLM + seeded 96-dim projection)")
    ap.add_argument("--interleave", choices=["round", "query"], default="round",
                    help="round (default): each side answers all queries in turn, who goes first alternating; "
                         "query: the sides alternate query by query (load drift cancels better, but each query "
                         "then starts with caches the other process has cooled)")
    ap.add_argument("--no-cold", dest="cold", action="store_false", help="skip the cold-start measurements")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="run N CPU-bound spinner processes beside both sides for the whole timed part "
                         "(default 0: a quiet machine)")
    ap.add_argument("--index", help="an existing index folder to search (with --checkpoint) instead of "
                                    "building the --n passage one")
    ap.add_argument("--json", help="also write all figures to this file")
    args = ap.parse_args(argv)

    os.makedirs(args.workdir, exist_ok=True)
    oracle_py, ours_py = ensure_venv("oracle"), ensure_venv("ours-tf457")
    if args.index:
        if not args.checkpoint:
            ap.error("--index needs --checkpoint")
        index_path, checkpoint = os.path.abspath(args.index), os.path.abspath(args.checkpoint)
    else:
        index_path, checkpoint = ensure_index(args.workdir, args.n, ours_py, args.checkpoint)
    queries = os.path.join(VASWANI, "queries.tsv")
    wargs = [index_path, checkpoint, queries, str(args.k), str(args.threads)]
    busy = start_busy(args.busy)
    if busy:
        time.sleep(5)  # let the load average start to show the spinners
    load_before = load_text()

    print(f"warming up both sides on {index_path} ...", file=sys.stderr, flush=True)
    sides = {}
    try:
        # One at a time, so neither side's warm-up (or extension build) overlaps the other's.
        sides["colbert-ai"] = Worker("colbert-ai", oracle_py, side_env(False), wargs,
                                     os.path.join(args.workdir, "worker-colbert-ai.log"))
        sides["colbert-tap"] = Worker("colbert-tap", ours_py, side_env(True), wargs,
                                      os.path.join(args.workdir, "worker-colbert-tap.log"))
        parts = ("total_s", "encode_s", "rank_s")
        lat = {name: {p: [] for p in parts} for name in sides}
        round_medians = {name: [] for name in sides}
        results = {name: [] for name in sides}
        order = list(sides)
        nq = sides[order[0]].ready["queries"]
        for r in range(args.rounds):
            this_round = {name: [] for name in sides}

            def record(name, msg):
                for p in parts:
                    lat[name][p].append(msg[p])
                this_round[name].append(msg["total_s"])
                if r == 0:
                    results[name].append(msg["pids"])

            if args.interleave == "query":
                for i in range(nq):
                    for name in (order if (r + i) % 2 == 0 else order[::-1]):
                        record(name, sides[name].query(i))
            else:
                for name in (order if r % 2 == 0 else order[::-1]):
                    for msg in sides[name].round():
                        record(name, msg)
            for name in order:
                round_medians[name].append(1000 * statistics.median(this_round[name]))
            print(f"round {r + 1}/{args.rounds}: median ms " + ", ".join(
                f"{name} {round_medians[name][-1]:.2f}" for name in order) + f" (load {load_text()})",
                file=sys.stderr, flush=True)
    finally:
        for w in sides.values():
            w.close()
        load_after = load_text()
        stop_busy(busy)

    stats = {name: {p: summarize(v) for p, v in per.items()} for name, per in lat.items()}
    ratio = {p: {key: stats["colbert-tap"][p][key] / stats["colbert-ai"][p][key]
                 for key in ("median_ms", "p90_ms", "mean_ms")} for p in parts}
    same = sum(a == b for a, b in zip(results["colbert-tap"], results["colbert-ai"]))

    cold = {}
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="colbert-tap-cold-") as tmp:
            torch_ext, ours_cache, jit_cache = (os.path.join(tmp, d) for d in ("torch_ext", "ours_cache", "jit_cache"))
            for d in (torch_ext, ours_cache, jit_cache):
                os.makedirs(d)
            no_aot = package_copy_without_aot(os.path.join(tmp, "no_aot"))
            runs = [
                ("colbert-ai, empty TORCH_EXTENSIONS_DIR", oracle_py, side_env(False, TORCH_EXTENSIONS_DIR=torch_ext)),
                ("colbert-ai, restart (extensions cached)", oracle_py, side_env(False, TORCH_EXTENSIONS_DIR=torch_ext)),
                ("colbert-tap as installed (AOT), empty COLBERT_EXTENSIONS_CACHE", ours_py,
                 side_env(True, COLBERT_EXTENSIONS_CACHE=ours_cache)),
                ("colbert-tap without AOT module, empty cache (JIT build)", ours_py,
                 side_env(True, pythonpath=no_aot, COLBERT_EXTENSIONS_CACHE=jit_cache)),
                ("colbert-tap without AOT module, restart (JIT cache filled)", ours_py,
                 side_env(True, pythonpath=no_aot, COLBERT_EXTENSIONS_CACHE=jit_cache)),
            ]
            for label, python, env in runs:
                print(f"cold start: {label} ...", file=sys.stderr, flush=True)
                cold[label] = cold_start(label, python, env, wargs, tmp)

    print(f"\n## Search latency: colbert-tap vs colbert-ai 0.2.22\n")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {args.threads}, "
          f"{args.busy} CPU-bound spinner process(es) beside both sides; "
          f"load average (1/5/15 min) {load_before} before, {load_after} after the timed rounds. "
          f"torch {sides['colbert-tap'].ready['torch']} on both sides.")
    where = (f"{index_path} (given with --index)" if args.index else
             f"first {args.n:,} Vaswani passages, nbits=2 (parity config B), built by colbert-tap "
             f"(bit-identical to colbert-ai's)")
    print(f"Index: {where}. Queries: the 93 Vaswani queries, k={args.k}, "
          f"{args.rounds} rounds per side, alternating by {args.interleave}, after a full warm-up round.\n")
    print("| side | median ms/query | p90 ms | mean ms | encode median ms | ranking median ms | queries timed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in ("colbert-ai", "colbert-tap"):
        t, e, r = (stats[name][p] for p in parts)
        print(f"| {name} | {t['median_ms']:.2f} | {t['p90_ms']:.2f} | {t['mean_ms']:.2f} | {e['median_ms']:.2f} | "
              f"{r['median_ms']:.2f} | {t['n']} |")
    t, e, r = (ratio[p] for p in parts)
    print(f"| **ratio colbert-tap / colbert-ai** | **{t['median_ms']:.2f}** | {t['p90_ms']:.2f} | {t['mean_ms']:.2f} | "
          f"{e['median_ms']:.2f} | {r['median_ms']:.2f} | |")
    print(f"\nPer-round medians (ms): colbert-ai {', '.join(f'{m:.2f}' for m in round_medians['colbert-ai'])}; "
          f"colbert-tap {', '.join(f'{m:.2f}' for m in round_medians['colbert-tap'])}.")
    print(f"Same top-{args.k} pids in the same order on both sides: {same}/{nq} queries.")
    if cold:
        print("\n| fresh process to first answered query | wall s | import s | Searcher() s | first query s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for label, c in cold.items():
            if c.get("extensions"):
                label = f"{label} [kernels: {c['extensions']}]"
            print(f"| {label} | {c['wall_s']:.1f} | {c['import_s']:.1f} | {c['searcher_s']:.1f} | "
                  f"{c['first_query_s']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"stats": stats, "ratio": ratio, "round_medians_ms": round_medians, "same_results": same,
                       "cold": cold, "cpu": cpu_name(), "cpus": os.cpu_count(), "threads": args.threads,
                       "busy": args.busy, "load_before": load_before, "load_after": load_after, "n": args.n, "k": args.k}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
