"""Faults injected into the real cluster; each scenario asserts the outcome, and the session's
leak check (tests/e2e/conftest.py) asserts that nothing is left afterwards."""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e_helpers import OPERATOR_NAMESPACE, OPERATOR_SELECTOR, Kubectl, status, wait_ready

from testenv.api import REFERENCE_IMAGE_TAG

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.usefixtures("operator_installed")]

AUTH = {"name": "auth", "image": f"testenv/auth:{REFERENCE_IMAGE_TAG}"}


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
        assert [d["metadata"]["name"] for d in _items(k, "deploy", ns, selector)] == ["auth"]
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
