#!/usr/bin/env bash
# Debian packages the test suite needs beyond the cluster's own (hack/cluster.sh installs those).
source "$(dirname "$0")/lib/common.sh"
PACKAGES=(chromium curl)
missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing Debian packages: ${missing[*]}"
  mkdir -p "$CACHE_DIR/logs"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") \
    >"$CACHE_DIR/logs/apt-deps.log" 2>&1 || die "apt-get install ${missing[*]} failed; read $CACHE_DIR/logs/apt-deps.log"
fi
