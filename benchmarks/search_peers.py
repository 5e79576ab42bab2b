"""Search against fast-plaid, same machine, same embeddings: colbert-tap's PLAID vs fast-plaid on Vaswani.

* Embeddings: our encoder (benchmark checkpoint: MiniLM + seeded 96-dim projection, doc_maxlen 256)
  encodes all 11,429 Vaswani passages in exact encode mode (the float16 chunk embeddings an index
  run compresses) and the 93 queries (32 x 96 each) once, into <workdir>/embs.pt; both engines index
  and search exactly these.
* Ours: the unchanged Indexer with its encoder replaced by a lookup into embs.pt (search_peers_worker.py
  PrecomputedEncoder), nbits=2; searched with Searcher.dense_search(Q, k=100) (upstream's k=100
  settings: ncells 2, centroid_score_threshold 0.45, ndocs 1024). End-to-end adds Searcher.encode(text).
* fast-plaid (own venv .venvs/fast-plaid: fast-plaid 1.7.0.2110 + torch 2.11.0, built on first use):
  create(nbits=2, kmeans_niters=4), searched per query with n_ivf_probe 2 / n_full_scores 1024
  ("matched") and its defaults 8 / 4096.
* Each build and each search side is its own process (peak RSS = that process's ru_maxrss). Timed
  rounds alternate sides (who goes first alternates); every query is timed alone, k=100.

    python benchmarks/search_peers.py --rounds 3 --threads 1
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "parity"))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from venvs import venvs_root  # noqa: E402

# fast-plaid's wheels are built against one torch each (the version suffix: .2110 = torch 2.11.0) and
# pin it; no wheel exists for our torch 2.13.0, so its venv carries its own torch.
FAST_PLAID_PINS = ["torch==2.11.0", "fast-plaid==1.7.0.2110", "fastkmeans==0.5.0"]


def ensure_fast_plaid_venv() -> str:
    """Path of the fast-plaid venv's python, built once under .venvs/fast-plaid."""
    digest = hashlib.sha256("\n".join(FAST_PLAID_PINS).encode()).hexdigest()[:16]
    root = os.path.join(venvs_root(), "fast-plaid")
    python = os.path.join(root, "bin", "python")
    marker = os.path.join(root, ".pins-" + digest)
    if os.path.exists(marker) and os.path.exists(python):
        return python
    os.makedirs(venvs_root(), exist_ok=True)
    with open(os.path.join(venvs_root(), ".fast-plaid.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(marker) and os.path.exists(python):
            return python
        print(f"[search_peers] building venv {root} ({' '.join(FAST_PLAID_PINS)}) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", root], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *FAST_PLAID_PINS],
                       check=True)
        open(marker, "w").close()
    return python



import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, REPO)
from common import benchmark_checkpoint, cpu_name, load_text  # noqa: E402
from search_latency import Worker, summarize  # noqa: E402

WORKER_SCRIPT = os.path.join(REPO, "benchmarks", "search_peers_worker.py")
VASWANI = os.path.join(REPO, "colbert", "data", "vaswani")


def child_env(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLBERT_TAP")}
    t = str(threads)
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=REPO, PEERS_THREADS=t, OMP_NUM_THREADS=t, MKL_NUM_THREADS=t,
               RAYON_NUM_THREADS=t)
    return env


