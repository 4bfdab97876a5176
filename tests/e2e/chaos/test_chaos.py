"""Faults injected into the real cluster; each scenario asserts the outcome, and the session's
leak check (tests/e2e/conftest.py) asserts that nothing is left afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import (
    OPERATOR_NAMESPACE,
    OPERATOR_SELECTOR,
    Kubectl,
    kill_service_pods,
    manifest,
    status,
    wait_ready,
)

from testenv.api import REFERENCE_IMAGE_TAG

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.usefixtures("operator_installed")]

ROOT = Path(__file__).resolve().parents[3]
# The auth server signs with TESTENV_SECRET_KEY: it asks for it.
AUTH = {"name": "auth", "image": f"testenv/auth:{REFERENCE_IMAGE_TAG}", "secretKey": True}


def _items(k: Kubectl, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = k("get", kind, "-n", namespace, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _kill_operator(k: Kubectl) -> None:
    """Delete the running operator pod and wait until it is gone (its replacement starts)."""
    pods = _items(k, "pod", OPERATOR_NAMESPACE, OPERATOR_SELECTOR)
    live = [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]
    for name in live:
        k("delete", "pod", "-n", OPERATOR_NAMESPACE, name, "--wait=false")
    for name in live:
        k(
            "wait",
            "--for=delete",
            f"pod/{name}",
            "-n",
            OPERATOR_NAMESPACE,
            "--timeout=120s",
            check=False,
        )


def test_operator_killed_ten_times_while_environments_provision(
    k: Kubectl, envs: Any, record_property: Any
) -> None:
    record_property("faults_injected", 10)
    names: list[str] = []
    for kill in range(10):
        if kill % 2 == 0:  # new environments keep arriving between kills
            names.append(envs({"services": [AUTH]}))
        _kill_operator(k)
    k("rollout", "status", "deploy/testenv-operator", "-n", OPERATOR_NAMESPACE, "--timeout=180s")
    for name in names:
        wait_ready(k, name, timeout="300s")
    for name in names:
        ns = status(k, name)["namespace"]
        selector = f"testenv.dev/environment={name}"
        # One pod of the one service: no duplicate from a restarted operator's create.
        pods = _items(k, "pod", ns, selector)
        assert [p["metadata"]["labels"]["testenv.dev/service"] for p in pods] == ["auth"]
        assert [s["metadata"]["name"] for s in _items(k, "svc", ns, selector)] == ["auth"]
        secrets = [s["metadata"]["name"] for s in _items(k, "secret", ns, selector)]
        assert secrets == ["testenv-secrets"]
        configmaps = [c["metadata"]["name"] for c in _items(k, "configmap", ns, selector)]
        assert configmaps == ["testenv-discovery"]


def test_namespace_deleted_behind_the_operators_back(
    k: Kubectl, envs: Any, record_property: Any
) -> None:
    """Reported as Degraded (NamespaceDeleted), then recreated in a new namespace: Ready."""
    record_property("faults_injected", 1)
    name = envs({"services": [AUTH]})
    wait_ready(k, name)
    ns = status(k, name)["namespace"]
    old_uid = json.loads(k("get", "ns", ns, "-o", "json").stdout)["metadata"]["uid"]
    k("delete", "ns", ns, "--wait=false")
    k("wait", "--for=jsonpath={.status.phase}=Degraded", f"testenv/{name}", "--timeout=60s")
    degraded = status(k, name)
    assert "deleted behind the operator's back" in degraded["message"]
    reason = next(c for c in degraded["conditions"] if c["type"] == "Ready")["reason"]
    assert reason == "NamespaceDeleted"
    k("wait", "--for=delete", f"namespace/{ns}", "--timeout=180s", check=False)
    k("wait", "--for=jsonpath={.status.phase}=Ready", f"testenv/{name}", "--timeout=240s")
    new_uid = json.loads(k("get", "ns", ns, "-o", "json").stdout)["metadata"]["uid"]
    assert new_uid != old_uid


LOCAL_CLUSTER = Path(os.environ.get("TESTENV_CLUSTER_DIR", "/var/lib/testenv-cluster"))


@pytest.mark.skipif(
    os.environ.get("KUBECONFIG") != str(LOCAL_CLUSTER / "admin.kubeconfig"),
    reason="restarts the API server of the project's local cluster only",
)
def test_apiserver_restart_while_the_operator_watches(
    k: Kubectl, envs: Any, record_property: Any
) -> None:
    """After kube-apiserver restarts, the operator's watches reconnect (no silent watch):
    a new environment becomes Ready and a deleted pod is healed, well within the
    watch timeouts (a silent watch would go unnoticed for minutes)."""
    record_property("faults_injected", 1)
    before = envs({"services": [AUTH]})
    wait_ready(k, before)
    restart = subprocess.run(
        ["bash", str(ROOT / "hack/cluster.sh"), "restart", "kube-apiserver"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert restart.returncode == 0, restart.stdout + restart.stderr
    after = envs({"services": [AUTH]})
    wait_ready(k, after, timeout="120s")
    ns = status(k, before)["namespace"]
    kill_service_pods(k, ns, "auth")
    wait_ready(k, before, timeout="120s")


def test_create_and_delete_cycles_leave_nothing(k: Kubectl, record_property: Any) -> None:
    """Many environments created and deleted at once, without waiting for them: every one
    and its namespace is gone afterwards (the session's leak check waits and counts)."""
    cycles = 100
    record_property("faults_injected", 0)
    names = [f"cycle-{uuid.uuid4().hex[:8]}" for _ in range(cycles)]
    for start in range(0, cycles, 25):  # bursts of 25: create, then delete at once
        batch = names[start : start + 25]
        docs = "---\n".join(manifest(n, {"services": [], "ttl": "10m"}) for n in batch)
        k("apply", "-f", "-", input=docs)
        k("delete", "testenv", *batch, "--wait=false")
    k("wait", "--for=delete", *(f"testenv/{n}" for n in names), "--timeout=300s", check=False)
    left = k("get", "testenv", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert not set(left) & set(names)
    namespaces = k(
        "get",
        "ns",
        "-l",
        "app.kubernetes.io/managed-by=testenv-operator",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ).stdout.split()
    for ns in set(namespaces) & {f"testenv-{n}" for n in names}:
        k("wait", "--for=delete", f"namespace/{ns}", "--timeout=300s", check=False)
