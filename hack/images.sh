#!/usr/bin/env bash
# Build the project's images without a registry (Debian's buildah), cache them as archives
# keyed by their inputs, and import them into the local cluster's containerd when it runs.
#
#   hack/images.sh [pause|base|apps|stock|all]
#   hack/images.sh context DIR   only the app build context, for `docker build` elsewhere
source "$(dirname "$0")/lib/common.sh"

# name:module:extras — the operator image gets the operator's extras, the services theirs; none
# of them gets pytest (the core library needs none).
APPS=(operator:testenv_operator:operator auth:testenv_services.auth:services backend:testenv_services.backend:services frontend:testenv_services.frontend:services)
BUILD_LOG="$CACHE_DIR/logs/images.log"
mkdir -p "$IMAGES_CACHE" "$IMAGES_DIR" "$CACHE_DIR/logs"
export BUILDAH_ISOLATION=chroot STORAGE_DRIVER=vfs

step() {
  local what="$1"; shift
  local start; start=$(now)
  log "$what (log: $BUILD_LOG)"
  if ! "$@" >>"$BUILD_LOG" 2>&1; then
    tail -n 20 "$BUILD_LOG" >&2
    die "$what failed; full log: $BUILD_LOG"
  fi
  ok "$what done in $(( $(now) - start ))s"
}

# archive NAME REF KEY — path of the cached archive for image REF with input hash KEY.
archive_path() { echo "$IMAGES_CACHE/$1-$2.tar"; }

# publish NAME ARCHIVE — make ARCHIVE the current one for NAME and import it if the cluster runs.
publish() {
  local name="$1" archive="$2"
  ln -sfn "$archive" "$IMAGES_DIR/$name.tar"
  local sock="$STATE_DIR/run/containerd.sock"
  if [[ -S "$sock" ]] && ctr --address "$sock" version >/dev/null 2>&1; then
    ctr --address "$sock" -n k8s.io images import "$archive" >>"$BUILD_LOG" 2>&1 \
      || die "importing $archive into the cluster failed; log: $BUILD_LOG"
  fi
}

push_archive() {  # IMAGE ARCHIVE
  rm -f "$2.tmp"
  buildah push "$1" "docker-archive:$2.tmp:$1" && mv "$2.tmp" "$2"
}

build_pause() {
  local archive; archive="$(archive_path pause "$PAUSE_VERSION")"
  if [[ ! -f "$archive" ]]; then
    local src ctx="$CACHE_DIR/build/pause"
    # pause.c ships inside the k8s.io/kubernetes module the cluster is built from.
    src="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/build/pause/linux/pause.c"
    [[ -f "$src" ]] || die "pause.c not found in k8s.io/kubernetes@$KUBE_VERSION ($src)"
    mkdir -p "$ctx"
    step "compiling pause $PAUSE_VERSION" gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-testenv" -o "$ctx/pause" "$src"
    cp "$ROOT_DIR/images/pause/Containerfile" "$ctx/"
    step "building image ${PAUSE_IMAGE#docker.io/}" buildah bud --layers=false -t "${PAUSE_IMAGE#docker.io/}" "$ctx"
    step "archiving pause image" push_archive "${PAUSE_IMAGE#docker.io/}" "$archive"
  else
    ok "pause image cached"
  fi
  publish pause "$archive"
}

build_base() {
  local key archive
  key="$(sha256sum "$ROOT_DIR/images/python-base/Containerfile" | cut -c1-12)"
  archive="$(archive_path python-base "$key")"
  if [[ ! -f "$archive" ]]; then
    local ctx="$CACHE_DIR/build/python-base" rootfs="$CACHE_DIR/build/python-base/rootfs"
    rm -rf "$ctx"; mkdir -p "$rootfs"
    step "debootstrap bookworm rootfs with python3 (a few minutes the first time)" \
      debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates bookworm "$rootfs" http://deb.debian.org/debian
    # Trim what a runtime image never needs, and add the unprivileged user pods run as.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
    echo "app:x:10001:10001:app:/tmp:/usr/sbin/nologin" >>"$rootfs/etc/passwd"
    echo "app:x:10001:" >>"$rootfs/etc/group"
    step "packing rootfs" tar -C "$rootfs" -cf "$ctx/rootfs.tar" .
    rm -rf "$rootfs"
    cp "$ROOT_DIR/images/python-base/Containerfile" "$ctx/"
    step "building image $BASE_IMAGE" buildah bud --layers=false -t "$BASE_IMAGE" "$ctx"
    step "archiving $BASE_IMAGE" push_archive "$BASE_IMAGE" "$archive"
    rm -f "$ctx/rootfs.tar"
  else
    ok "base image cached"
    buildah inspect "$BASE_IMAGE" >/dev/null 2>&1 || step "loading $BASE_IMAGE into buildah" buildah pull "docker-archive:$archive"
  fi
}

