#!/usr/bin/env bash
# A single-node Kubernetes cluster made of upstream components, run as supervised local
# processes (no systemd): etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd, kubelet, kube-proxy (iptables), kube-network-policies (NetworkPolicy enforcement,
# nftables + NFQUEUE) and CoreDNS.
#
#   hack/cluster.sh up       idempotent; builds what is missing, starts what is not running
#   hack/cluster.sh down     stops everything and removes state, mounts, interfaces, rules
#   hack/cluster.sh status   components and their health
#
# State: $STATE_DIR (/var/lib/testenv-cluster); per-component logs in $STATE_DIR/logs.
source "$(dirname "$0")/lib/common.sh"

APISERVER_PORT=6443
SERVICE_CIDR=10.96.0.0/16
SERVICE_APISERVER_IP=10.96.0.1
DNS_IP=10.96.0.10
POD_CIDR=10.244.0.0/16
NODE_POD_CIDR=10.244.0.0/24
CNI_BRIDGE=testenv0
GUARD_CHAIN=TESTENV-EGRESS-GUARD
PRIVATE_RANGES=(10.0.0.0/8 172.16.0.0/12 192.168.0.0/16)

NODE_NAME="$(hostname | tr '[:upper:]' '[:lower:]')"
EXT_IF="$(ip -4 route show default | awk '{print $5; exit}')"
NODE_IP="$(ip -4 -o addr show dev "$EXT_IF" | awk '{split($4,a,"/"); print a[1]; exit}')"
CONTAINERD_SOCK="$RUN_DIR/containerd.sock"
KNP_BIN="$CACHE_DIR/bin/kube-network-policies-$KUBE_NETWORK_POLICIES_VERSION"
NETPOL_TABLE=kube-network-policies      # its nftables table (family inet)
NETPOL_QUEUE=100                        # the NFQUEUE number it listens on
NETPOL_METRICS=127.0.0.1:9080           # Prometheus /metrics (it serves nothing else)
export KUBECONFIG="$STATE_DIR/admin.kubeconfig"

# shellcheck source=lib/pki.sh
source "$HACK_DIR/lib/pki.sh"

COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kube-network-policies coredns)
DEBIAN_PACKAGES=(containerd runc containernetworking-plugins iptables nftables conntrack openssl buildah debootstrap iproute2 curl patch)

kubectl() { "$K8S_BIN/kubectl" "$@"; }

# --- processes -------------------------------------------------------------------------

