#!/usr/bin/env bash
# README command 1: set up, then run the operator against the embedded default (local control
# plane + embedded PostgreSQL 18 + the seed 001 event_logs table + its PartitionPolicy).
# Stays up until Ctrl-C; pass --exit-after-ready to tear down once the example is Ready.
set -euo pipefail
cd "$(dirname "$0")/.."
# Only the venv and kube-apiserver + etcd: cert-manager, helm and Debian's PostgreSQL are for tests.
bash hack/setup.sh --dev
exec .venv/bin/python -m pgcurator_devenv.up --workdir .dev "$@"
