#!/usr/bin/env bash
# Build the images the one-node cluster runs, with no registry (only Debian's mirror and PyPI):
#   1. a Debian bookworm base rootfs from debootstrap (minbase + python3, python3-venv,
#      python3-pip, ca-certificates), cached as a tarball in $PGCURATOR_CACHE/images/ and
#      imported into podman as localhost/pgcurator-base:bookworm;
#   2. the operator image from the repository's Dockerfile, unchanged, with
#      PYTHON_IMAGE=<that base> (Debian's python3 is what the Dockerfile calls);
#   3. a PostgreSQL image from Debian's postgresql (built with OpenSSL, for DbTlsCert);
#   4. the pod sandbox ("pause") image: a tiny static Go binary in a scratch image.
# podman runs with runc: its default crun refuses this machine's cgroup v1/v2 hybrid. HTTPS from
# inside the build needs the host's CA bundle; it is bind-mounted for the RUN steps only, so
# nothing of it stays in an image.
#   hack/image-build.sh [TAG]     (operator image localhost/pgcurator:TAG, default "dev")
# Writes $PGCURATOR_CACHE/images/build-<TAG>.json with each step's seconds and the image sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-dev}"
CACHE="${PGCURATOR_CACHE:-$HOME/.cache/pgcurator}"
IMAGES="$CACHE/images"
BASE_TAR="$IMAGES/debian-bookworm-python.tar"
BASE=localhost/pgcurator-base:bookworm
OPERATOR="localhost/pgcurator:$TAG"
POSTGRES=localhost/pgcurator-postgres:15
PAUSE=localhost/pgcurator-pause:1
CA_BUNDLE="${PGCURATOR_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
MIRROR="${PGCURATOR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# At or below the host's hard limits (this machine cannot raise them, even as root).
NOFILE=$(ulimit -Hn); [ "$NOFILE" = unlimited ] && NOFILE=65536
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)
BUILD=("${PODMAN[@]}" build --network host --ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=4096:4096")

log() { printf '[image-build] %s\n' "$*" >&2; }
mkdir -p "$IMAGES"
declare -A SECONDS_OF=()
step() { SECONDS_OF[$1]=$2; }
exists() { "${PODMAN[@]}" image exists "$1"; }

# 1. base rootfs
t0=$(date +%s)
if [ ! -s "$BASE_TAR" ]; then
  log "debootstrap bookworm (minbase + python3) from $MIRROR"
  root=$(mktemp -d "$IMAGES/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" "$MIRROR" >&2
  # apt's lists and caches are not part of an image.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" --numeric-owner -cf "$BASE_TAR.tmp" .
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$root"; trap - EXIT
fi
exists "$BASE" || "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$BASE_TAR" "$BASE" >&2
step base $(( $(date +%s) - t0 ))

# 2. the operator image, from the Dockerfile as it is
t0=$(date +%s)
log "building $OPERATOR from the Dockerfile"
"${BUILD[@]}" -v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" \
  --build-arg "PYTHON_IMAGE=$BASE" -t "$OPERATOR" -f Dockerfile . >&2
step operator $(( $(date +%s) - t0 ))

# 3. PostgreSQL
t0=$(date +%s)
if ! exists "$POSTGRES"; then
  log "building $POSTGRES from Debian's postgresql"
  "${BUILD[@]}" -v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" --build-arg "BASE=$BASE" -t "$POSTGRES" -f hack/cluster/postgres.Containerfile hack/cluster >&2
fi
step postgres $(( $(date +%s) - t0 ))

# 4. pause
t0=$(date +%s)
if ! exists "$PAUSE"; then
  pdir=$(mktemp -d)
  cp hack/cluster/pause.go "$pdir/main.go"
  (cd "$pdir" && go mod init pgcurator.local/pause >/dev/null 2>&1 &&
    CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o pause .)
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$pdir/Containerfile"
  "${BUILD[@]}" -t "$PAUSE" -f "$pdir/Containerfile" "$pdir" >&2
  rm -rf "$pdir"
fi
step pause $(( $(date +%s) - t0 ))

"${PODMAN[@]}" image prune -f >/dev/null  # earlier builds' layers, now untagged
size() { "${PODMAN[@]}" image inspect --format '{{.Size}}' "$1"; }
python3 - "$IMAGES/build-$TAG.json" "${SECONDS_OF[base]}" "${SECONDS_OF[operator]}" \
  "${SECONDS_OF[postgres]}" "${SECONDS_OF[pause]}" "$(size "$OPERATOR")" "$(size "$POSTGRES")" "$(size "$BASE")" <<'PY'
import json, sys
path, base, op, pg, pause, op_size, pg_size, base_size = sys.argv[1:]
json.dump({"seconds": {"base": int(base), "operator": int(op), "postgres": int(pg), "pause": int(pause)},
           "bytes": {"operator": int(op_size), "postgres": int(pg_size), "base": int(base_size)}},
          open(path, "w"), indent=1)
PY
log "images: $OPERATOR ($(size "$OPERATOR") bytes), $POSTGRES, $PAUSE; times in $IMAGES/build-$TAG.json"
echo "$OPERATOR"
