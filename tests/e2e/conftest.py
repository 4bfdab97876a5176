"""Shared fixtures of the e2e suite: the real cluster KUBECONFIG points at.

An unreachable cluster or a missing operator fails these tests; it never skips them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import kr8s
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _pinned(name: str) -> str | None:
    versions = dict(
        line.split("=", 1)
        for line in (ROOT / "hack/versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    cache = Path(os.environ.get("TESTENV_CACHE", Path.home() / ".cache/testenv"))
    paths = {
        "kubectl": cache / f"bin/kubernetes-{versions['KUBE_VERSION']}/kubectl",
        "helm": cache / f"bin/helm-{versions['HELM_VERSION']}/helm",
    }
    path = paths[name]
    return str(path) if path.exists() else shutil.which(name)


@pytest.fixture(scope="session")
def kubectl() -> str:
    """Path of a kubectl matching the cluster (the project's pinned build, else PATH)."""
    path = os.environ.get("KUBECTL") or _pinned("kubectl")
    if not path:
        pytest.fail("no kubectl found: run 'make cluster' (it builds one) or put kubectl on PATH")
    return path


@pytest.fixture(scope="session")
def kube_api() -> kr8s.Api:
    """A synchronous kr8s client of the cluster; fails loudly when it cannot be reached."""
    try:
        api = kr8s.api()
        api.version()
    except Exception as exc:  # kr8s raises several types for "no cluster"
        pytest.fail(
            f"cannot reach a Kubernetes cluster (KUBECONFIG={os.environ.get('KUBECONFIG')}): "
            f"{exc}. Run 'make cluster' or point KUBECONFIG at a cluster."
        )
    return api


@pytest.fixture(scope="session")
def operator_installed(kube_api: kr8s.Api, kubectl: str) -> None:
    """The TestEnvironment CRD is served and the operator runs (installed by `make test`)."""
    crd = subprocess.run(
        [kubectl, "get", "crd", "testenvironments.testenv.dev"],
        capture_output=True,
        text=True,
        check=False,
    )
    if crd.returncode != 0:
        install = subprocess.run(
            ["bash", str(ROOT / "hack/install-operator.sh")],
            capture_output=True,
            text=True,
            check=False,
        )
        if install.returncode != 0:
            pytest.fail(
                f"the operator is not installed and installing it failed:\n{install.stderr}"
            )
    ready = subprocess.run(
        [
            kubectl,
            "-n",
            "testenv-system",
            "rollout",
            "status",
            "deploy/testenv-operator",
            "--timeout=120s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if ready.returncode != 0:
        pytest.fail(f"the operator is not running: {ready.stderr}")
