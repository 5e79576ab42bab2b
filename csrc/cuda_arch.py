"""Which CUDA architectures setup.py builds colbert._ext_cuda for.  Standard
library only and pure (setup.py runs it before torch's build helpers; the
tests import it without a compiler).  Not part of the modules' source hash:
it chooses compiler targets, not what the kernels compute.
"""

# ----------------------------------------------------------------------------
# CUDA architectures for an ahead-of-time build on a machine with no GPU.
#
# torch.utils.cpp_extension reads TORCH_CUDA_ARCH_LIST; when it is unset (or
# "native") it asks the visible GPUs, and with none it fails with IndexError
# in _get_cuda_arch_flags.  A login node or a Docker build has no GPU, so the
# build then picks the GPUs ColBERT users have, each needing a CUDA release:
DEFAULT_CUDA_ARCHS = [
    # (compute capability, example GPUs, oldest CUDA toolkit that targets it)
    ("7.5", "T4", (10, 0)),
    ("8.0", "A100", (11, 0)),
    ("8.6", "A10, RTX 3090", (11, 1)),
    ("8.9", "L4", (11, 8)),
    ("9.0", "H100, H200", (11, 8)),
]


def _version_tuple(text):
    parts = []
    for piece in str(text).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (2 - len(parts)))


def default_cuda_arch_list(cuda_version):
    """The default list for a toolkit of this version ("13.0", "11.7"): every
    DEFAULT_CUDA_ARCHS entry the toolkit can target, ';'-separated, the newest
    with +PTX so that later GPUs can JIT the PTX.  None if it targets none."""
    have = _version_tuple(cuda_version) if cuda_version else (99, 0)
    archs = [cc for cc, _, needs in DEFAULT_CUDA_ARCHS if have >= needs]
    if not archs:
        return None
    archs[-1] += "+PTX"
    return ";".join(archs)


def choose_cuda_arch_list(env_value, visible_gpus, cuda_version):
    """-> (value to set TORCH_CUDA_ARCH_LIST to, or None to leave it; a line
    saying which architectures the CUDA module is built for and why).
    Pure: the caller reads the environment, torch.cuda.device_count() and
    torch.version.cuda, and sets the variable."""
    value = (env_value or "").strip()
    if value and value.lower() != "native":
        return None, f"CUDA architectures: {value} (TORCH_CUDA_ARCH_LIST)"
    if visible_gpus > 0:
        how = "TORCH_CUDA_ARCH_LIST=native" if value else "TORCH_CUDA_ARCH_LIST unset"
        return None, f"CUDA architectures: those of the {visible_gpus} visible GPU(s) ({how})"
    default = default_cuda_arch_list(cuda_version)
    if default is None:
        raise RuntimeError(
            f"CUDA {cuda_version} targets none of {', '.join(cc for cc, _, _ in DEFAULT_CUDA_ARCHS)}; "
            f"set TORCH_CUDA_ARCH_LIST")
    why = "TORCH_CUDA_ARCH_LIST=native" if value else "TORCH_CUDA_ARCH_LIST unset"
    return default, (f"CUDA architectures: {default} (default: {why} and no GPU visible; "
                     f"set TORCH_CUDA_ARCH_LIST to choose)")


def arch_macro(arch_list):
    """TORCH_CUDA_ARCH_LIST as a bare preprocessor token (';' and spaces would
    split a ninja/shell command line): "8.9;9.0+PTX" -> "8.9_9.0+PTX"."""
    return "_".join(a for a in str(arch_list).replace(",", ";").replace(" ", ";").split(";") if a)
