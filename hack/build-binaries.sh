#!/usr/bin/env bash
# Build the pinned upstream components from the Go module proxy into the
# version-keyed cache. Idempotent: a component already built is skipped.
#   hack/build-binaries.sh [kubernetes|etcd|coredns|helm|kube-network-policies|actionlint|kwok|all]
# (all: what the cluster and the tests need; kwok only for bench/scale.py)
source "$(dirname "$0")/lib/common.sh"

KUBE_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl kubelet)
BUILD_LOG_DIR="$CACHE_DIR/logs"
KNP_BIN="$CACHE_DIR/bin/kube-network-policies-$KUBE_NETWORK_POLICIES_VERSION"
mkdir -p "$BUILD_LOG_DIR" "$GOMODCACHE" "$GOCACHE"

# go_build NAME LOGFILE ARGS... — run a build step, pointing at its log on failure.
go_step() {
  local what="$1" logfile="$2"; shift 2
  local start; start=$(now)
  log "building $what (log: $logfile)"
  if ! "$@" >>"$logfile" 2>&1; then
    tail -n 20 "$logfile" >&2 || true
    die "building $what failed; full log: $logfile"
  fi
  ok "$what built in $(( $(now) - start ))s"
}

kube_ldflags() {
  local v="${KUBE_VERSION#v}" major minor
  major="${v%%.*}"; minor="${v#*.}"; minor="${minor%%.*}"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  echo "$flags"
}

# The helper module requires k8s.io/kubernetes; its go.mod replaces every staging
# module with ./staging/..., which we rewrite to the published v0.X.Y modules.
kube_module() {
  local dir="$CACHE_DIR/src/kubernetes-$KUBE_VERSION" staging="v0.${KUBE_VERSION#v1.}"
  mkdir -p "$dir"
  if [[ -f "$dir/.ready" ]]; then echo "$dir"; return; fi
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module testenv.dev/hack/kubernetes-build"
    echo
    grep -E '^go [0-9]' "$gomod"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    for c in "${KUBE_COMPONENTS[@]}"; do echo "tool k8s.io/kubernetes/cmd/$c"; done
    echo
    sed -nE 's#^[[:space:]]*(replace[[:space:]]+)?(k8s\.io/[a-z0-9-]+)[[:space:]]+=>[[:space:]]+\./staging/.*#replace \2 => \2 '"$staging"'#p' "$gomod"
  } >"$dir/go.mod"
  (cd "$dir" && go mod tidy) >&2
  touch "$dir/.ready"
  echo "$dir"
}

