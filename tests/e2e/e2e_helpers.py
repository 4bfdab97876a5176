"""Helpers of the e2e suites that talk to the cluster with kubectl (fixtures ``k`` and
``envs`` are in conftest.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml

OPERATOR_NAMESPACE = "testenv-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=testenv-operator"
READY_TIMEOUT = "240s"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def manifest(name: str, spec: dict[str, Any] | None = None) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "testenv.dev/v1alpha1",
        "kind": "TestEnvironment",
        "metadata": {"name": name},
    }
    if spec is not None:
        doc["spec"] = spec
    return yaml.safe_dump(doc)


def status(k: Kubectl, name: str) -> dict[str, Any]:
    out = k("get", "testenv", name, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out).get("status") or {}
    return result


def wait_ready(k: Kubectl, name: str, timeout: str = READY_TIMEOUT) -> None:
    proc = k(
        "wait", "--for=condition=Ready", f"testenv/{name}", f"--timeout={timeout}", check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"testenv/{name} not Ready: {proc.stderr}\nstatus: "
            f"{json.dumps(status(k, name), indent=1)}"
        )


def kill_service_pods(k: Kubectl, namespace: str, service: str, timeout: str = "120s") -> str:
    """Delete a service's pods behind the operator's back, wait until they are gone and the
    pods the operator made in their place are Ready; the new pods' names."""
    selector = f"testenv.dev/service={service}"
    k("-n", namespace, "delete", "pod", "-l", selector, "--wait=true")
    k("-n", namespace, "wait", "--for=create", "pod", "-l", selector, f"--timeout={timeout}")
    k(
        "-n",
        namespace,
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        selector,
        f"--timeout={timeout}",
    )
    return k("-n", namespace, "get", "pod", "-l", selector, "-o", "name").stdout.strip()
