#!/usr/bin/env bash
# Installs (if needed), makes the MiniLM ColBERT checkpoint, indexes the shipped Vaswani collection
# and prints where the index is and what it holds. Extra arguments go to `colbert-tap demo`
# (e.g. --limit 0 for all 11,429 passages).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
HF_HUB_OFFLINE=1 .venv/bin/colbert-tap demo --out colbert-tap-demo "$@"
