# Local PKI for the cluster: one CA, serving and client certificates, service-account keys.
# Source after common.sh. Everything lands in $PKI_DIR and is created only once.

PKI_DIR="$STATE_DIR/pki"

# cert NAME CN ORG SANS — a certificate signed by the local CA ("" for no ORG / no SANs).
cert() {
  local name="$1" cn="$2" org="$3" sans="$4" subj="/CN=$2"
  [[ -f "$PKI_DIR/$name.crt" ]] && return 0
  [[ -n "$org" ]] && subj="/O=$org/CN=$cn"
  local ext="$PKI_DIR/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$sans" ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$sans"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl genrsa -out "$PKI_DIR/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI_DIR/$name.key" -subj "$subj" -out "$PKI_DIR/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
    -CAcreateserial -days 365 -extfile "$ext" -out "$PKI_DIR/$name.crt" 2>/dev/null
  rm -f "$PKI_DIR/$name.csr" "$ext"
}

# kubeconfig NAME USER-CERT — a kubeconfig for a component, authenticated by its certificate.
kubeconfig() {
  local name="$1" user="$2" out="$STATE_DIR/$1.kubeconfig"
  cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI_DIR/ca.crt
users:
- name: $user
  user:
    client-certificate: $PKI_DIR/$user.crt
    client-key: $PKI_DIR/$user.key
contexts:
- name: testenv-local
  context: {cluster: testenv-local, user: $user}
current-context: testenv-local
EOF
  chmod 600 "$out"
}

make_pki() {
  mkdir -p "$PKI_DIR"
  chmod 700 "$PKI_DIR"
  if [[ ! -f "$PKI_DIR/ca.crt" ]]; then
    openssl genrsa -out "$PKI_DIR/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$PKI_DIR/ca.key" -subj "/CN=testenv-local-ca" -days 3650 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$PKI_DIR/ca.crt" 2>/dev/null
  fi
  local api_sans="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  api_sans+=",DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
  api_sans+=",IP:127.0.0.1,IP:$SERVICE_APISERVER_IP,IP:$NODE_IP"
  cert apiserver kube-apiserver "" "$api_sans"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
  cert admin testenv-admin system:masters ""
  cert controller-manager system:kube-controller-manager "" ""
  cert scheduler system:kube-scheduler "" ""
  cert kube-proxy system:kube-proxy "" ""
  cert coredns system:coredns "" ""
  cert kubelet "system:node:$NODE_NAME" system:nodes ""
  cert kubelet-serving "system:node:$NODE_NAME" system:nodes "DNS:$NODE_NAME,DNS:localhost,IP:$NODE_IP,IP:127.0.0.1"
  if [[ ! -f "$PKI_DIR/sa.key" ]]; then
    openssl genrsa -out "$PKI_DIR/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
  fi
  for c in admin controller-manager scheduler kube-proxy coredns kubelet; do kubeconfig "$c" "$c"; done
}
