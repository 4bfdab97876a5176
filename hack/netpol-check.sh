#!/usr/bin/env bash
# Check that the local cluster enforces NetworkPolicies (kube-network-policies, started by
# hack/cluster.sh). Runnable any time against the running cluster; exits 0 only if every
# expectation holds. Creates the namespaces netpol-probe-{a,b,c} and deletes them at exit.
#
#   a, b: default-deny ingress+egress, plus: ingress from pods of the same namespace, egress
#         to pods of the same namespace and to DNS (UDP/TCP 53 on CoreDNS's endpoint address,
#         the node: CoreDNS runs on the host, and policies see the address after kube-proxy's
#         DNAT, not the kube-dns Service IP).
#   c:    no policy at all: must behave as if there were no policy engine.
#
#   hack/netpol-check.sh            run the checks
#   KEEP=1 hack/netpol-check.sh     keep the namespaces afterwards (for debugging)
source "$(dirname "$0")/lib/common.sh"

export KUBECONFIG="${KUBECONFIG:-$STATE_DIR/admin.kubeconfig}"
kubectl() { "$K8S_BIN/kubectl" "$@"; }
CONTAINERD_SOCK="$STATE_DIR/run/containerd.sock"
NS_PREFIX=netpol-probe-
NAMESPACES=("${NS_PREFIX}a" "${NS_PREFIX}b" "${NS_PREFIX}c")
PF_PID=""
FAILURES=0