pid_of() { local f="$RUN_DIR/$1.pid"; [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"; }

# start NAME CMD... — run CMD in its own session, logging to $LOG_DIR/NAME.log.
start() {
  local name="$1"; shift
  if pid_of "$name" >/dev/null; then ok "$name already running (pid $(pid_of "$name"))"; return; fi
  : >"$LOG_DIR/$name.log"
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

# stop NAME [SIGNAL] — SIGTERM unless told otherwise, SIGKILL after 10s.
stop() {
  local name="$1" sig="${2:-TERM}" pid
  pid="$(pid_of "$name")" || { rm -f "$RUN_DIR/$name.pid"; return 0; }
  kill -s "$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$RUN_DIR/$name.pid"
}

# wait_healthy NAME SECONDS CHECK... — poll a health check until it passes or time runs out.
wait_healthy() {
  local name="$1" budget="$2"; shift 2
  local deadline=$(( $(now) + budget ))
  until "$@" >/dev/null 2>&1; do
    if ! pid_of "$name" >/dev/null; then
      tail -n 15 "$LOG_DIR/$name.log" >&2 || true
      die "$name exited during start-up; read $LOG_DIR/$name.log"
    fi
    if (( $(now) > deadline )); then
      tail -n 15 "$LOG_DIR/$name.log" >&2 || true
      die "$name did not become healthy within ${budget}s; read $LOG_DIR/$name.log"
    fi
    sleep 0.5
  done
  ok "$name healthy"
}

https_ok() {
  curl -sf --max-time 2 --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" "$1"
}
http_ok() { curl -sf --max-time 2 "$1"; }
insecure_ok() { curl -skf --max-time 2 "$1"; }

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

# --- preflight -------------------------------------------------------------------------

install_packages() {
  local missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return
  log "installing Debian packages: ${missing[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") \
    >"$CACHE_DIR/logs/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed; read $CACHE_DIR/logs/apt.log"
}

preflight() {
  [[ $EUID -eq 0 ]] || die "the local cluster needs root (it runs containerd, kubelet and iptables)"
  [[ -n "$EXT_IF" && -n "$NODE_IP" ]] || die "no default route: cannot pick the node's address"
  mkdir -p "$CACHE_DIR/logs" "$LOG_DIR" "$RUN_DIR"
  install_packages
  local need
  for need in containerd ctr runc iptables nft conntrack openssl buildah debootstrap curl patch /usr/lib/cni/bridge; do
    command -v "$need" >/dev/null || die "'$need' is missing after installing Debian packages; read $CACHE_DIR/logs/apt.log"
  done
  for p in "$APISERVER_PORT" 2379 2380 10250 10257 10259 "${NETPOL_METRICS##*:}"; do
    if ! port_free "$p" && ! cluster_running; then
      die "port $p is already in use by another program ($(ss -Hltnp "sport = :$p" | awk '{print $6}')); stop it, or run 'make cluster-down' if it is a previous cluster"
    fi
  done
  sysctl -qw net.ipv4.ip_forward=1
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || die "br_netfilter is not loaded; kube-proxy needs it"
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # Debian's cgroup v1 layout: kubelet wants the cpu,cpuacct pair under one name.
  [[ -e /sys/fs/cgroup/cpu,cpuacct ]] || true
}

cluster_running() { pid_of kube-apiserver >/dev/null; }
any_running() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null && return 0; done
  return 1
}

# --- network guard ---------------------------------------------------------------------

# The guard sits in mangle POSTROUTING: the only place that sees the final output interface of
# both forwarded and local packets (after kube-proxy's DNAT has re-routed them).
guard_install() {
  iptables -w -t mangle -N "$GUARD_CHAIN" 2>/dev/null || iptables -w -t mangle -F "$GUARD_CHAIN"
  for dst in "$POD_CIDR" "$SERVICE_CIDR"; do
    iptables -w -t mangle -A "$GUARD_CHAIN" -o "$EXT_IF" -d "$dst" -j DROP
  done
  for dst in "${PRIVATE_RANGES[@]}"; do
    iptables -w -t mangle -A "$GUARD_CHAIN" -o "$EXT_IF" -s "$POD_CIDR" -d "$dst" -j DROP
  done
  iptables -w -t mangle -C POSTROUTING -j "$GUARD_CHAIN" 2>/dev/null \
    || iptables -w -t mangle -I POSTROUTING 1 -j "$GUARD_CHAIN"
  # CoreDNS answers pods (via the bridge), never the outside network.
  for proto in udp tcp; do
    iptables -w -C INPUT -i "$EXT_IF" -p "$proto" --dport 53 -j DROP 2>/dev/null \
      || iptables -w -I INPUT 1 -i "$EXT_IF" -p "$proto" --dport 53 -j DROP
  done
  ok "egress guard: nothing to $POD_CIDR, $SERVICE_CIDR or private ranges from pods leaves via $EXT_IF"
}

guard_remove() {
  while iptables -w -t mangle -D POSTROUTING -j "$GUARD_CHAIN" 2>/dev/null; do :; done
  iptables -w -t mangle -F "$GUARD_CHAIN" 2>/dev/null || true
  iptables -w -t mangle -X "$GUARD_CHAIN" 2>/dev/null || true
  for proto in udp tcp; do
    while iptables -w -D INPUT -i "$EXT_IF" -p "$proto" --dport 53 -j DROP 2>/dev/null; do :; done
  done
}

# --- configuration files ---------------------------------------------------------------

# write_file FILE — write stdin to FILE only if its content differs: a re-run of `up` against a
# running cluster must not touch them (kube-proxy exits as soon as its --config file is written).
write_file() {
  local f="$1" tmp
  tmp="$(mktemp "$STATE_DIR/.write_file.XXXXXX")"  # not next to FILE: CNI's conf dir is watched
  cat >"$tmp"
  if cmp -s "$tmp" "$f"; then rm -f "$tmp"; else chmod 644 "$tmp"; mv -f "$tmp" "$f"; fi
}

write_configs() {
  mkdir -p "$STATE_DIR/cni/net.d" "$STATE_DIR/containerd" "$STATE_DIR/kubelet"
  write_file "$STATE_DIR/cni/net.d/10-testenv.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "testenv",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$NODE_POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE_DIR/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
  write_file "$STATE_DIR/containerd/config.toml" <<EOF
version = 2
root = "$STATE_DIR/containerd/root"
state = "$STATE_DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE_DIR/cni/net.d"
EOF
  write_file "$STATE_DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI_DIR/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI_DIR/kubelet-serving.crt
tlsPrivateKeyFile: $PKI_DIR/kubelet-serving.key
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
healthzBindAddress: 127.0.0.1
healthzPort: 10248
oomScoreAdj: 0
podCIDR: $NODE_POD_CIDR
maxPods: 60
serializeImagePulls: false
# Images here cannot be pulled again: never garbage-collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
localStorageCapacityIsolation: false
protectKernelDefaults: false
makeIPTablesUtilChains: true
EOF
  write_file "$STATE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
clientConnection: {kubeconfig: $STATE_DIR/kube-proxy.kubeconfig}
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
EOF
  write_file "$STATE_DIR/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $STATE_DIR/coredns.kubeconfig testenv-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
    loadbalance
}
EOF
}

