"""Faults during a pytest session that uses the plugin (chaos suite)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.usefixtures("operator_installed")]

POD_KILLED_TEST = """
import json, os, subprocess
from datetime import UTC, datetime


def kubectl(*args):
    return subprocess.run([os.environ["KUBECTL"], *args], capture_output=True, text=True,
                          check=True).stdout


def test_backend_pod_killed_mid_test(real_services_sync):
    rs = real_services_sync
    token = rs.auth_client.login("test@example.com", "password")
    assert rs.backend_client.me(token)["email"] == "test@example.com"
    ns, name = rs.environment.namespace, rs.environment.name
    pod = kubectl("-n", ns, "get", "pod", "-l", "testenv.dev/service=backend",
                  "-o", "jsonpath={.items[0].metadata.name}")
    killed_at = datetime.now(UTC).replace(microsecond=0)
    kubectl("-n", ns, "delete", "pod", pod, "--wait=true")
    kubectl("-n", ns, "rollout", "status", "deploy/backend", "--timeout=120s")
    kubectl("wait", "--for=jsonpath={.status.phase}=Ready", f"testenv/{name}", "--timeout=120s")
    env = json.loads(kubectl("get", "testenv", name, "-o", "json"))
    degraded = next(c for c in env["status"]["conditions"] if c["type"] == "Degraded")
    changed = datetime.fromisoformat(degraded["lastTransitionTime"].replace("Z", "+00:00"))
    assert degraded["status"] == "False" and changed >= killed_at  # went Degraded, then back
    # The same forward, the same client: the next request reaches the new pod.
    assert rs.backend_client.me(token)["email"] == "test@example.com"
"""


def test_service_pod_killed_during_a_test(
    pytester: pytest.Pytester,
    kubectl: str,
    monkeypatch: pytest.MonkeyPatch,
    record_property: Callable[[str, object], None],
) -> None:
    """The environment goes Degraded then Ready; the plugin's forward recovers, and the
    client's next request succeeds."""
    record_property("faults_injected", 1)
    monkeypatch.setenv("KUBECTL", kubectl)
    pytester.makepyfile(test_pod=POD_KILLED_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=600)
    result.assert_outcomes(passed=1)
