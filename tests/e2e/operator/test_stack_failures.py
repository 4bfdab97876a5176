"""A user's stack that cannot start fails fast, with the evidence in its status."""

from __future__ import annotations

from typing import Any

import pytest
from e2e_helpers import Kubectl, status

from testenv.api import REFERENCE_IMAGE_TAG

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]

POSTGRES = f"testenv/postgres:{REFERENCE_IMAGE_TAG}"


def wait_failed(k: Kubectl, name: str) -> dict[str, Any]:
    proc = k(
        "wait",
        "--for=jsonpath={.status.phase}=Failed",
        f"testenv/{name}",
        "--timeout=90s",
        check=False,
    )
    st = status(k, name)
    assert proc.returncode == 0, st
    return st


def test_a_failing_job_fails_the_environment_with_its_log(k: Kubectl, envs: Any) -> None:
    name = envs(
        {
            "services": [],
            "jobs": [
                {
                    "name": "migrate",
                    "image": POSTGRES,
                    "command": ["sh", "-c", "echo 'migration 007 is broken' >&2; exit 3"],
                }
            ],
        }
    )
    st = wait_failed(k, name)
    assert "job migrate failed" in st["message"]
    assert "migration 007 is broken" in st["message"]
    assert st["jobs"][0]["phase"] == "Failed"


def test_a_service_that_cannot_start_fails_with_its_logs(k: Kubectl, envs: Any) -> None:
    name = envs(
        {
            "services": [
                {
                    "name": "db",
                    "image": POSTGRES,
                    "command": ["sh", "-c", "echo 'no such database engine' >&2; exit 1"],
                    "ports": [{"name": "pg", "port": 5432, "protocol": "tcp"}],
                },
                {"name": "app", "image": POSTGRES, "dependsOn": ["db"]},
            ]
        }
    )
    st = wait_failed(k, name)
    assert "service db" in st["message"]
    assert "no such database engine" in st["message"]
    app = next(s for s in st["services"] if s["name"] == "app")
    assert app["reason"] == "WaitingForDependencies"
    # what waits for the failed service was never started
    services = k(
        "-n",
        st["namespace"],
        "get",
        "pods",
        "-o",
        "jsonpath={.items[*].metadata.labels.testenv\\.dev/service}",
    ).stdout.split()
    assert set(services) == {"db"}
