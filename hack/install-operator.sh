#!/usr/bin/env bash
# Install or upgrade the operator into the cluster KUBECONFIG points at, with the Helm chart,
# and wait until it runs. Re-running after `make images` rolls the operator onto the new image.
source "$(dirname "$0")/lib/common.sh"
bash "$HACK_DIR/build-binaries.sh" helm >/dev/null
HELM="$HELM_BIN/helm"
KUBECTL="$K8S_BIN/kubectl"
[[ -x "$KUBECTL" ]] || KUBECTL="$(command -v kubectl)" || die "no kubectl: run 'make cluster' first"
NAMESPACE="${TESTENV_OPERATOR_NAMESPACE:-testenv-system}"

"$KUBECTL" version --request-timeout=10s >/dev/null 2>&1 \
  || die "cannot reach the cluster at KUBECONFIG=${KUBECONFIG:-~/.kube/config}; run 'make cluster' or fix KUBECONFIG"

# The image tag is pinned; an annotation with the image's digest restarts the pod when it changes.
image_id="$(readlink -f "$IMAGES_DIR/operator.tar" 2>/dev/null | xargs -r basename)"
log "installing the operator (chart charts/testenv-operator, namespace $NAMESPACE)"
"$HELM" upgrade --install testenv-operator "$ROOT_DIR/charts/testenv-operator" \
  --namespace "$NAMESPACE" --create-namespace \
  --set-string "podAnnotations.testenv\.dev/image-archive=${image_id:-none}" \
  --wait --timeout 180s >"$CACHE_DIR/logs/helm-install.log" 2>&1 || {
    tail -n 20 "$CACHE_DIR/logs/helm-install.log" >&2
    "$KUBECTL" -n "$NAMESPACE" get pods -o wide >&2 || true
    "$KUBECTL" -n "$NAMESPACE" logs deploy/testenv-operator --tail=30 >&2 || true
    die "installing the operator failed; log: $CACHE_DIR/logs/helm-install.log"
  }
"$KUBECTL" wait --for=condition=Established crd/testenvironments.testenv.dev --timeout=60s >/dev/null
ok "operator running in namespace $NAMESPACE"
