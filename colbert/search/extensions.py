"""colbert-tap search kernels: compiled when possible, pure torch otherwise.

Functions (all tensors; "ids" may be int32 or int64; "offsets" are int64 and
may be given as N segment starts or as the N+1 boundaries of a cumulative sum):

  segmented_maxsim(scores, lengths) -> float32 [ndocs]
      scores float32 [rows, nq] (doc-token x query-token similarities, the
      documents' rows consecutive), lengths int64 [ndocs] summing to rows.
      Per document: sum over query tokens of max(0, max over its rows), the
      sum being torch's over the [ndocs, nq] maxima (upstream's kernel ends the
      same way), so the CPU Searcher's exact scores, which come from here,
      equal colbert-ai's bit for bit.  A NaN similarity makes its score NaN.

  column_argmax(scores) -> int64 [n]
      scores float32 [K, n] (centroids @ embeddings.T): the row of each
      column's maximum, equal to scores.max(dim=0).indices on the CPU (first
      maximum wins; a column with NaNs gets its first NaN).  The residual
      codec's nearest centroid (ResidualCodec.compress_into_codes, CPU),
      about 11x faster than torch's strided reduction at K = 8,192.

  segmented_lookup(packed, offsets, lengths, ids) -> [sum(lengths[ids]), *packed.shape[1:]]
      Concatenation, in the order of ids, of rows offsets[i] .. offsets[i]+lengths[i]-1
      of packed (any dtype; u8/i32/i64/f32/f16 are what the index uses).

  filter_pids(pids, centroid_scores, codes, doclens, offsets, keep, ndocs) -> int32 [<= ndocs//4]
      PLAID centroid-only pruning: pass A scores each candidate pid with the
      centroids where keep (bool [K]) is set, per-token maxima starting at
      -9999, and keeps the ndocs best (ties: larger pid first); pass B rescores
      those with all centroids and keeps ndocs // 4.  Best first.
      centroid_scores float32 [K, nq]; codes int32/int64 [E]; doclens int64 [N].

  decompress_residuals(pids, doclens, offsets, codes, residuals, centroids, bucket_weights, nbits)
      -> float32 [sum(doclens[pids]), dim]: centroids[code] + bucket_weights[bucket]
      for every stored embedding of each pid, pid order.  residuals uint8
      [E, dim*nbits/8] (same row count as codes), centroids float32 [K, dim],
      bucket_weights float32 [2**nbits], nbits in {1, 2, 4, 8}.  Not normalised.

  decompress_rows(codes, residuals, centroids, bucket_weights, nbits) -> [n, dim]
      The same per row, without the pid lookup; the output has the centroids'
      dtype.  CUDA tensors (float16 or float32) use the CUDA kernel, whose
      float16 result is one rounding of weight + centroid per element.  Callers:
      the GPU search path (IndexScorer.decompress) and, on the CPU, the exhaustive
      search (bit-equal to ResidualCodec.decompress, about 7x faster).

  packbits(bits) -> uint8 [numel/8]: 0/1 bytes (or bool) -> packed bytes,
      first bit most significant (numpy.packbits order).  CUDA kernel for CUDA
      tensors, torch otherwise.

  extension_status() -> dict: which backend serves the CPU and CUDA kernels
      ("aot", "jit" or "torch") and why; for an ahead-of-time CUDA module also
      the architectures it was compiled for ("cuda_archs").  Loads the
      extensions if needed.

Every function checks its inputs and raises (RuntimeError from the compiled
path; TypeError/ValueError/IndexError from the torch path) on a wrong dtype,
shape or an out-of-range index instead of reading out of bounds.

Where the compiled code comes from, tried in order on first use:
  1. an ahead-of-time build, colbert._ext_cpu / colbert._ext_cuda, made by
     `pip install --no-build-isolation .` (setup.py compiles them when torch is
     importable at build time); used only if it was built against this torch
     and, when the sources are at hand, from these sources;
  2. a JIT build with torch.utils.cpp_extension.load (ninja) of the sources in
     csrc/ (or colbert/_csrc/ in an installed wheel), cached once in
     $COLBERT_EXTENSIONS_CACHE or ~/.cache/colbert-tap/extensions/<key>/, where
     the key names the torch version, the Python version and a hash of the
     sources and flags; a later process imports the cached module directly;
  3. the pure-torch code in colbert.search.reference, with one warning.
CUDA kernels are only considered when torch sees a GPU.

Environment: COLBERT_EXTENSIONS=off forces pure torch; =require raises instead
of falling back; COLBERT_EXTENSIONS_VERBOSE=1 shows the compiler output;
MAX_JOBS limits parallel compile jobs (read by torch).
"""

import importlib
import importlib.machinery
import importlib.util
import os
import runpy
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import torch

from colbert.utils.env import env_flag

from . import reference

# Rough wall-clock of a first build with one compile job (measured: ~135 s for
# the CPU module on a busy 2-core machine), to set expectations.
_BUILD_ESTIMATE_S = {"cpu": 120, "cuda": 180}

_lock = threading.RLock()
_modules = {}  # kind -> (module or None, status dict)
_warned = set()


