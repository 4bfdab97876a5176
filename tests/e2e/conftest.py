"""Shared fixtures of the e2e suite: the real cluster KUBECONFIG points at.

An unreachable cluster or a missing operator fails these tests; it never skips them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kr8s
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))

import e2e_leaks  # noqa: E402
from e2e_helpers import Kubectl, manifest  # noqa: E402
from tools import tool  # noqa: E402


@pytest.fixture(scope="session")
def kubectl() -> str:
    """Path of a kubectl matching the cluster (the project's pinned build, else PATH)."""
    path = os.environ.get("KUBECTL") or tool("kubectl")
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


@pytest.fixture(scope="session", autouse=True)
def leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the e2e session: nothing it created is left (tests/e2e_leaks.py). Under xdist
    this worker hands what existed at its start to the controller, which checks once every
    worker is done."""
    if not any(item.get_closest_marker("e2e") for item in request.session.items):
        yield
        return
    kubectl = os.environ.get("KUBECTL") or tool("kubectl") or "kubectl"
    before = e2e_leaks.testenv_objects(kubectl)
    yield
    workeroutput = getattr(request.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[e2e_leaks.WORKER_OUTPUT_KEY] = {"kubectl": kubectl, "before": sorted(before)}
        return
    leaked = e2e_leaks.left_behind(kubectl, before)
    assert not leaked, e2e_leaks.message(leaked)


@pytest.fixture
def k(kubectl: str) -> Kubectl:
    """Run kubectl; fails the test with its stderr unless ``check=False``."""

    def run(
        *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [kubectl, *args], input=input, capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    return run


@pytest.fixture
def envs(k: Kubectl) -> Iterator[Callable[[dict[str, Any] | None], str]]:
    """Create TestEnvironments with unique names; delete them afterwards."""
    created: list[str] = []

    def create(spec: dict[str, Any] | None = None) -> str:
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        k("apply", "-f", "-", input=manifest(name, spec))
        created.append(name)
        return name

    yield create
    for name in created:
        k("delete", "testenv", name, "--ignore-not-found", "--wait=false", check=False)
