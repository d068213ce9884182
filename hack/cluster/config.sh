# Sourced by hack/cluster-up.sh and hack/cluster-down.sh: where the one-node cluster lives.
# Addresses come only from 198.18.0.0/15 (reserved for testing, RFC 2544): the node's address
# is the gateway of the cluster's own bridge, pods get 198.18.0.0/24 on that bridge, Services
# 198.19.0.0/16. A blackhole route for the whole /15 and a FORWARD chain that only lets
# traffic move inside the bridge mean nothing of the cluster leaves this machine.
CLUSTER_DIR="${PGCURATOR_CLUSTER_DIR:-/var/lib/pgcurator-cluster}"
CACHE="${PGCURATOR_CACHE:-$HOME/.cache/pgcurator}"
K8S_VERSION="${PGCURATOR_K8S_VERSION:-1.36.3}"
ETCD_VERSION="${PGCURATOR_ETCD_VERSION:-3.6.16}"
NODE_NAME=pgcurator-node
BRIDGE=pgcbr0
NODE_IP=198.18.0.1
POD_SUBNET=198.18.0.0/24
CLUSTER_RANGE=198.18.0.0/15
SERVICE_RANGE=198.19.0.0/16
KUBERNETES_SERVICE_IP=198.19.0.1
ISOLATE_CHAIN=PGC-ISOLATE
# What the kubelet and kube-proxy change and hack/cluster-down.sh puts back.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
         kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
         net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
         net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
         net.netfilter.nf_conntrack_tcp_timeout_close_wait)
# containerd's image store survives cluster-down (like the binaries' cache): warm starts skip
# the import. Everything else of the cluster is under CLUSTER_DIR and goes on cluster-down.
CONTAINERD_ROOT="$CACHE/cluster/containerd"
RUN_DIR=/run/pgcurator-cluster
CONTAINERD_SOCK="$RUN_DIR/containerd.sock"
COMPONENTS=(kube-proxy kubelet kube-scheduler kube-controller-manager containerd kube-apiserver etcd)
