#!/usr/bin/env bash
# Installs (if needed) and runs the whole test suite, parity with colbert-ai 0.2.22 included
# (its virtual environments are built once under .venvs/). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1
.venv/bin/python -m pytest -ra "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
