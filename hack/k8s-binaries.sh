#!/usr/bin/env bash
# Provide kube-apiserver and etcd for the local control plane, envtest-style.
#
# Order of preference:
#   1. $KUBEBUILDER_ASSETS, when it already holds kube-apiserver and etcd;
#   2. the cache ($PGCURATOR_CACHE, default ~/.cache/pgcurator/bin/k8s-<ver>);
#   3. a build from the Go modules with the machine's Go toolchain.
# No container engine and no binary downloads are needed: only the Go module proxy.
# Prints the directory holding the binaries on stdout (logs go to stderr).
set -euo pipefail

K8S_VERSION="${PGCURATOR_K8S_VERSION:-1.36.3}"
ETCD_VERSION="${PGCURATOR_ETCD_VERSION:-3.6.16}"
CACHE="${PGCURATOR_CACHE:-$HOME/.cache/pgcurator}"
OUT="$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"

# shellcheck source=hack/lib/k8s-module.sh
. "$(cd "$(dirname "$0")" && pwd)/lib/k8s-module.sh"

log() { printf '[k8s-binaries] %s\n' "$*" >&2; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
  log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

if [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/etcd" ]; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { log "Go toolchain not found: install Go or set KUBEBUILDER_ASSETS"; exit 1; }
mkdir -p "$OUT"
work="$CACHE/build/k8s-$K8S_VERSION"
mkdir -p "$work"
start=$(date +%s)

build_apiserver() {
  k8s_module_init "$work" "$K8S_VERSION" k8s.io/kubernetes/cmd/kube-apiserver/app
  log "building kube-apiserver v$K8S_VERSION (one time; takes several minutes on 2 cores)"
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "$(k8s_ldflags "$K8S_VERSION")" -o "$OUT/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
}

build_etcd() {
  local ework="$CACHE/build/etcd-$ETCD_VERSION"
  mkdir -p "$ework"; cd "$ework"
  rm -f go.mod go.sum
  go mod init pgcurator.local/etcd-build >/dev/null 2>&1
  go mod edit -require="go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  printf 'package tools\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n' > tools.go
  GOFLAGS=-mod=mod go mod tidy >&2
  log "building etcd v$ETCD_VERSION"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3
}

[ -x "$OUT/etcd" ] || build_etcd
[ -x "$OUT/kube-apiserver" ] || build_apiserver
log "built in $(( $(date +%s) - start ))s into $OUT"
echo "$OUT"
