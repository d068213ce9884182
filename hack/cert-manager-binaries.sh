#!/usr/bin/env bash
# Provide cert-manager's controller (and its CRDs) for the local end-to-end tests.
#
# cert-manager's command modules (cmd/controller etc.) are separate Go modules whose paths do
# not match their directories and which carry replace directives, so the Go module proxy cannot
# serve them. We build instead from the published root module github.com/cert-manager/cert-manager
# in a throwaway module that pins its version, with a small entry point
# (hack/cert-manager/main.go) that runs cert-manager's own registered controllers.
#
# Cache: $PGCURATOR_CACHE (default ~/.cache/pgcurator)/bin/cert-manager-<ver>/ holding
# cert-manager-controller and crds/*.yaml (copied from the module's deploy/crds).
# Only the Go module proxy is used. Prints the directory on stdout (logs go to stderr).
set -euo pipefail

CM_VERSION="${PGCURATOR_CERT_MANAGER_VERSION:-1.21.2}"
CACHE="${PGCURATOR_CACHE:-$HOME/.cache/pgcurator}"
OUT="$CACHE/bin/cert-manager-$CM_VERSION"
HERE="$(cd "$(dirname "$0")" && pwd)"

log() { printf '[cert-manager-binaries] %s\n' "$*" >&2; }

if [ -x "$OUT/cert-manager-controller" ] && [ -f "$OUT/crds/cert-manager.io_certificates.yaml" ]; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { log "Go toolchain not found"; exit 1; }
work="$CACHE/build/cert-manager-$CM_VERSION"
mkdir -p "$work" "$OUT/crds"
start=$(date +%s)
cd "$work"
rm -f go.mod go.sum
go mod init pgcurator.local/cert-manager-build >/dev/null 2>&1
go mod edit -require="github.com/cert-manager/cert-manager@v$CM_VERSION"
cp "$HERE/cert-manager/main.go" main.go
GOFLAGS=-mod=mod go mod tidy >&2
moddir=$(go list -m -f '{{.Dir}}' "github.com/cert-manager/cert-manager")
cp "$moddir"/deploy/crds/cert-manager.io_*.yaml "$moddir"/deploy/crds/acme.cert-manager.io_*.yaml "$OUT/crds/"
chmod u+w "$OUT"/crds/*.yaml
log "building cert-manager controller v$CM_VERSION (one time; several minutes on 2 cores)"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/cert-manager-controller.tmp" .
mv "$OUT/cert-manager-controller.tmp" "$OUT/cert-manager-controller"
log "built in $(( $(date +%s) - start ))s into $OUT"
echo "$OUT"
