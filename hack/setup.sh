#!/usr/bin/env bash
# One-time setup on a fresh machine: Python venv with the project and its dev tools, and the
# local control-plane binaries (built from Go modules and cached; honours KUBEBUILDER_ASSETS).
# Idempotent: a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.pgcurator-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing pgcurator and dev dependencies" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  touch "$stamp"
fi
bin_dir=$(bash hack/k8s-binaries.sh)
echo "[setup] control-plane binaries in $bin_dir" >&2
