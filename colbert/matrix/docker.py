"""--emit-dockerfiles: one Dockerfile per torch version, the same environment as the matrix builds.

Build context: the fork's source root (the folder holding `colbert/`), e.g.
    docker build -f DIR/torch-2.1.0/Dockerfile -t colbert-tap-matrix:torch-2.1.0 /path/to/colbert-tap
    docker run --rm -v $PWD/out:/out colbert-tap-matrix:torch-2.1.0
"""

from __future__ import annotations

import os
import shlex

from colbert.matrix.envs import env_requirements
from colbert.tap.manifest import atomic_write_bytes

BASE_IMAGE = "python:3.11-slim"


def dockerfile(name: str, torch_version: str, run_args: list[str], index_args: list[str]) -> str:
    main, nodeps = env_requirements(torch_version)
    pip = "pip install --disable-pip-version-check" + ("".join(f" {shlex.quote(a)}" for a in index_args))
    cmd = ["python", "-m", "colbert.cli", "matrix", "--env", f"{name}=/usr/local/bin/python", "--out", "/out"]
    cmd += run_args
    lines = [
        f"# colbert-tap matrix environment for torch=={torch_version} (written by colbert-tap matrix --emit-dockerfiles)",
        "# Build from the fork's source root:",
        f"#   docker build -f {name}/Dockerfile -t colbert-tap-matrix:{name} /path/to/colbert-tap",
        f"#   docker run --rm -v \"$PWD/out:/out\" colbert-tap-matrix:{name}",
        f"FROM {BASE_IMAGE}",
        "ENV PIP_ROOT_USER_ACTION=ignore HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1",
        f"RUN {pip} " + " ".join(shlex.quote(x) for x in main),
    ]
    if nodeps:
        lines.append(f"RUN {pip} --no-deps " + " ".join(shlex.quote(x) for x in nodeps))
    lines += [
        "COPY colbert /opt/colbert-tap/colbert",
        "ENV PYTHONPATH=/opt/colbert-tap",
        "WORKDIR /out",
        "CMD [" + ", ".join(f'"{c}"' for c in cmd) + "]",
        "",
    ]
    return "\n".join(lines)


def emit_dockerfiles(folder: str, targets, run_args: list[str], index_args: list[str]) -> list[str]:
    """One DIR/NAME/Dockerfile per --torch target; returns the paths written."""
    written = []
    for t in targets:
        if not t.torch:
            continue
        d = os.path.join(folder, t.name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "Dockerfile")
        atomic_write_bytes(path, dockerfile(t.name, t.torch, run_args, index_args).encode())
        written.append(path)
    return written
