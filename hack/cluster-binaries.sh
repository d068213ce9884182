#!/usr/bin/env bash
# Provide what the one-node cluster (hack/cluster-up.sh) runs besides the control plane of
# hack/k8s-binaries.sh:
#   - kubelet, kube-controller-manager, kube-scheduler and kube-proxy, built from
#     k8s.io/kubernetes with the same module recipe and version as kube-apiserver
#     (hack/lib/k8s-module.sh), cached in $PGCURATOR_CACHE/bin/k8s-node-<ver>/;
#   - Debian's packages for the node and the images: containerd, runc, the CNI plugins,
#     iptables, conntrack, podman (image builds) and debootstrap (base images).
# Each Go build's cold time is written to build-seconds.txt next to the binaries.
# Prints the binaries' directory on stdout (logs go to stderr). Idempotent.
set -euo pipefail

K8S_VERSION="${PGCURATOR_K8S_VERSION:-1.36.3}"
CACHE="${PGCURATOR_CACHE:-$HOME/.cache/pgcurator}"
OUT="$CACHE/bin/k8s-node-$K8S_VERSION"
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=hack/lib/k8s-module.sh
. "$HERE/lib/k8s-module.sh"

log() { printf '[cluster-binaries] %s\n' "$*" >&2; }

DEB_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack podman debootstrap)
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "needs root to install: ${missing[*]}"; exit 1; }
  log "installing Debian packages: ${missing[*]}"
  start=$(date +%s)
  apt-get update >&2
  # No recommends: podman's would pull crun, slirp4netns and friends; the node runs runc.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
  # The package starts containerd with its own configuration; hack/cluster-up.sh runs its own.
  if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
    systemctl stop containerd >&2 || true
    systemctl disable containerd >&2 || true
  fi
  log "packages installed in $(( $(date +%s) - start ))s"
fi

COMPONENTS=(kubelet kube-controller-manager kube-scheduler kube-proxy)
todo=()
for c in "${COMPONENTS[@]}"; do [ -x "$OUT/$c" ] || todo+=("$c"); done
if [ "${#todo[@]}" -eq 0 ]; then
  echo "$OUT"
  exit 0
fi
command -v go >/dev/null || { log "Go toolchain not found"; exit 1; }
mkdir -p "$OUT"
work="$CACHE/build/k8s-node-$K8S_VERSION"
pkgs=()
for c in "${COMPONENTS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c/app"); done
start=$(date +%s)
k8s_module_init "$work" "$K8S_VERSION" "${pkgs[@]}"
log "module set up in $(( $(date +%s) - start ))s"
printf 'module-setup %s\n' "$(( $(date +%s) - start ))" >> "$OUT/build-seconds.txt"
for c in "${todo[@]}"; do
  # One at a time: the machine is small and shared.
  log "building $c v$K8S_VERSION (one time; minutes on 2 cores)"
  t0=$(date +%s)
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "$(k8s_ldflags "$K8S_VERSION")" \
      -o "$OUT/$c.tmp" "k8s.io/kubernetes/cmd/$c")
  mv "$OUT/$c.tmp" "$OUT/$c"
  printf '%s %s\n' "$c" "$(( $(date +%s) - t0 ))" >> "$OUT/build-seconds.txt"
  log "$c built in $(( $(date +%s) - t0 ))s"
done
log "built in $(( $(date +%s) - start ))s into $OUT"
echo "$OUT"
