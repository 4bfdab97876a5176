"""Faults during a pytest session that uses the plugin (chaos suite)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
import yaml
from test_plugin_e2e import get_env, wait_gone

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
    # The operator makes its replacement (the next name of its slot).
    kubectl("-n", ns, "wait", "--for=create", "pod", "-l", "testenv.dev/service=backend",
            "--timeout=120s")
    kubectl("-n", ns, "wait", "--for=condition=Ready", "pod", "-l",
            "testenv.dev/service=backend", "--timeout=120s")
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


KILLED_TEST = """
import time
from pathlib import Path

def test_hang(real_services_sync):
    Path("backend-url").write_text(real_services_sync.backend_client.base_url)
    Path("env-name").write_text(real_services_sync.environment.name)
    time.sleep(600)
"""


def test_killed_pytest_leaves_nothing_behind(
    pytester: pytest.Pytester, record_property: Callable[[str, object], None]
) -> None:
    """pytest killed with SIGKILL mid-test (no teardown runs): its forwards die with it and
    the environment ends with its lease; the session's leak check then finds its namespace
    gone too."""
    record_property("faults_injected", 1)
    spec = pytester.path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"lease": "20s"}))
    pytester.makepyfile(test_hang=KILLED_TEST)
    proc = pytester.popen(
        [*pytester._getpytestargs(), "-p", "no:cacheprovider", f"--testenv-spec={spec}"],
        stdout=open(pytester.path / "out.txt", "wb"),
        stderr=open(pytester.path / "err.txt", "wb"),
    )
    name_file = pytester.path / "env-name"
    deadline = time.monotonic() + 300
    try:
        while not name_file.exists():  # the inner session provisions: wait for its test
            if proc.poll() is not None:
                out = (pytester.path / "out.txt").read_text(errors="replace")
                err = (pytester.path / "err.txt").read_text(errors="replace")
                pytest.fail(f"inner pytest ended early:\n{out[-3000:]}\n{err[-2000:]}")
            assert time.monotonic() < deadline, "the environment never became ready"
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    address = urlsplit((pytester.path / "backend-url").read_text())
    with pytest.raises(ConnectionRefusedError):  # the forward's listener died with pytest
        socket.create_connection((address.hostname, address.port), timeout=5).close()
    name = name_file.read_text()
    obj = get_env(name)
    assert obj is not None and obj.spec["lease"] == "20s"
    wait_gone(name, timeout=180)
