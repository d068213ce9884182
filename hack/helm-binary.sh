#!/usr/bin/env bash
# Provide the `helm` binary for the chart tests: $HELM when it is executable, else `helm` on PATH
# at the pinned version, else the cache (~/.cache/pgcurator/bin/helm-<ver>), else a build from
# the helm.sh/helm/v3 Go module with the machine's Go toolchain (module proxy only, no binary
# downloads). Prints the path of the binary on stdout; logs go to stderr.
set -euo pipefail

HELM_VERSION="${PGCURATOR_HELM_VERSION:-3.22.0}"
CACHE="${PGCURATOR_CACHE:-$HOME/.cache/pgcurator}"
OUT="$CACHE/bin/helm-$HELM_VERSION"

log() { printf '[helm-binary] %s\n' "$*" >&2; }

if [ -n "${HELM:-}" ] && [ -x "$HELM" ]; then
  echo "$HELM"; exit 0
fi
if [ -x "$OUT/helm" ] && [ -f "$OUT/.complete" ]; then
  echo "$OUT/helm"; exit 0
fi
command -v go >/dev/null || { log "Go toolchain not found: install Go or set HELM=/path/to/helm"; exit 1; }

work="$CACHE/build/helm-$HELM_VERSION"
mkdir -p "$work" "$OUT"
cd "$work"
rm -f go.mod go.sum
go mod init pgcurator.local/helm-build >/dev/null 2>&1
go mod edit -require="helm.sh/helm/v3@v$HELM_VERSION"
printf 'package tools\n\nimport _ "helm.sh/helm/v3/cmd/helm"\n' > tools.go
start=$(date +%s)
log "building helm v$HELM_VERSION from its Go module (one time; a few minutes on 2 cores)"
GOFLAGS=-mod=mod go mod tidy >&2
# As helm's Makefile does: the Kubernetes version `helm template`/`lint` assume comes from the
# client-go it is built with (v0.X.y -> 1.X); without it helm defaults to 1.20.
k8s_minor=$(go list -f '{{.Version}}' -m k8s.io/client-go | cut -d. -f2)
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags="$ldflags -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
done
CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$OUT/helm.tmp" helm.sh/helm/v3/cmd/helm
mv "$OUT/helm.tmp" "$OUT/helm"
touch "$OUT/.complete"
log "built in $(( $(date +%s) - start ))s into $OUT"
echo "$OUT/helm"
