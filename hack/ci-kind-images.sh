#!/usr/bin/env bash
# CI on kind (.github/workflows/ci.yml): build every image with Docker from the same
# Containerfiles `make images` builds with buildah, and load them into the kind cluster.
#   KIND_CLUSTER (default testenv), BASE_IMAGE (default python:3.11-slim-bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."
cluster="${KIND_CLUSTER:-testenv}"
base="${BASE_IMAGE:-python:3.11-slim-bookworm}"
tag="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT

bash hack/images.sh context "$ctx"
images=()
for app in operator:testenv_operator auth:testenv_services.auth \
           backend:testenv_services.backend frontend:testenv_services.frontend; do
  image="testenv/${app%%:*}:$tag"
  docker build --build-arg BASE_IMAGE="$base" --build-arg APP_MODULE="${app#*:}" -t "$image" "$ctx"
  images+=("$image")
done
for stock in postgres redis nginx; do
  image="testenv/$stock:$tag"
  docker build --build-arg BASE_IMAGE="$base" -t "$image" "images/$stock"
  images+=("$image")
done
for image in "${images[@]}"; do
  kind load docker-image "$image" --name "$cluster"
done
echo "loaded into kind cluster $cluster: ${images[*]}"