apps_key() {
  (cd "$ROOT_DIR" && git ls-files -co --exclude-standard pyproject.toml uv.lock images/app core operator services \
     | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-12
}

# uv_bin — uv, to read uv.lock: the project's virtualenv has it, else one cached by version.
uv_bin() {
  if [[ -x "$ROOT_DIR/.venv/bin/uv" ]]; then echo "$ROOT_DIR/.venv/bin/uv"; return; fi
  local dir="$CACHE_DIR/tools/uv"
  [[ -x "$dir/bin/uv" ]] || python3 -m pip install --quiet --target "$dir" uv >>"$BUILD_LOG" 2>&1 \
    || die "installing uv failed; log: $BUILD_LOG"
  echo "$dir/bin/uv"
}

# app_context DIR — the build context of images/app/Containerfile: wheels of the project and
# of its dependencies, so that the image build itself needs no network.
app_context() {
  local ctx="$1"
  rm -rf "$ctx"; mkdir -p "$ctx/wheels"
  # The exact versions of uv.lock, as constraints for pip.
  step "exporting the locked versions" \
    "$(uv_bin)" export --project "$ROOT_DIR" --frozen --no-hashes --no-emit-project \
      --extra operator --extra services --no-dev --output-file "$ctx/constraints.txt"
  step "building wheels of the project and its dependencies" \
    python3 -m pip wheel --quiet --wheel-dir "$ctx/wheels" -c "$ctx/constraints.txt" \
      "$ROOT_DIR[operator,services]"
  # pip evaluated the markers for this machine's Python; the images run Debian's 3.11.2. Wheels
  # of the packages that depend on the Python version (e.g. async-timeout before 3.11.3) go in
  # too, so the offline install in the image finds them.
  local by_version
  by_version="$(sed -n "s/ *;.*python_full_version.*//p; s/ *;.*python_version.*//p" "$ctx/constraints.txt")"
  if [[ -n "$by_version" ]]; then
    # shellcheck disable=SC2086
    step "building wheels of version-dependent packages" \
      python3 -m pip wheel --quiet --no-deps --wheel-dir "$ctx/wheels" $by_version
  fi
  cp "$ROOT_DIR/images/app/Containerfile" "$ctx/"
}

build_apps() {
  local key; key="$(apps_key)"
  local missing=0
  for app in "${APPS[@]}"; do [[ -f "$(archive_path "${app%%:*}" "$key")" ]] || missing=1; done
  if [[ $missing == 1 ]]; then
    build_base
    local ctx="$CACHE_DIR/build/app"
    app_context "$ctx"
    for app in "${APPS[@]}"; do
      local name module extras ref
      IFS=: read -r name module extras <<<"$app"
      ref="testenv/$name:$APP_VERSION"
      step "building image $ref" buildah bud --layers=false --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "APP_MODULE=$module" --build-arg "EXTRAS=$extras" -t "$ref" "$ctx"
      step "archiving $ref" push_archive "$ref" "$(archive_path "$name" "$key")"
    done
  else
    ok "application images cached (inputs $key)"
  fi
  for app in "${APPS[@]}"; do publish "${app%%:*}" "$(archive_path "${app%%:*}" "$key")"; done
}

# Images of Debian packages (the postgres and redis presets, nginx): FROM the base image, each
# keyed by its directory's content and the project version (their tag).
STOCK=(postgres redis nginx)

build_stock() {
  for name in "${STOCK[@]}"; do
    local key archive ref="testenv/$name:$APP_VERSION"
    key="$( (cd "$ROOT_DIR/images/$name" && LC_ALL=C sha256sum ./*; \
             echo "$APP_VERSION $BASE_IMAGE") | sha256sum | cut -c1-12)"
    archive="$(archive_path "$name" "$key")"
    if [[ ! -f "$archive" ]]; then
      build_base
      step "building image $ref from Debian's packages" buildah bud --layers=false \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$ref" "$ROOT_DIR/images/$name"
      step "archiving $ref" push_archive "$ref" "$archive"
    else
      ok "image $ref cached (inputs $key)"
    fi
    publish "$name" "$archive"
  done
}

case "${1:-all}" in
  pause) build_pause ;;
  base) build_base ;;
  apps) build_apps ;;
  stock) build_stock ;;
  all) build_pause; build_apps; build_stock ;;
  context) app_context "${2:?usage: hack/images.sh context DIR}"; ok "build context in $2" ;;
  *) die "usage: hack/images.sh [pause|base|apps|stock|all|context DIR]" ;;
esac