# --- bring-up --------------------------------------------------------------------------

start_containerd() {
  start containerd containerd --config "$STATE_DIR/containerd/config.toml"
  wait_healthy containerd 30 ctr --address "$CONTAINERD_SOCK" version
}

start_etcd() {
  start etcd "$ETCD_BIN/etcd" --name testenv --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster testenv=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --quota-backend-bytes 2147483648 --log-level warn
  wait_healthy etcd 30 http_ok http://127.0.0.1:2381/health
}

start_apiserver() {
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$PKI_DIR/apiserver.crt" --tls-private-key-file="$PKI_DIR/apiserver.key" \
    --client-ca-file="$PKI_DIR/ca.crt" \
    --kubelet-client-certificate="$PKI_DIR/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI_DIR/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI_DIR/ca.crt" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-key-file="$PKI_DIR/sa.pub" \
    --service-account-signing-key-file="$PKI_DIR/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction,PodSecurity \
    --allow-privileged=true \
    --profiling=false --v=1
  wait_healthy kube-apiserver 90 https_ok "https://127.0.0.1:$APISERVER_PORT/readyz"
}

start_controllers() {
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$STATE_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE_DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --service-account-private-key-file="$PKI_DIR/sa.key" --root-ca-file="$PKI_DIR/ca.crt" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="$PKI_DIR/ca.crt" --cluster-signing-key-file="$PKI_DIR/ca.key" \
    --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" --service-cluster-ip-range="$SERVICE_CIDR" \
    --node-monitor-grace-period=20s --v=1
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig="$STATE_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE_DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --v=1
  wait_healthy kube-controller-manager 60 insecure_ok https://127.0.0.1:10257/healthz
  wait_healthy kube-scheduler 60 insecure_ok https://127.0.0.1:10259/healthz
}

start_node() {
  start kubelet "$K8S_BIN/kubelet" \
    --config="$STATE_DIR/kubelet/config.yaml" \
    --kubeconfig="$STATE_DIR/kubelet.kubeconfig" \
    --root-dir="$STATE_DIR/kubelet/root" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  wait_healthy kubelet 90 http_ok http://127.0.0.1:10248/healthz
  start kube-proxy "$K8S_BIN/kube-proxy" --config="$STATE_DIR/kube-proxy.yaml" --v=1
  wait_healthy kube-proxy 60 http_ok http://127.0.0.1:10256/healthz
}

# kube-network-policies (sigs.k8s.io/kube-network-policies, patched: hack/build-binaries.sh)
# enforces NetworkPolicies: an nftables table "inet kube-network-policies" sends the first
# packet of every new connection from or to a local Pod selected by some policy to NFQUEUE
# $NETPOL_QUEUE, where it gets a verdict. Hooks: postrouting (forwarded traffic: pod<->pod,
# Services, leaving the node), prerouting (UDP/53 only), input (pod -> node: testenv patch).
# Not evaluated: packets from root-owned host processes (kubelet probes, API server ->
# webhooks) and anything inside a pod's own network namespace (port-forward).
# Fail-closed (upstream's default, no --fail-open): while it is down but its table is in
# place, new connections of policy-selected Pods are dropped. It removes its table on SIGINT
# only (not SIGTERM), hence the signal in netpol_remove.
netpol_ok() {
  http_ok "http://$NETPOL_METRICS/metrics" >/dev/null \
    && nft list table inet "$NETPOL_TABLE" >/dev/null 2>&1 \
    && awk -v q="$NETPOL_QUEUE" '$1 == q && $2 != 0 { found = 1 } END { exit !found }' /proc/net/netfilter/nfnetlink_queue
}