cleanup() {
  [[ -n "$PF_PID" ]] && kill "$PF_PID" 2>/dev/null || true
  if [[ "${KEEP:-0}" != 1 ]]; then
    kubectl delete namespace "${NAMESPACES[@]}" --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

pass() { printf '  \033[1;32mPASS\033[0m %s\n' "$*"; }
fail() { printf '  \033[1;31mFAIL\033[0m %s\n' "$*"; FAILURES=$((FAILURES+1)); }

# --- cluster facts ---------------------------------------------------------------------
kubectl get --raw /readyz >/dev/null 2>&1 || die "the local cluster is not running (hack/cluster.sh up)"
NODE_NAME="$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')"
NODE_IP="$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')"
API_SVC_IP="$(kubectl get service kubernetes -n default -o jsonpath='{.spec.clusterIP}')"
DNS_SVC_IP="$(kubectl get service kube-dns -n kube-system -o jsonpath='{.spec.clusterIP}')"
# CoreDNS's own addresses (the endpoints behind kube-dns): what an egress rule must allow.
DNS_ENDPOINTS=($(kubectl get endpointslices -n kube-system -l kubernetes.io/service-name=kube-dns \
  -o jsonpath='{range .items[*].endpoints[*]}{.addresses[0]}{"\n"}{end}' | sort -u))
[[ ${#DNS_ENDPOINTS[@]} -gt 0 ]] || die "kube-dns has no endpoints"
log "node $NODE_NAME ($NODE_IP); kubernetes Service $API_SVC_IP:443; kube-dns $DNS_SVC_IP -> ${DNS_ENDPOINTS[*]}"
if nft list table inet kube-network-policies >/dev/null 2>&1; then
  ok "nftables table inet kube-network-policies present"
else
  warn "nftables table inet kube-network-policies is missing: is kube-network-policies running? (hack/cluster.sh status)"
fi

# The probe image: imported from the image cache if containerd does not have it yet.
if ! ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q "name==docker.io/$BASE_IMAGE" | grep -q .; then
  key="$(sha256sum "$ROOT_DIR/images/python-base/Containerfile" | cut -c1-12)"
  archive="$IMAGES_CACHE/python-base-$key.tar"
  [[ -f "$archive" ]] || die "$BASE_IMAGE is not in containerd and $archive does not exist: run hack/images.sh base"
  log "importing $BASE_IMAGE into containerd from $archive"
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$archive" >/dev/null
fi

# --- fixtures --------------------------------------------------------------------------
log "creating ${NAMESPACES[*]}"
kubectl delete namespace "${NAMESPACES[@]}" --ignore-not-found --wait=true --timeout=120s >/dev/null
dns_peers=""
for ip in "${DNS_ENDPOINTS[@]}"; do dns_peers+="    - ipBlock: {cidr: $ip/32}"$'\n'; done

for ns in "${NAMESPACES[@]}"; do
  kubectl create namespace "$ns" >/dev/null
  # Pods are refused until the namespace's default ServiceAccount exists.
  kubectl wait -n "$ns" --for=create serviceaccount/default --timeout=60s >/dev/null
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: srv, namespace: $ns, labels: {app: srv}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: srv
    image: $BASE_IMAGE
    imagePullPolicy: Never
    command: [python3, -m, http.server, "8080"]
    ports: [{containerPort: 8080, name: http}]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: srv, namespace: $ns}
spec:
  selector: {app: srv}
  ports: [{port: 8080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: cli, namespace: $ns, labels: {app: cli}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: cli
    image: $BASE_IMAGE
    imagePullPolicy: Never
    command: [python3, -c, "import signal; signal.pause()"]
EOF
done

for ns in "${NAMESPACES[@]:0:2}"; do
  kubectl apply -f - >/dev/null <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: $ns}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-same-namespace, namespace: $ns}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{podSelector: {}}]
  egress:
  - to: [{podSelector: {}}]
---
# CoreDNS runs on the host: a podSelector/namespaceSelector for kube-dns matches nothing, and
# the kube-dns Service IP is never seen (policies are evaluated after kube-proxy's DNAT).
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-dns, namespace: $ns}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
$dns_peers    ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
EOF
done

log "waiting for the probe pods"
for ns in "${NAMESPACES[@]}"; do
  kubectl wait -n "$ns" --for=condition=Ready pod/srv pod/cli --timeout=120s >/dev/null \
    || { kubectl get pods -n "$ns" -o wide >&2; die "probe pods in $ns are not Ready"; }
done
declare -A SRV_IP CLI_IP SVC_IP
for ns in "${NAMESPACES[@]}"; do
  SRV_IP[$ns]="$(kubectl get pod srv -n "$ns" -o jsonpath='{.status.podIP}')"
  CLI_IP[$ns]="$(kubectl get pod cli -n "$ns" -o jsonpath='{.status.podIP}')"
  SVC_IP[$ns]="$(kubectl get service srv -n "$ns" -o jsonpath='{.spec.clusterIP}')"
done

# The engine programs the local pod IPs selected by a policy into an nftables set
# asynchronously: wait until all pods of a and b (and none of c) are in it.
log "waiting for kube-network-policies to select the pods of a and b"
want=("${SRV_IP[${NS_PREFIX}a]}" "${CLI_IP[${NS_PREFIX}a]}" "${SRV_IP[${NS_PREFIX}b]}" "${CLI_IP[${NS_PREFIX}b]}")
deadline=$(( $(now) + 60 ))
while :; do
  set_dump="$(nft list set inet kube-network-policies podips-v4 2>/dev/null || true)"
  missing=0
  for ip in "${want[@]}"; do grep -qwF "$ip" <<<"$set_dump" || missing=1; done
  [[ $missing == 0 ]] && break
  (( $(now) > deadline )) && { echo "$set_dump" >&2; die "kube-network-policies did not program the probe pods' IPs within 60s"; }
  sleep 0.5
done
ok "policy set programmed"

# --- probes ----------------------------------------------------------------------------
# connect NS HOST PORT — from the cli pod of NS: prints connected | refused | timeout | error:...
PROBE_TCP='
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close(); print("connected")
except socket.timeout: print("timeout")
except ConnectionRefusedError: print("refused")
except OSError as e: print("error:%s" % e)
'
# http NS URL — from the cli pod of NS: prints the HTTP status, or the failure.
PROBE_HTTP='
import sys, urllib.request
try: print(urllib.request.urlopen(sys.argv[1], timeout=3).status)
except Exception as e: print("error:%s" % getattr(e, "reason", e))
'
# dns NS NAME PROTO — resolve NAME (A) over udp or tcp with the pod resolv.conf nameserver.
PROBE_DNS='
import socket, struct, sys, random
name, proto = sys.argv[1], sys.argv[2]
ns = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
qid = random.randrange(65536)
q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
try:
    if proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(q, (ns, 53)); r = s.recv(4096)
    else:
        s = socket.create_connection((ns, 53), timeout=3); s.sendall(struct.pack(">H", len(q)) + q)
        n = struct.unpack(">H", s.recv(2))[0]; r = b""
        while len(r) < n: r += s.recv(n - len(r))
except socket.timeout: print("timeout"); sys.exit()
except OSError as e: print("error:%s" % e); sys.exit()
an = struct.unpack(">H", r[6:8])[0]
print(socket.inet_ntoa(r[-4:]) if an and r[3] & 0xF == 0 else "rcode=%d answers=%d" % (r[3] & 0xF, an))
'
run_probe() { local ns="$1" code="$2"; shift 2; kubectl exec -n "$ns" cli -- python3 -c "$code" "$@" 2>&1 | tail -n1; }

# expect WHAT WANT GOT
expect() {
  if [[ "$3" == "$2" ]]; then pass "$1: $3"; else fail "$1: got '$3', want '$2'"; fi
}
# blocked WHAT GOT — dropped by a policy: a timeout (never "refused": that means it got through).
blocked() { expect "$1 blocked" timeout "$2"; }

A="${NS_PREFIX}a" B="${NS_PREFIX}b" C="${NS_PREFIX}c"
log "probes"
expect "a -> a pod (http ${SRV_IP[$A]}:8080)"      200 "$(run_probe "$A" "$PROBE_HTTP" "http://${SRV_IP[$A]}:8080/")"
expect "a -> a Service (http ${SVC_IP[$A]}:8080)"  200 "$(run_probe "$A" "$PROBE_HTTP" "http://${SVC_IP[$A]}:8080/")"
blocked "a -> b pod (${SRV_IP[$B]}:8080)"              "$(run_probe "$A" "$PROBE_TCP" "${SRV_IP[$B]}" 8080)"
blocked "a -> b Service (${SVC_IP[$B]}:8080)"          "$(run_probe "$A" "$PROBE_TCP" "${SVC_IP[$B]}" 8080)"
blocked "b -> a pod (${SRV_IP[$A]}:8080)"              "$(run_probe "$B" "$PROBE_TCP" "${SRV_IP[$A]}" 8080)"
expect "b -> b pod (http ${SRV_IP[$B]}:8080)"      200 "$(run_probe "$B" "$PROBE_HTTP" "http://${SRV_IP[$B]}:8080/")"
blocked "a -> API server via Service ($API_SVC_IP:443)" "$(run_probe "$A" "$PROBE_TCP" "$API_SVC_IP" 443)"
blocked "a -> API server via node IP ($NODE_IP:6443)"   "$(run_probe "$A" "$PROBE_TCP" "$NODE_IP" 6443)"
blocked "a -> kubelet ($NODE_IP:10250)"                 "$(run_probe "$A" "$PROBE_TCP" "$NODE_IP" 10250)"
gw="$(kubectl exec -n "$A" cli -- python3 -c 'import socket,struct
for l in open("/proc/net/route").readlines()[1:]:
    f=l.split()
    if f[1]=="00000000": print(socket.inet_ntoa(struct.pack("<L", int(f[2],16))))' 2>/dev/null | head -n1 || true)"
blocked "a -> kubelet via the pod gateway ($gw:10250)"  "$(run_probe "$A" "$PROBE_TCP" "$gw" 10250)"
expect "a: DNS (udp) kubernetes.default.svc.cluster.local" "$API_SVC_IP" "$(run_probe "$A" "$PROBE_DNS" kubernetes.default.svc.cluster.local udp)"
expect "a: DNS (tcp) kubernetes.default.svc.cluster.local" "$API_SVC_IP" "$(run_probe "$A" "$PROBE_DNS" kubernetes.default.svc.cluster.local tcp)"
expect "a: getaddrinfo(kubernetes.default.svc.cluster.local)" "$API_SVC_IP" \
  "$(run_probe "$A" 'import socket; print(socket.gethostbyname("kubernetes.default.svc.cluster.local"))')"
blocked "c -> a pod (${SRV_IP[$A]}:8080)"              "$(run_probe "$C" "$PROBE_TCP" "${SRV_IP[$A]}" 8080)"
expect "c (no policy) -> c pod (http ${SRV_IP[$C]}:8080)" 200 "$(run_probe "$C" "$PROBE_HTTP" "http://${SRV_IP[$C]}:8080/")"
expect "c (no policy) -> API server via Service ($API_SVC_IP:443)" connected "$(run_probe "$C" "$PROBE_TCP" "$API_SVC_IP" 443)"
expect "c (no policy) -> API server via node IP ($NODE_IP:6443)" connected "$(run_probe "$C" "$PROBE_TCP" "$NODE_IP" 6443)"
expect "c (no policy) -> kubelet ($NODE_IP:10250)" connected "$(run_probe "$C" "$PROBE_TCP" "$NODE_IP" 10250)"
expect "c (no policy): DNS (udp)" "$API_SVC_IP" "$(run_probe "$C" "$PROBE_DNS" kubernetes.default.svc.cluster.local udp)"

# port-forward: containerd connects to localhost inside the pod's network namespace.
pf_log="$(mktemp)"
kubectl port-forward -n "$A" pod/srv :8080 >"$pf_log" 2>&1 &
PF_PID=$!
pf_port=""
deadline=$(( $(now) + 30 ))
until [[ -n "$pf_port" ]] || ! kill -0 "$PF_PID" 2>/dev/null || (( $(now) > deadline )); do
  pf_port="$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$pf_log" | head -n1)"
  [[ -n "$pf_port" ]] || sleep 0.2
done
if [[ -n "$pf_port" ]]; then
  expect "port-forward to a/srv (127.0.0.1:$pf_port)" 200 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$pf_port/" || true)"
else
  fail "port-forward to a/srv did not start: $(cat "$pf_log")"
fi
kill "$PF_PID" 2>/dev/null || true; wait "$PF_PID" 2>/dev/null || true; PF_PID=""
rm -f "$pf_log"

if [[ $FAILURES -eq 0 ]]; then
  ok "NetworkPolicies are enforced: every check passed"
else
  printf '\033[1;31mERR\033[0m %d check(s) failed\n' "$FAILURES" >&2
  exit 1
fi
