"""Build hooks for colbert-tap; the project metadata lives in pyproject.toml.

When torch is importable at build time (`pip install --no-build-isolation .`)
this compiles the search kernels ahead of time into colbert._ext_cpu (and
colbert._ext_cuda with a CUDA torch and toolkit).  Without torch (an isolated
build) nothing is compiled and colbert.search.extensions JIT-builds the same
sources on first use instead.  Either way the C++ sources are shipped inside
the package as colbert/_csrc so an installed copy can still JIT-build.

COLBERT_EXTENSIONS=off at build time skips compilation; COLBERT_EXTENSIONS_CUDA=off
skips only the CUDA module.
"""

import os
import runpy
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
MANIFEST = runpy.run_path(str(CSRC / "manifest.py"))


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
    if os.environ.get("COLBERT_EXTENSIONS", "").strip().lower() == "off":
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

    modules = [
        CppExtension(
            MANIFEST["AOT_MODULES"]["cpu"],
            sources=rel(MANIFEST["CPU_SOURCES"]),
            include_dirs=[str(CSRC)],
            define_macros=macros("cpu"),
            extra_compile_args={"cxx": list(MANIFEST["CXX_FLAGS"])},
        )
    ]
    want_cuda = os.environ.get("COLBERT_EXTENSIONS_CUDA", "").strip().lower() != "off"
    if want_cuda and torch.version.cuda is not None and CUDA_HOME is not None:
        modules.append(
            CUDAExtension(
                MANIFEST["AOT_MODULES"]["cuda"],
                sources=rel(MANIFEST["CUDA_SOURCES"]),
                include_dirs=[str(CSRC)],
                define_macros=macros("cuda"),
                extra_compile_args={
                    "cxx": list(MANIFEST["CXX_FLAGS"]),
                    "nvcc": list(MANIFEST["NVCC_FLAGS"]),
                },
            )
        )
    return modules, {"build_ext": BuildExtension}


ext_modules, cmdclass = _extensions()
cmdclass["build_py"] = BuildPyWithSources
setup(ext_modules=ext_modules, cmdclass=cmdclass)
