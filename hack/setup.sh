#!/usr/bin/env bash
# One-time setup on a fresh machine: Python venv with the project and its dev tools, and the
# local control-plane binaries (built from Go modules and cached; honours KUBEBUILDER_ASSETS).
# Idempotent: a second run takes seconds.
#   hack/setup.sh         everything the tests need (also Debian's postgresql, cert-manager, helm)
#   hack/setup.sh --dev   only what the dev environment needs (./hack/dev-up.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
only_dev=false
[ "${1:-}" = "--dev" ] && only_dev=true

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.pgcurator-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ hack/devenv/pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing pgcurator and dev dependencies" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]' -e ./hack/devenv  # devenv: dev/test launchers, never shipped
  touch "$stamp"
fi
bin_dir=$(bash hack/k8s-binaries.sh)
echo "[setup] control-plane binaries in $bin_dir" >&2
if $only_dev; then
  exit 0
fi
# DbTlsCert: Debian's PostgreSQL (built with OpenSSL; the embedded wheel has no TLS) and
# cert-manager's controller built from its Go module (cached like the control plane).
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "[setup] installing Debian's postgresql package (TLS tests)" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2
  else
    sudo apt-get update >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2
  fi
fi
# --- Index advice: HypoPG (hypothetical indexes) for Debian's PostgreSQL ---------------------
# The advisor plans against hypothetical indexes when the extension is installed in a database
# (the embedded server has none: there it samples). Used by tests/integration/test_index_advice_hypopg.py
# and `bench/index_advice.py --server debian`.
pg_major=$(ls /usr/lib/postgresql/ 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1 || true)
if [ -n "$pg_major" ] && [ ! -f "/usr/share/postgresql/$pg_major/extension/hypopg.control" ]; then
  echo "[setup] installing HypoPG for PostgreSQL $pg_major (index advice)" >&2
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "postgresql-$pg_major-hypopg" >&2
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "postgresql-$pg_major-hypopg" >&2
  fi
fi
# --- end HypoPG --------------------------------------------------------------------------------
# The Secret corpus compares pgcurator's reading of connection strings with libpq's own (ctypes).
if ! ldconfig -p | grep -q 'libpq\.so\.5 '; then
  echo "[setup] installing Debian's libpq5 (Secret corpus reference)" >&2
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libpq5 >&2
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libpq5 >&2
  fi
fi
cm_dir=$(bash hack/cert-manager-binaries.sh)
echo "[setup] cert-manager controller in $cm_dir" >&2
# helm for the chart tests (lint, template, schema): built from its Go module and cached.
helm_bin=$(bash hack/helm-binary.sh)
echo "[setup] helm: $helm_bin" >&2

# ---- one-node cluster for tests/cluster (hack/cluster-up.sh runs it from these) -------------
# Debian's containerd, runc, CNI plugins, iptables, conntrack, podman and debootstrap; kubelet,
# kube-controller-manager, kube-scheduler and kube-proxy built like kube-apiserver (cached); the
# operator image from the Dockerfile (rebuilt from this checkout; podman's layer cache), the
# PostgreSQL and pause images (cached). Root only: elsewhere tests/cluster skips and says why.
if [ "$(id -u)" = 0 ] && [ "${PGCURATOR_SKIP_CLUSTER:-}" != 1 ]; then
  node_dir=$(bash hack/cluster-binaries.sh)
  echo "[setup] node binaries in $node_dir" >&2
  image=$(bash hack/image-build.sh dev)
  echo "[setup] images built: $image, PostgreSQL, pause" >&2
fi