def run_child(python, mode, workdir, *args, threads=1) -> dict:
    proc = subprocess.run([python, WORKER_SCRIPT, mode, workdir, *args], env=child_env(threads),
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"search_peers_worker {mode} failed in {python} (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class PeerWorker(Worker):
    def __init__(self, name, python, mode, args, threads, log_path):
        self.name = name
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([python, WORKER_SCRIPT, mode, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=child_env(threads), text=True)
        self.ready = self._read()

    def round(self) -> dict:
        self.proc.stdin.write("round\n")
        self.proc.stdin.flush()
        return self._read()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=os.path.join(REPO, "experiments", "search_peers"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rebuild", action="store_true", help="encode again (embs.pt is otherwise reused)")
    args = ap.parse_args(argv)
    wd = os.path.abspath(args.workdir)
    os.makedirs(wd, exist_ok=True)
    ours_py, fp_py = sys.executable, ensure_fast_plaid_venv()
    ckpt = benchmark_checkpoint(wd)
    if args.rebuild or not os.path.exists(os.path.join(wd, "embs.pt")):
        print("encoding the collection and queries (once) ...", file=sys.stderr, flush=True)
        enc = run_child(ours_py, "encode", wd, ckpt, threads=args.threads)
        with open(os.path.join(wd, "encode.json"), "w") as f:
            json.dump(enc, f)
    with open(os.path.join(wd, "encode.json")) as f:
        enc = json.load(f)
    load_before = load_text()
    builds = {"colbert-tap": run_child(ours_py, "build-ours", wd, ckpt, threads=args.threads),
              "fast-plaid": run_child(fp_py, "build-fp", wd, threads=args.threads)}
    sides = {}
    try:
        sides["colbert-tap"] = PeerWorker("colbert-tap", ours_py, "serve-ours", [wd, ckpt], args.threads,
                                          os.path.join(wd, "serve-ours.log"))
        sides["fast-plaid"] = PeerWorker("fast-plaid", fp_py, "serve-fp", [wd], args.threads,
                                         os.path.join(wd, "serve-fp.log"))
        lat, pids, peak = {}, {}, {}
        order = list(sides)
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                msg = sides[name].round()
                peak[name] = msg["peak_rss_mb"]
                for cfg, v in msg["round"].items():
                    key = (name, cfg)
                    lat.setdefault(key, []).extend(v.get("rank_s") or v["total_s"])
                    if "pids" in v:
                        pids[key] = v["pids"]
            print(f"round {r + 1}/{args.rounds} done (load {load_text()})", file=sys.stderr, flush=True)
        qids = sides["colbert-tap"].ready["qids"]
        fp_torch = sides["fast-plaid"].ready["torch"]
        loaded = {n: (s.ready["rss_before_mb"], s.ready["rss_loaded_mb"]) for n, s in sides.items()}
    finally:
        for w in sides.values():
            w.close()
    load_after = load_text()

    from colbert.evaluation import evaluate, load_qrels

    qrels = load_qrels(os.path.join(VASWANI, "qrels.tsv"))
    quality = {key: evaluate({q: [(p, i + 1, 0.0) for i, p in enumerate(pl)] for q, pl in zip(qids, pl_all)},
                             qrels, ["Recall@100", "nDCG@10"]).aggregate for key, pl_all in pids.items()}
    stats = {key: summarize(v) for key, v in lat.items()}
    ours_key = ("colbert-tap", next(c for (n, c) in pids if n == "colbert-tap"))
    base = stats[ours_key]["median_ms"]

    print("\n## Search against fast-plaid (Vaswani, same embeddings)\n")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {args.threads} thread(s) per side; load average "
          f"(1/5/15 min) {load_before} before the builds, {load_after} after the timed rounds. colbert-tap on torch "
          f"{__import__('torch').__version__}; fast-plaid 1.7.0.2110 on torch {fp_torch}. Embeddings: "
          f"{enc['docs']:,} passages, {enc['embeddings']:,} token embeddings, 93 queries x 32 tokens, dim 96 "
          f"(our encoder, once: {enc['encode_docs_s']:.0f} s for the passages). k=100, {args.rounds} rounds, "
          f"each query timed alone, sides alternating.\n")
    print("| index build from embeddings | seconds | peak RSS MB | RSS MB before the build (embeddings loaded) | centroids |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, b in builds.items():
        print(f"| {name} (nbits 2, k-means 4 iterations) | {b['build_s']:.1f} | {b['peak_rss_mb']:.0f} | "
              f"{b['rss_before_mb']:.0f} | {b['partitions']} |")
    print(f"\nratio fast-plaid / colbert-tap build time: {builds['fast-plaid']['build_s'] / builds['colbert-tap']['build_s']:.2f}\n")
    print("| search (k=100) | median ms/query | p90 ms | mean ms | ratio to colbert-tap median | Recall@100 | "
          "nDCG@10 | search process peak RSS MB (before index load) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, s in stats.items():
        name, cfg = key
        label = f"{name} end-to-end (encode + rank)" if cfg == "e2e" else f"{name} ranking, {cfg}"
        if name == "fast-plaid" and cfg in FP_SHOW:
            label += f" (n_ivf_probe {FP_SHOW[cfg][0]}, n_full_scores {FP_SHOW[cfg][1]})"
        q = quality.get(key)
        qtxt = f"{q['Recall@100']:.4f} | {q['nDCG@10']:.4f}" if q else "same as ranking | same as ranking"
        print(f"| {label} | {s['median_ms']:.2f} | {s['p90_ms']:.2f} | {s['mean_ms']:.2f} | "
              f"{s['median_ms'] / base:.2f} | {qtxt} | {peak[name]:.0f} ({loaded[name][0]:.0f}) |")
    with open(os.path.join(wd, "results.json"), "w") as f:
        json.dump({"builds": builds, "stats": {f"{a}|{b}": v for (a, b), v in stats.items()},
                   "quality": {f"{a}|{b}": v for (a, b), v in quality.items()}, "load_before": load_before,
                   "load_after": load_after, "threads": args.threads}, f, indent=2)
    return 0


FP_SHOW = {"matched": (2, 1024), "defaults": (8, 4096)}

if __name__ == "__main__":
    if sys.argv[1:] == ["--venv-only"]:
        print(ensure_fast_plaid_venv())
        sys.exit(0)
    sys.exit(main())
