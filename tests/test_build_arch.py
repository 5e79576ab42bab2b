"""The CUDA architecture list of an ahead-of-time build (csrc/cuda_arch.py and
its use in setup.py).  Pure logic: nothing is compiled, no GPU or CUDA torch
is needed; setup.py runs against a stand-in torch that records what it is
asked to build.
"""

import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCH = runpy.run_path(str(ROOT / "csrc" / "cuda_arch.py"))
choose = ARCH["choose_cuda_arch_list"]
default = ARCH["default_cuda_arch_list"]

FULL = "7.5;8.0;8.6;8.9;9.0+PTX"


@pytest.mark.parametrize("cuda", ["13.0", "12.8", "12.1", "11.8", None])
def test_default_list_is_the_users_gpus(cuda):
    assert default(cuda) == FULL


@pytest.mark.parametrize("cuda,expected", [
    ("11.7", "7.5;8.0;8.6+PTX"),
    ("11.1", "7.5;8.0;8.6+PTX"),
    ("11.0", "7.5;8.0+PTX"),
    ("10.2", "7.5+PTX"),
    ("9.2", None),
])
def test_default_list_drops_what_an_old_toolkit_cannot_target(cuda, expected):
    assert default(cuda) == expected


def test_no_gpu_no_list_picks_the_default_and_says_so():
    value, line = choose(None, 0, "13.0")
    assert value == FULL
    assert FULL in line and "no GPU visible" in line and "TORCH_CUDA_ARCH_LIST unset" in line
    assert choose("", 0, "13.0")[0] == FULL
    assert choose("  ", 0, "13.0")[0] == FULL


def test_native_without_a_gpu_falls_back_to_the_default():
    # torch treats "native" like unset and would hit the same IndexError.
    value, line = choose("native", 0, "12.4")
    assert value == FULL and "native" in line


def test_an_explicit_list_is_kept():
    value, line = choose("8.9", 0, "13.0")
    assert value is None and "8.9" in line and "TORCH_CUDA_ARCH_LIST" in line
    assert choose("8.0;9.0+PTX", 2, "13.0")[0] is None


def test_visible_gpus_are_left_to_torch():
    value, line = choose(None, 1, "13.0")
    assert value is None and "1 visible GPU" in line
    assert choose("native", 4, "13.0")[0] is None


def test_a_toolkit_that_targets_none_raises_with_advice():
    with pytest.raises(RuntimeError, match="TORCH_CUDA_ARCH_LIST"):
        choose(None, 0, "9.0")


@pytest.mark.parametrize("text,token", [
    (FULL, "7.5_8.0_8.6_8.9_9.0+PTX"),
    ("8.9", "8.9"),
    ("8.0 8.6", "8.0_8.6"),
    ("", ""),
])
def test_arch_macro_is_one_bare_token(text, token):
    assert ARCH["arch_macro"](text) == token


# ---------------------------------------------------------------------------
# setup.py with a stand-in torch (a CUDA build, no GPU visible)

FAKE_TORCH = {
    "torch/__init__.py": """
        import types
        __version__ = "9.9.9+cu130"
        version = types.SimpleNamespace(cuda="13.0")
        class cuda:
            @staticmethod
            def device_count():
                return 0
    """,
    "torch/utils/__init__.py": "",
    "torch/utils/cpp_extension.py": """
        import json, os
        from setuptools import Extension
        from setuptools.command.build_ext import build_ext as BuildExtension
        CUDA_HOME = "/usr/local/cuda"
        def _record(kind, name, kw):
            with open(os.environ["FAKE_TORCH_LOG"], "a") as f:
                f.write(json.dumps({"kind": kind, "name": name,
                                    "macros": kw.get("define_macros", []),
                                    "arch_env": os.environ.get("TORCH_CUDA_ARCH_LIST")}) + "\\n")
            return Extension(name, sources=kw["sources"])
        def CppExtension(name, **kw):
            return _record("cpu", name, kw)
        def CUDAExtension(name, **kw):
            return _record("cuda", name, kw)
    """,
}


def run_setup(tmp_path, **env):
    import json

    for rel, text in FAKE_TORCH.items():
        path = tmp_path / "fake" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    log = tmp_path / "calls.jsonl"
    full_env = {k: v for k, v in os.environ.items() if k not in (
        "TORCH_CUDA_ARCH_LIST", "COLBERT_EXTENSIONS", "COLBERT_EXTENSIONS_CUDA", "COLBERT_EXTENSIONS_CPU")}
    full_env.update(PYTHONPATH=str(tmp_path / "fake"), FAKE_TORCH_LOG=str(log), **env)
    result = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=full_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, {c["kind"]: c for c in calls}


def test_setup_py_defaults_the_arch_list_without_a_gpu(tmp_path):
    result, calls = run_setup(tmp_path)
    assert set(calls) == {"cpu", "cuda"}
    assert calls["cuda"]["arch_env"] == FULL
    assert ["COLBERT_TAP_CUDA_ARCHS", "7.5_8.0_8.6_8.9_9.0+PTX"] in calls["cuda"]["macros"]
    assert f"CUDA architectures: {FULL}" in result.stderr


def test_setup_py_keeps_an_explicit_arch_list_and_can_skip_the_cpu_module(tmp_path):
    result, calls = run_setup(tmp_path, TORCH_CUDA_ARCH_LIST="8.9", COLBERT_EXTENSIONS_CPU="off")
    assert set(calls) == {"cuda"}
    assert calls["cuda"]["arch_env"] == "8.9"
    assert ["COLBERT_TAP_CUDA_ARCHS", "8.9"] in calls["cuda"]["macros"]
    assert "CUDA architectures: 8.9 (TORCH_CUDA_ARCH_LIST)" in result.stderr


def test_setup_py_cuda_off_asks_nothing_about_architectures(tmp_path):
    result, calls = run_setup(tmp_path, COLBERT_EXTENSIONS_CUDA="off")
    assert set(calls) == {"cpu"}
    assert "CUDA architectures" not in result.stderr