# ----------------------------------------------------------------------------
# Configuration


def _mode():
    value = os.environ.get("COLBERT_EXTENSIONS", "").strip().lower()
    if value in ("off", "0", "false", "no", "torch"):
        return "off"
    if value in ("require", "required", "strict"):
        return "require"
    return "auto"


def cache_root():
    env = os.environ.get("COLBERT_EXTENSIONS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "colbert-tap" / "extensions"


def _find_csrc():
    """The C++ sources: csrc/ next to the package in a checkout or editable
    install, colbert/_csrc/ inside an installed wheel."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "_csrc", package_dir.parent / "csrc"):
        if (candidate / "manifest.py").is_file():
            return candidate
    return None


def _manifest(csrc):
    return runpy.run_path(str(csrc / "manifest.py"))


def _build_key(source_hash):
    tag = torch.__version__.replace("+", "_")
    return f"torch{tag}-py{sys.version_info[0]}{sys.version_info[1]}-{source_hash}"


# ----------------------------------------------------------------------------
# Loading


def _import_aot(kind, manifest, source_hash):
    """-> (module or None, reason it was not used or None)."""
    try:
        module = importlib.import_module(manifest["AOT_MODULES"][kind])
    except ModuleNotFoundError:
        return None, None
    except Exception as exc:  # e.g. undefined symbols: built against another torch
        return None, f"ahead-of-time module failed to import: {exc}"
    built_for = getattr(module, "TORCH_VERSION", "")
    if built_for != torch.__version__:
        return None, f"ahead-of-time module was built for torch {built_for!r}, not {torch.__version__}"
    if source_hash is not None and getattr(module, "SOURCE_HASH", "") != source_hash:
        return None, "ahead-of-time module is stale (sources changed since it was built)"
    return module, None


def _import_file(name, path):
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _built_library(build_dir, name):
    for suffix in importlib.machinery.EXTENSION_SUFFIXES + [".so", ".pyd"]:
        path = build_dir / (name + suffix)
        if path.is_file():
            return path
    return None


class _Progress:
    """One line on stderr while a build runs, a dot every few seconds."""

    def __init__(self, kind):
        self.kind = kind
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._dots, daemon=True)

    def _dots(self):
        while not self.done.wait(5.0):
            sys.stderr.write(".")
            sys.stderr.flush()

    def __enter__(self):
        label = "C++" if self.kind == "cpu" else "CUDA"
        sys.stderr.write(f"building colbert-tap {label} extensions "
                         f"(once, ~{_BUILD_ESTIMATE_S[self.kind]} s)...")
        sys.stderr.flush()
        self.start = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.done.set()
        self.thread.join()
        took = time.monotonic() - self.start
        sys.stderr.write(f" {'done' if exc_type is None else 'failed'} ({took:.0f} s)\n")
        sys.stderr.flush()
        return False


def _jit(kind, csrc, manifest, source_hash):
    """-> module; raises on failure.  The ".complete" marker is written only
    after a successful build and import, so a later process can import the
    library straight from the cache (no ninja, no compiler needed then)."""
    name = manifest["JIT_MODULES"][kind]
    build_dir = cache_root() / _build_key(source_hash) / kind
    marker = build_dir / ".complete"
    if marker.is_file():
        library = _built_library(build_dir, name)
        if library is not None:
            try:
                return _import_file(name, library)
            except ImportError:
                marker.unlink()  # damaged cache entry: rebuild below

    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        raise RuntimeError("ninja is not installed (pip install ninja)")
    build_dir.mkdir(parents=True, exist_ok=True)
    sources = manifest["CPU_SOURCES"] if kind == "cpu" else manifest["CUDA_SOURCES"]
    verbose = env_flag("COLBERT_EXTENSIONS_VERBOSE")
    with _Progress(kind):
        module = cpp_extension.load(
            name=name,
            sources=[str(csrc / s) for s in sources],
            extra_cflags=list(manifest["CXX_FLAGS"]),
            extra_cuda_cflags=list(manifest["NVCC_FLAGS"]) if kind == "cuda" else None,
            extra_include_paths=[str(csrc)],
            build_directory=str(build_dir),
            with_cuda=(kind == "cuda"),
            verbose=verbose,
        )
    marker.write_text(f"{name} built from {csrc} for torch {torch.__version__}\n")
    return module


def _cuda_usable():
    return torch.version.cuda is not None and torch.cuda.is_available()


def _load(kind):
    """-> (module or None, status dict).  Never raises unless COLBERT_EXTENSIONS=require."""
    mode = _mode()
    status = {"backend": "torch", "module": None, "reason": None}
    if mode == "off":
        status["reason"] = "COLBERT_EXTENSIONS=off"
        return None, status
    if kind == "cuda" and not _cuda_usable():
        status["reason"] = "no CUDA device visible to torch"
        return None, status

    csrc = _find_csrc()
    manifest = _manifest(csrc) if csrc is not None else None
    source_hash = manifest["source_hash"](str(csrc), kind) if manifest is not None else None

    aot_manifest = manifest or {"AOT_MODULES": {"cpu": "colbert._ext_cpu", "cuda": "colbert._ext_cuda"}}
    module, aot_reason = _import_aot(kind, aot_manifest, source_hash)
    if module is not None:
        status.update(backend="aot", module=getattr(module, "__file__", None))
        if kind == "cuda":  # what setup.py compiled for (TORCH_CUDA_ARCH_LIST, '_' for ';')
            status["cuda_archs"] = getattr(module, "CUDA_ARCHS", "") or None
        return module, status

    if csrc is None:
        failure = "the C++ sources (csrc/) are not installed with this copy of colbert"
        log = None
    else:
        try:
            module = _jit(kind, csrc, manifest, source_hash)
            status.update(backend="jit", module=getattr(module, "__file__", None), reason=aot_reason)
            return module, status
        except Exception as exc:
            failure = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log = cache_root() / _build_key(source_hash) / kind / "build-error.log"
            try:
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(traceback.format_exc())
            except OSError:
                log = None

    reason = failure if aot_reason is None else f"{aot_reason}; {failure}"
    status["reason"] = reason
    if mode == "require":
        raise RuntimeError(f"colbert-tap {kind} extensions unavailable (COLBERT_EXTENSIONS=require): {reason}")
    if kind not in _warned:
        _warned.add(kind)
        where = f" Build log: {log}." if log is not None else ""
        label = "C++" if kind == "cpu" else "CUDA"
        warnings.warn(
            f"colbert-tap: {label} extensions unavailable ({reason}); using the pure-torch "
            f"fallback, which is much slower for search. For the fast path install ninja and a "
            f"C++ compiler{' and a CUDA toolkit matching torch' if kind == 'cuda' else ''} "
            f"(`pip install ninja`), or build ahead of time with "
            f"`pip install --no-build-isolation .`; set COLBERT_EXTENSIONS=off to silence this.{where}",
            RuntimeWarning,
            stacklevel=4,
        )
    return None, status


def _module(kind):
    entry = _modules.get(kind)
    if entry is None:
        with _lock:
            entry = _modules.get(kind)
            if entry is None:
                entry = _load(kind)
                _modules[kind] = entry
    return entry[0]


def _reset():
    """Forget loaded modules and decisions (tests switch COLBERT_EXTENSIONS)."""
    with _lock:
        _modules.clear()
        _warned.clear()


def extension_status():
    _module("cpu")
    _module("cuda")
    cpu, cuda = _modules["cpu"][1], _modules["cuda"][1]
    return {
        "backend": cpu["backend"],
        "mode": _mode(),
        "cpu": dict(cpu),
        "cuda": dict(cuda),
        "cache": str(cache_root()),
    }


# ----------------------------------------------------------------------------
# Public kernels


def _all_cpu(*tensors):
    return all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tensors)


def _all_cuda(*tensors):
    return all(isinstance(t, torch.Tensor) and t.is_cuda for t in tensors)


def segmented_maxsim(scores, lengths):
    module = _module("cpu") if _all_cpu(scores, lengths) else None
    if module is None:
        return reference.segmented_maxsim(scores, lengths)
    return module.segmented_maxsim(scores, lengths)


def column_argmax(scores):
    module = _module("cpu") if _all_cpu(scores) and scores.dtype == torch.float32 else None
    if module is None:
        return reference.column_argmax(scores)
    return module.column_argmax(scores)


def segmented_lookup(packed, offsets, lengths, ids):
    module = _module("cpu") if _all_cpu(packed, offsets, lengths, ids) else None
    if module is None:
        return reference.segmented_lookup(packed, offsets, lengths, ids)
    return module.segmented_lookup(packed, offsets, lengths, ids)


def filter_pids(pids, centroid_scores, codes, doclens, offsets, keep, ndocs):
    module = _module("cpu") if _all_cpu(pids, centroid_scores, codes, doclens, offsets, keep) else None
    if module is None:
        return reference.filter_pids(pids, centroid_scores, codes, doclens, offsets, keep, ndocs)
    return module.filter_pids(pids, centroid_scores, codes, doclens, offsets, keep, int(ndocs))


def decompress_residuals(pids, doclens, offsets, codes, residuals, centroids, bucket_weights, nbits):
    args = (pids, doclens, offsets, codes, residuals, centroids, bucket_weights)
    module = _module("cpu") if _all_cpu(*args) else None
    if module is None:
        return reference.decompress_residuals(*args, nbits)
    return module.decompress_residuals(*args, int(nbits))


def decompress_rows(codes, residuals, centroids, bucket_weights, nbits):
    args = (codes, residuals, centroids, bucket_weights)
    if _all_cuda(*args):
        module = _module("cuda")
    elif _all_cpu(*args) and centroids.dtype == torch.float32:
        module = _module("cpu")
    else:
        module = None  # float16 on CPU, or mixed devices: torch handles (or rejects) it
    if module is None:
        return reference.decompress_rows(*args, nbits)
    return module.decompress_rows(*args, int(nbits))


def packbits(bits):
    module = _module("cuda") if _all_cuda(bits) else None
    if module is None:
        return reference.packbits(bits)
    return module.packbits(bits)