start_netpol() {
  cert kube-network-policies system:kube-network-policies "" ""
  kubeconfig kube-network-policies kube-network-policies
  kubectl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:kube-network-policies"}
rules:
- apiGroups: [""]
  resources: [pods, namespaces]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:kube-network-policies"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kube-network-policies"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:kube-network-policies"}]
EOF
  start kube-network-policies "$KNP_BIN/kube-network-policies" \
    --kubeconfig="$STATE_DIR/kube-network-policies.kubeconfig" \
    --hostname-override="$NODE_NAME" \
    --metrics-bind-address="$NETPOL_METRICS" \
    --nfqueue-id="$NETPOL_QUEUE" \
    --v=1
  wait_healthy kube-network-policies 60 netpol_ok
}

netpol_remove() {
  stop kube-network-policies INT
  nft delete table inet "$NETPOL_TABLE" 2>/dev/null || true
}

start_dns() {
  kubectl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}]
---
# CoreDNS runs on the host; this selector-less Service points pods at it.
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: $DNS_IP
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: testenv-local-cluster}
addressType: IPv4
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
endpoints:
- addresses: ["$NODE_IP"]
  conditions: {ready: true}
EOF
  start coredns "$COREDNS_BIN/coredns" -conf "$STATE_DIR/Corefile"
  wait_healthy coredns 60 http_ok http://127.0.0.1:18181/ready
}

wait_node_ready() {
  log "waiting for node $NODE_NAME to be Ready"
  kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s >/dev/null \
    || die "node $NODE_NAME is not Ready; read $LOG_DIR/kubelet.log"
  kubectl wait --for=jsonpath='{.metadata.name}'=default serviceaccount/default --timeout=60s >/dev/null 2>&1 || true
  ok "node $NODE_NAME Ready"
}

import_images() {
  local archive
  for archive in "$IMAGES_DIR"/*.tar; do
    [[ -e "$archive" ]] || continue
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images import --no-unpack=false "$archive" >/dev/null \
      || die "importing $archive into containerd failed"
  done
}

cmd_up() {
  local t0; t0=$(now)
  if cmd_status >/dev/null 2>&1; then
    ok "cluster already up (node $NODE_NAME; 'make cluster-status' for details)"
    echo "export KUBECONFIG=$KUBECONFIG"
    return
  fi
  local warm=1
  if [[ -d "$STATE_DIR" ]] && ! any_running; then
    # Left by a cluster whose processes are gone (a reboot, an ended session): its mounts,
    # rules and pod sandboxes are stale. Start from nothing rather than resume them.
    warn "removing the stale state of a previous cluster in $STATE_DIR"
    cmd_down
  fi
  preflight
  [[ -x "$K8S_BIN/kubelet" && -x "$ETCD_BIN/etcd" && -x "$COREDNS_BIN/coredns" && -x "$KNP_BIN/kube-network-policies" ]] || warm=0
  for c in etcd kubernetes coredns kube-network-policies; do bash "$HACK_DIR/build-binaries.sh" "$c"; done
  bash "$HACK_DIR/images.sh" pause
  log "starting components (logs: $LOG_DIR)"
  make_pki
  write_configs
  guard_install
  start_containerd
  import_images
  start_etcd
  start_apiserver
  start_controllers
  start_node
  start_netpol
  start_dns
  wait_node_ready
  ln -sf "$KUBECONFIG" "$STATE_DIR/kubeconfig"
  local took=$(( $(now) - t0 )) kind=warm
  [[ $warm == 1 ]] || kind=cold
  echo "$took" >"$CACHE_DIR/logs/bringup-$kind.seconds"
  ok "cluster up in ${took}s ($kind start)"
  for k in cold warm; do
    [[ -f "$CACHE_DIR/logs/bringup-$k.seconds" ]] \
      && echo "   last $k bring-up: $(cat "$CACHE_DIR/logs/bringup-$k.seconds")s$([[ $k == cold ]] && echo ' (building every component from source)')" >&2
  done
  echo "   kubectl: $K8S_BIN/kubectl" >&2
  echo "export KUBECONFIG=$KUBECONFIG"
}

# --- teardown --------------------------------------------------------------------------

# remove_chains REGEX — delete every iptables/ip6tables chain whose name matches REGEX, and the
# rules that jump to them, in every table (kubelet, kube-proxy and CNI plugins all add some).
remove_chains() {
  local re="$1" tool table rule chain
  for tool in iptables ip6tables; do
    for table in filter nat mangle raw; do
      { "$tool" -w -t "$table" -S 2>/dev/null | grep -E "^-A .* -j ($re)" || true; } | sed "s/^-A/-D/" | while read -r rule; do
        eval "$tool" -w -t "$table" "$rule" 2>/dev/null || true
      done
      for chain in $("$tool" -w -t "$table" -S 2>/dev/null | awk '/^-N /{print $2}' | grep -E "^($re)"); do
        "$tool" -w -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$tool" -w -t "$table" -S 2>/dev/null | awk '/^-N /{print $2}' | grep -E "^($re)"); do
        "$tool" -w -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

cmd_down() {
  log "stopping the local cluster"
  netpol_remove
  stop coredns
  stop kube-proxy
  [[ -x "$K8S_BIN/kube-proxy" ]] && "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  stop kubelet
  if pid_of containerd >/dev/null; then
    local ctr=(ctr --address "$CONTAINERD_SOCK" -n k8s.io)
    for t in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    for t in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks delete -f "$t" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  pkill -9 -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || true
  stop kube-scheduler
  stop kube-controller-manager
  stop kube-apiserver
  stop etcd
  # Pod network namespaces, mounts and interfaces left by the runtime.
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done
  if [[ -d "$STATE_DIR" ]]; then
    { grep -o " $STATE_DIR[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  ip link delete "$CNI_BRIDGE" 2>/dev/null || true
  remove_chains 'KUBE-|CNI-'
  guard_remove
  for hier in /sys/fs/cgroup/*/; do
    [[ -d "$hier/kubepods" ]] && find "$hier/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  rm -rf "$STATE_DIR"
  ok "local cluster removed (cached binaries and images kept in $CACHE_DIR)"
}

