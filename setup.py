"""Build hooks for colbert-tap; the project metadata lives in pyproject.toml.

When torch is importable at build time (`pip install --no-build-isolation .`)
this compiles the search kernels ahead of time into colbert._ext_cpu (and
colbert._ext_cuda with a CUDA torch and toolkit).  Without torch (an isolated
build) nothing is compiled and colbert.search.extensions JIT-builds the same
sources on first use instead.  Either way the C++ sources are shipped inside
the package as colbert/_csrc so an installed copy can still JIT-build.

COLBERT_EXTENSIONS=off at build time skips compilation; COLBERT_EXTENSIONS_CUDA=off
skips only the CUDA module, COLBERT_EXTENSIONS_CPU=off only the CPU module.

CUDA architectures: TORCH_CUDA_ARCH_LIST when set; else those of the visible
GPUs (torch's own choice); with no GPU visible (a login node, a Docker build)
the default list of csrc/cuda_arch.py (T4 7.5, A100 8.0, A10 8.6, L4 8.9,
H100 9.0, +PTX), printed and recorded as colbert._ext_cuda.CUDA_ARCHS.
"""

import os
import runpy
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
MANIFEST = runpy.run_path(str(CSRC / "manifest.py"))
CUDA_ARCH = runpy.run_path(str(CSRC / "cuda_arch.py"))


def _off(name):
    return os.environ.get(name, "").strip().lower() == "off"


def _choose_cuda_archs(torch):
    """Sets TORCH_CUDA_ARCH_LIST when torch could not choose (no GPU visible),
    says which architectures are built, and returns the list (or "")."""
    try:
        visible = torch.cuda.device_count()
    except Exception:  # a driver problem reads as no GPU
        visible = 0
    value, line = CUDA_ARCH["choose_cuda_arch_list"](
        os.environ.get("TORCH_CUDA_ARCH_LIST"), visible, torch.version.cuda)
    if value is not None:
        os.environ["TORCH_CUDA_ARCH_LIST"] = value
    sys.stderr.write(f"colbert-tap: building colbert._ext_cuda; {line}\n")
    sys.stderr.flush()
    return os.environ.get("TORCH_CUDA_ARCH_LIST", "")


class BuildPyWithSources(build_py):
    def run(self):
        super().run()
        # An editable install finds csrc/ next to the package already.
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "colbert" / "_csrc"
        target.mkdir(parents=True, exist_ok=True)
        for name in MANIFEST["all_files"]():
            shutil.copyfile(CSRC / name, target / name)


def _extensions():
    if _off("COLBERT_EXTENSIONS"):
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except Exception:  # no torch in an isolated build env: leave it to the JIT path
        return [], {}

    def macros(kind):
        # Bare tokens, stringified in the bindings (see cpu_bindings.cpp).
        return [
            ("COLBERT_TAP_SOURCE_HASH", MANIFEST["source_hash"](str(CSRC), kind)),
            ("COLBERT_TAP_TORCH_VERSION", torch.__version__),
        ]

    def rel(names):
        return [os.path.join("csrc", n) for n in names]

    modules = []
    if not _off("COLBERT_EXTENSIONS_CPU"):
        modules.append(CppExtension(
            MANIFEST["AOT_MODULES"]["cpu"],
            sources=rel(MANIFEST["CPU_SOURCES"]),
            include_dirs=[str(CSRC)],
            define_macros=macros("cpu"),
            extra_compile_args={"cxx": list(MANIFEST["CXX_FLAGS"])},
        ))
    if not _off("COLBERT_EXTENSIONS_CUDA") and torch.version.cuda is not None and CUDA_HOME is not None:
        archs = _choose_cuda_archs(torch)
        cuda_macros = macros("cuda") + [("COLBERT_TAP_CUDA_ARCHS", CUDA_ARCH["arch_macro"](archs) or "visible")]
        modules.append(
            CUDAExtension(
                MANIFEST["AOT_MODULES"]["cuda"],
                sources=rel(MANIFEST["CUDA_SOURCES"]),
                include_dirs=[str(CSRC)],
                define_macros=cuda_macros,
                extra_compile_args={
                    "cxx": list(MANIFEST["CXX_FLAGS"]),
                    "nvcc": list(MANIFEST["NVCC_FLAGS"]),
                },
            )
        )
    if not modules:
        return [], {}
    return modules, {"build_ext": BuildExtension}


ext_modules, cmdclass = _extensions()
cmdclass["build_py"] = BuildPyWithSources
setup(ext_modules=ext_modules, cmdclass=cmdclass)
