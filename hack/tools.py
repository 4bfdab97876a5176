"""Paths of the tools the project pins in hack/versions.env and builds into its cache.

Scripts in hack/ import it directly; bench/ and the e2e tests add hack/ to ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def versions() -> dict[str, str]:
    """``NAME=value`` lines of hack/versions.env."""
    lines = (ROOT / "hack/versions.env").read_text().splitlines()
    return dict(
        line.strip().split("=", 1)
        for line in lines
        if "=" in line and not line.lstrip().startswith("#")
    )


def cache_dir() -> Path:
    return Path(os.environ.get("TESTENV_CACHE", Path.home() / ".cache/testenv"))


def pinned_path(tool: str) -> Path:
    """Where the project's build of ``tool`` (kubectl, helm, actionlint) lives in the cache."""
    v = versions()
    return {
        "kubectl": cache_dir() / f"bin/kubernetes-{v['KUBE_VERSION']}/kubectl",
        "helm": cache_dir() / f"bin/helm-{v['HELM_VERSION']}/helm",
        "actionlint": cache_dir() / f"bin/actionlint-{v['ACTIONLINT_VERSION']}/actionlint",
        "kwok": cache_dir() / f"bin/kwok-{v['KWOK_VERSION']}/kwok",
        "kwokctl": cache_dir() / f"bin/kwok-{v['KWOK_VERSION']}/kwokctl",
        "kube-apiserver": cache_dir() / f"bin/kubernetes-{v['KUBE_VERSION']}/kube-apiserver",
        "kube-controller-manager": cache_dir()
        / f"bin/kubernetes-{v['KUBE_VERSION']}/kube-controller-manager",
        "kube-scheduler": cache_dir() / f"bin/kubernetes-{v['KUBE_VERSION']}/kube-scheduler",
        "etcd": cache_dir() / f"bin/etcd-{v['ETCD_VERSION']}/etcd",
    }[tool]


def tool(name: str) -> str | None:
    """``$KUBECTL``/``$HELM`` if set, else the pinned build if present, else ``name`` on PATH."""
    override = os.environ.get(name.upper())
    if override:
        return override
    path = pinned_path(name)
    return str(path) if path.exists() else shutil.which(name)
