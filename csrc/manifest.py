"""What the colbert-tap extensions are built from, shared by setup.py (ahead of
time) and colbert/search/extensions.py (JIT).  Standard library only: setup.py
must be able to run it in a build environment that has no torch.

Two modules:
  cpu  -> colbert._ext_cpu  (ahead of time) / colbert_tap_cpu  (JIT)
  cuda -> colbert._ext_cuda (ahead of time) / colbert_tap_cuda (JIT), only with a CUDA torch
"""

import hashlib
import os

CPU_SOURCES = [
    "cpu_bindings.cpp",
    "segmented_maxsim.cpp",
    "column_argmax.cpp",
    "segmented_lookup.cpp",
    "filter_pids.cpp",
    "decompress_residuals.cpp",
]
CUDA_SOURCES = [
    "cuda_bindings.cpp",
    "decompress_residuals.cu",
    "packbits.cu",
]
HEADERS = ["build_info.h", "colbert_tap.h", "residual_codec.h"]

CXX_FLAGS = ["-O3"]
NVCC_FLAGS = ["-O3"]

AOT_MODULES = {"cpu": "colbert._ext_cpu", "cuda": "colbert._ext_cuda"}
JIT_MODULES = {"cpu": "colbert_tap_cpu", "cuda": "colbert_tap_cuda"}


def all_files():
    return sorted(set(CPU_SOURCES + CUDA_SOURCES + HEADERS + ["manifest.py"]))


def module_files(kind):
    sources = CPU_SOURCES if kind == "cpu" else CUDA_SOURCES
    return sorted(set(sources + HEADERS + ["manifest.py"]))


def source_hash(csrc_dir, kind):
    """Hash of the sources of one module ("cpu" or "cuda"), the headers and
    this manifest (which carries the flags), so that a cached or installed
    build is reused only if it was made from exactly these files.  Per module,
    so that editing a .cu file does not force a rebuild of the CPU module."""
    h = hashlib.sha256(kind.encode() + b"\0")
    for name in module_files(kind):
        h.update(name.encode() + b"\0")
        with open(os.path.join(csrc_dir, name), "rb") as f:
            # Line endings normalised: a checkout with CRLF must not look stale.
            h.update(f.read().replace(b"\r\n", b"\n"))
        h.update(b"\0")
    return h.hexdigest()[:16]
