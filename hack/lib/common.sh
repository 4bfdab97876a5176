# Shared helpers for the local-cluster scripts. Source, do not execute.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT_DIR="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=../versions.env
source "$HACK_DIR/versions.env"

# Everything expensive (Go module/build caches, built binaries, images) lives
# here, keyed by version, and survives fresh clones of the repository.
CACHE_DIR="${TESTENV_CACHE:-$HOME/.cache/testenv}"
# Runtime state of the local cluster (certs, etcd data, logs, pid files).
STATE_DIR="${TESTENV_CLUSTER_DIR:-/var/lib/testenv-cluster}"
LOG_DIR="$STATE_DIR/logs"
RUN_DIR="$STATE_DIR/run"

K8S_BIN="$CACHE_DIR/bin/kubernetes-$KUBE_VERSION"
ETCD_BIN="$CACHE_DIR/bin/etcd-$ETCD_VERSION"
COREDNS_BIN="$CACHE_DIR/bin/coredns-$COREDNS_VERSION"
HELM_BIN="$CACHE_DIR/bin/helm-$HELM_VERSION"
ACTIONLINT_BIN="$CACHE_DIR/bin/actionlint-$ACTIONLINT_VERSION"
KWOK_BIN="$CACHE_DIR/bin/kwok-$KWOK_VERSION"

export GOMODCACHE="$CACHE_DIR/go/mod"
export GOCACHE="$CACHE_DIR/go/build"
export GOFLAGS="-mod=mod"
export GOTOOLCHAIN=local

log()  { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
ok()   { printf '\033[1;32m ok\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[1;33m !!\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[1;31mERR\033[0m %s\n' "$*" >&2; exit 1; }

now() { date +%s; }

# Images: archives cached by content, and the set the cluster imports at start.
IMAGES_CACHE="$CACHE_DIR/images"
IMAGES_DIR="$IMAGES_CACHE/current"
PAUSE_VERSION=3.10
PAUSE_IMAGE="docker.io/testenv/pause:$PAUSE_VERSION"
BASE_IMAGE="testenv/python-base:bookworm-1"
# The project version: pyproject.toml is its single source.
APP_VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT_DIR/pyproject.toml" | head -n1)"

# installed PACKAGE — is the Debian package installed (not merely known, or removed with its
# configuration left behind)?
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