cmd_status() {
  local rc=0
  printf '%-26s %-8s %s\n' COMPONENT PID HEALTH
  for c in "${COMPONENTS[@]}"; do
    local pid health="-"
    pid="$(pid_of "$c" || true)"
    if [[ -n "$pid" ]]; then
      case "$c" in
        containerd) ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1 && health=ok || health=unhealthy ;;
        etcd) http_ok http://127.0.0.1:2381/health >/dev/null 2>&1 && health=ok || health=unhealthy ;;
        kube-apiserver) https_ok "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1 && health=ok || health=unhealthy ;;
        kube-controller-manager) insecure_ok https://127.0.0.1:10257/healthz >/dev/null 2>&1 && health=ok || health=unhealthy ;;
        kube-scheduler) insecure_ok https://127.0.0.1:10259/healthz >/dev/null 2>&1 && health=ok || health=unhealthy ;;
        kubelet) http_ok http://127.0.0.1:10248/healthz >/dev/null 2>&1 && health=ok || health=unhealthy ;;
        kube-proxy) http_ok http://127.0.0.1:10256/healthz >/dev/null 2>&1 && health=ok || health=unhealthy ;;
        kube-network-policies) netpol_ok && health=ok || health=unhealthy ;;
        coredns) http_ok http://127.0.0.1:18181/ready >/dev/null 2>&1 && health=ok || health=unhealthy ;;
      esac
    else
      pid="-"; health="stopped"
    fi
    [[ "$health" == ok ]] || rc=1
    printf '%-26s %-8s %s\n' "$c" "$pid" "$health  (log: $LOG_DIR/$c.log)"
  done
  if [[ $rc == 0 ]]; then
    kubectl get nodes -o wide 2>/dev/null || true
    echo "export KUBECONFIG=$KUBECONFIG"
  fi
  return $rc
}

# restart COMPONENT — stop one running component and start it again (fault injection for the
# chaos suite: clients must reconnect on their own).
cmd_restart() {
  local name="${1:-}"
  cluster_running || die "the local cluster is not running: hack/cluster.sh up"
  case "$name" in
    kube-apiserver) stop kube-apiserver; start_apiserver ;;
    *) die "usage: hack/cluster.sh restart kube-apiserver" ;;
  esac
  ok "$name restarted"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  restart) cmd_restart "${2:-}" ;;
  *) die "usage: hack/cluster.sh up|down|status|restart kube-apiserver" ;;
esac
