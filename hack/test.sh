#!/usr/bin/env bash
# README command 2: set up, then lint, type-check and run every test (unit, integration
# against the embedded PostgreSQL, end to end against the local API server).
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
echo "[test] ruff" >&2
.venv/bin/ruff check .
echo "[test] mypy" >&2
.venv/bin/mypy
echo "[test] CRDs up to date" >&2
.venv/bin/pgcurator crds --check
echo "[test] pytest" >&2
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
