"""Builds (once) the virtual environments that parity tests and benchmarks compare in.

oracle     colbert-ai 0.2.22 with the exact pins it runs with here (transformers 4.57.6).
ours-tf457 the same pins minus colbert-ai; our package runs there from the repo via PYTHONPATH, so
           both sides share torch, transformers, tokenizers and faiss to the version.
torch-V    one environment per other torch version (1.13.1 in CI), built by the matrix command's own
           builder from colbert/matrix/pins.json; colbert-ai sits in its own --target folder inside it
           that only upstream runs put on PYTHONPATH (both projects are the import package `colbert`).
A venv is rebuilt when the pins file changes (its hash is stored inside). Location: $COLBERT_TAP_VENVS,
else <repo>/.venvs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PINS = os.path.join(HERE, "colbert-ai-0.2.22-pins.txt")
TORCH = "torch==2.13.0"


def venvs_root() -> str:
    return os.environ.get("COLBERT_TAP_VENVS", os.path.join(REPO, ".venvs"))


def _pins(include_colbert: bool) -> list[str]:
    out = []
    with open(PINS) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or line.startswith("torch=="):
                continue
            if line.startswith("colbert-ai==") and not include_colbert:
                continue
            out.append(line)
    return out


def ensure_venv(kind: str) -> str:
    """Path of the venv's python, building the venv if needed. kind: 'oracle' or 'ours-tf457'."""
    include_colbert = kind == "oracle"
    pins = _pins(include_colbert)
    digest = hashlib.sha256("\n".join([TORCH] + pins).encode()).hexdigest()[:16]
    root = os.path.join(venvs_root(), kind)
    python = os.path.join(root, "bin", "python")
    marker = os.path.join(root, ".pins-" + digest)
    if os.path.exists(marker) and os.path.exists(python):
        return python
    os.makedirs(venvs_root(), exist_ok=True)
    # Several test sessions (or pytest-xdist workers) may ask at once: one builds, the rest wait.
    with open(os.path.join(venvs_root(), f".{kind}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(marker) and os.path.exists(python):
            return python
        _build(root, python, pins, marker)
    return python


def _build(root: str, python: str, pins: list[str], marker: str) -> None:
    print(f"[parity] building venv {root} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", root], check=True)
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + [TORCH], check=True)
    req = os.path.join(root, "requirements.txt")
    with open(req, "w") as f:
        f.write("\n".join(pins) + "\n")
    subprocess.run(pip + ["--no-deps", "-r", req], check=True)
    open(marker, "w").close()


def ensure_torch_env(torch_version: str) -> tuple[str, str]:
    """(python, upstream folder) of the environment for torch==torch_version, built once."""
    from colbert.matrix.envs import Installer, ensure_env, ensure_upstream

    root = os.path.join(venvs_root(), f"torch-{torch_version}")
    os.makedirs(venvs_root(), exist_ok=True)
    log = os.path.join(venvs_root(), f"torch-{torch_version}.log")
    with open(os.path.join(venvs_root(), f".torch-{torch_version}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        installer = Installer(use_uv=False)
        python, reused = ensure_env(root, torch_version, installer, log)
        if not reused:
            print(f"[parity] built {root} (log {log})", file=sys.stderr, flush=True)
        upstream, _ = ensure_upstream(root, python, installer, log)
    return python, upstream


def run_in(python: str, script: str, *args: str, ours: bool, cwd: str, timeout: int = 1800,
           upstream_path: str | None = None, extra_env: dict | None = None) -> str:
    """Run script under python: ours from the repo, or colbert-ai (from upstream_path when it is a
    --target folder, else the venv's own install)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLBERT_TAP")}
    env["HF_HUB_OFFLINE"] = "1"
    if ours:
        env["PYTHONPATH"] = REPO
    elif upstream_path:
        env["PYTHONPATH"] = upstream_path
    else:
        env.pop("PYTHONPATH", None)
    env.update(extra_env or {})
    proc = subprocess.run([python, script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed in {python} (exit {proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc.stdout