build_kubernetes() {
  local logfile="$BUILD_LOG_DIR/kubernetes-$KUBE_VERSION.log" dir ldflags
  mkdir -p "$K8S_BIN"
  local missing=()
  for c in "${KUBE_COMPONENTS[@]}"; do [[ -x "$K8S_BIN/$c" ]] || missing+=("$c"); done
  if [[ ${#missing[@]} -eq 0 ]]; then ok "kubernetes $KUBE_VERSION: cached in $K8S_BIN"; return; fi
  log "kubernetes $KUBE_VERSION: resolving modules (first time downloads ~1 GB)"
  dir="$(kube_module 2>>"$logfile")" || die "resolving k8s.io/kubernetes $KUBE_VERSION failed; log: $logfile"
  ldflags="$(kube_ldflags)"
  local i=0
  for c in "${missing[@]}"; do
    i=$((i+1))
    local cgo=0; [[ "$c" == kubelet ]] && cgo=1
    go_step "$c ($i/${#missing[@]})" "$logfile" env -C "$dir" CGO_ENABLED=$cgo \
      go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldflags" \
      -o "$K8S_BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
    mv "$K8S_BIN/$c.tmp" "$K8S_BIN/$c"
  done
}

build_etcd() {
  local logfile="$BUILD_LOG_DIR/etcd-$ETCD_VERSION.log" dir="$CACHE_DIR/src/etcd-$ETCD_VERSION"
  if [[ -x "$ETCD_BIN/etcd" ]]; then ok "etcd $ETCD_VERSION: cached"; return; fi
  mkdir -p "$dir" "$ETCD_BIN"
  # etcd's server module uses replace directives for its sibling modules; a
  # helper module pins each of them to the same release instead.
  local v="$ETCD_VERSION"
  cat >"$dir/go.mod" <<GOMOD
module testenv.dev/hack/etcd-build

go 1.24

require go.etcd.io/etcd/server/v3 $v

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $v
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $v
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $v
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $v
)

tool go.etcd.io/etcd/server/v3
GOMOD
  go_step "etcd $v (resolve)" "$logfile" env -C "$dir" go mod tidy
  go_step "etcd $v" "$logfile" env -C "$dir" CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
    -o "$ETCD_BIN/etcd" go.etcd.io/etcd/server/v3
}

build_coredns() {
  local logfile="$BUILD_LOG_DIR/coredns-$COREDNS_VERSION.log" dir="$CACHE_DIR/src/coredns-$COREDNS_VERSION"
  if [[ -x "$COREDNS_BIN/coredns" ]]; then ok "coredns $COREDNS_VERSION: cached"; return; fi
  mkdir -p "$dir" "$COREDNS_BIN"
  # A CoreDNS with only the plugins a cluster DNS needs (hack/coredns/main.go),
  # instead of the full build with every cloud provider's SDK.
  cp "$HACK_DIR/coredns/main.go" "$dir/main.go"
  printf 'module testenv.dev/hack/coredns-build\n\ngo 1.24\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" >"$dir/go.mod"
  go_step "coredns $COREDNS_VERSION (resolve)" "$logfile" env -C "$dir" go mod tidy
  go_step "coredns $COREDNS_VERSION" "$logfile" env -C "$dir" CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$COREDNS_BIN/coredns" .
}

build_helm() {
  local logfile="$BUILD_LOG_DIR/helm-$HELM_VERSION.log" dir="$CACHE_DIR/src/helm-$HELM_VERSION"
  if [[ -x "$HELM_BIN/helm" ]]; then ok "helm $HELM_VERSION: cached"; return; fi
  mkdir -p "$dir" "$HELM_BIN"
  printf 'module testenv.dev/hack/helm-build\n\ngo 1.24\n\nrequire helm.sh/helm/v3 %s\n\ntool helm.sh/helm/v3/cmd/helm\n' "$HELM_VERSION" >"$dir/go.mod"
  go_step "helm $HELM_VERSION (resolve)" "$logfile" env -C "$dir" go mod tidy
  go_step "helm $HELM_VERSION" "$logfile" env -C "$dir" CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$HELM_BIN/helm" helm.sh/helm/v3/cmd/helm
}

build_actionlint() {
  local logfile="$BUILD_LOG_DIR/actionlint-$ACTIONLINT_VERSION.log" dir="$CACHE_DIR/src/actionlint-$ACTIONLINT_VERSION"
  if [[ -x "$ACTIONLINT_BIN/actionlint" ]]; then ok "actionlint $ACTIONLINT_VERSION: cached"; return; fi
  mkdir -p "$dir" "$ACTIONLINT_BIN"
  printf 'module testenv.dev/hack/actionlint-build\n\ngo 1.24\n\nrequire github.com/rhysd/actionlint %s\n\ntool github.com/rhysd/actionlint/cmd/actionlint\n' "$ACTIONLINT_VERSION" >"$dir/go.mod"
  go_step "actionlint $ACTIONLINT_VERSION (resolve)" "$logfile" env -C "$dir" go mod tidy
  go_step "actionlint $ACTIONLINT_VERSION" "$logfile" env -C "$dir" CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION" -o "$ACTIONLINT_BIN/actionlint" github.com/rhysd/actionlint/cmd/actionlint
}

# kube-network-policies (the NetworkPolicy engine kind ships), from its module source with
# the testenv patches in hack/patches/kube-network-policies-$VERSION-*.patch applied in order
# (each file starts with its full rationale):
#   1-kubeconfig: a --kubeconfig flag; upstream only knows the in-cluster config of a pod,
#     and here it runs as a host process.
#   2-nfqueue-xt-target: this kernel has no nft_queue (CONFIG_NFT_QUEUE unset), so the
#     nftables "queue" statement (expr.Queue) makes every ruleset update fail with ENOENT.
#     The patch emits the xtables NFQUEUE target, revision 3, through nft_compat
#     (expr.Target, info = struct xt_NFQ_info_v3 {u16 queuenum, queues_total=1, flags},
#     flags NFQ_FLAG_BYPASS only with --fail-open, like upstream's QueueFlagBypass): the
#     same verdict as "iptables-nft -j NFQUEUE --queue-num N [--queue-bypass]".
#   3-input-hook: upstream evaluates only forwarded traffic (POSTROUTING, plus UDP/53 in
#     PREROUTING); Pod -> node connections (API server via the kubernetes Service or the node
#     IP, kubelet, CoreDNS over TCP) go through INPUT and ignored egress policies. The patch
#     adds an input chain that queues them the same way.
# The binary is rebuilt when the version or any patch changes (stamp next to the binary).
build_kube_network_policies() {
  local v="$KUBE_NETWORK_POLICIES_VERSION" bin="$KNP_BIN/kube-network-policies"
  local logfile="$BUILD_LOG_DIR/kube-network-policies-$v.log" dir="$CACHE_DIR/src/kube-network-policies-$v"
  local patches=("$HACK_DIR"/patches/kube-network-policies-"$v"-*.patch) stamp
  [[ -e "${patches[0]}" ]] || patches=()
  stamp="$v $(cat /dev/null "${patches[@]}" | sha256sum | cut -c1-16)"
  if [[ -x "$bin" && "$(cat "$KNP_BIN/.stamp" 2>/dev/null)" == "$stamp" ]]; then
    ok "kube-network-policies $v: cached"; return
  fi
  mkdir -p "$KNP_BIN" "$CACHE_DIR/src"
  local moddir
  moddir="$(go mod download -json "sigs.k8s.io/kube-network-policies@$v" 2>>"$logfile" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" \
    || die "downloading sigs.k8s.io/kube-network-policies@$v failed; log: $logfile"
  # The module cache is read-only: patch a fresh, writable copy.
  rm -rf "$dir"; cp -r "$moddir" "$dir"; chmod -R u+w "$dir"
  local p
  for p in "${patches[@]}"; do
    log "kube-network-policies $v: applying ${p#"$ROOT_DIR"/}"
    patch -d "$dir" -p1 --forward --batch -i "$p" >>"$logfile" 2>&1 \
      || { tail -n 20 "$logfile" >&2; die "applying $p failed (does it match $v?); log: $logfile"; }
  done
  go_step "kube-network-policies $v" "$logfile" env -C "$dir" CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w" -o "$bin.tmp" ./cmd
  mv "$bin.tmp" "$bin"
  echo "$stamp" >"$KNP_BIN/.stamp"
}

# kwok (simulated nodes and pods) and kwokctl (a throwaway control plane from our own
# Kubernetes and etcd builds), for bench/scale.py.
build_kwok() {
  local logfile="$BUILD_LOG_DIR/kwok-$KWOK_VERSION.log" dir="$CACHE_DIR/src/kwok-$KWOK_VERSION"
  if [[ -x "$KWOK_BIN/kwok" && -x "$KWOK_BIN/kwokctl" ]]; then ok "kwok $KWOK_VERSION: cached"; return; fi
  mkdir -p "$dir" "$KWOK_BIN"
  printf 'module testenv.dev/hack/kwok-build\n\ngo 1.24\n\nrequire sigs.k8s.io/kwok %s\n\ntool (\n\tsigs.k8s.io/kwok/cmd/kwok\n\tsigs.k8s.io/kwok/cmd/kwokctl\n)\n' "$KWOK_VERSION" >"$dir/go.mod"
  go_step "kwok $KWOK_VERSION (resolve)" "$logfile" env -C "$dir" go mod tidy
  local c
  for c in kwok kwokctl; do
    go_step "$c $KWOK_VERSION" "$logfile" env -C "$dir" CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" -o "$KWOK_BIN/$c" "sigs.k8s.io/kwok/cmd/$c"
  done
}

what="${1:-all}"
case "$what" in
  kubernetes) build_kubernetes ;;
  etcd) build_etcd ;;
  coredns) build_coredns ;;
  helm) build_helm ;;
  kube-network-policies) build_kube_network_policies ;;
  actionlint) build_actionlint ;;
  kwok) build_kwok ;;
  all) build_etcd; build_kubernetes; build_coredns; build_helm; build_kube_network_policies; build_actionlint ;;
  *) die "unknown component '$what' (kubernetes|etcd|coredns|helm|kube-network-policies|actionlint|kwok|all)" ;;
esac
