# testenv — see README.md. Targets that touch the local cluster need root.
SHELL := /bin/bash
.DEFAULT_GOAL := help

LOCAL_KUBECONFIG := /var/lib/testenv-cluster/admin.kubeconfig
# Point KUBECONFIG at your own cluster to use it instead of the local one.
export KUBECONFIG ?= $(LOCAL_KUBECONFIG)
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help venv deps tools cluster cluster-down cluster-status images ensure-cluster install-operator \
        demo demo-down test test-unit test-e2e lint manifests bench flake-check reliability

help:  ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# Exact versions from uv.lock (`uv lock` after changing dependencies in pyproject.toml).
$(VENV)/.installed: pyproject.toml uv.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip uv
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/uv sync --quiet --frozen --inexact --active --all-extras
	touch $@

venv: $(VENV)/.installed  ## Python virtualenv with the project and its dev tools

deps:  ## Debian packages the tests need besides the cluster's (headless Chromium)
	@bash hack/install-deps.sh

cluster:  ## bring up the local single-node cluster (idempotent)
	@bash hack/cluster.sh up

cluster-down:  ## stop the local cluster and remove all its state
	@bash hack/cluster.sh down

cluster-status:  ## components of the local cluster and their health
	@bash hack/cluster.sh status

images:  ## build every image and import it into the local cluster
	@bash hack/images.sh all

ensure-cluster:  ## the local cluster (unless KUBECONFIG points elsewhere) with fresh images
	@if [ "$$KUBECONFIG" = "$(LOCAL_KUBECONFIG)" ]; then bash hack/cluster.sh up >/dev/null && bash hack/images.sh all; \
	 else echo "using your cluster: KUBECONFIG=$$KUBECONFIG (load the images from 'make images' into it yourself)"; fi

install-operator: venv ensure-cluster  ## install (or upgrade) the operator with the Helm chart
	@bash hack/install-operator.sh

demo: install-operator  ## the main job: a real environment, its status and URLs
	@$(PY) hack/demo.py

demo-down:  ## delete the demo environment
	@$(PY) hack/demo.py --delete

tools:  ## pinned tools the tests use (actionlint; kwok for the scale benchmark), from the Go module proxy
	@bash hack/build-binaries.sh actionlint
	@bash hack/build-binaries.sh kwok

test: venv deps tools install-operator  ## everything: lint, unit tests, e2e tests on the real cluster
	$(MAKE) lint
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test-unit: venv tools  ## unit tests only (seconds, no cluster, no processes)
	$(PY) -m pytest -m "not e2e and not integration" -q $(PYTEST_ARGS)

test-e2e: venv deps install-operator  ## e2e tests only
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

RUNS ?= 5
flake-check: venv deps install-operator  ## the whole suite RUNS times (5) on one cluster; every failure
	@bash hack/flake-check.sh $(RUNS)

reliability: venv deps install-operator  ## faults injected and survived, hostile inputs refused, leaks (0)
	@$(PY) hack/reliability.py

lint: venv  ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

manifests: venv  ## regenerate the chart's CRD and manifests/ from the models
	$(PY) hack/gen-manifests.py

BENCH_ARGS ?=
bench: venv tools ensure-cluster install-operator  ## every benchmark against its same-run baseline: bench/results.{json,md}
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/import_cost.py
	$(PY) bench/burst.py
