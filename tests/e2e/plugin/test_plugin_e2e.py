"""The plugin against a real cluster (KUBECONFIG) with the operator installed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from typing import Any

import kr8s
import pytest
import yaml

from testenv._kube import SyncTestEnvironment as TENV
from testenv.api import SPEC_HASH_LABEL

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]


# Safe to run many times against one environment (no fixed registrations).
RECORD_ENV = """
import os
from pathlib import Path

def test_record(real_services_sync):
    rs = real_services_sync
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    Path(f"env-{worker}").write_text(rs.environment.name)
    token = rs.auth_client.login("test@example.com", "password")
    assert rs.backend_client.me(token)["email"] == "test@example.com"
"""


def run(pytester: pytest.Pytester, *args: str, timeout: float = 600) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)


def api() -> Any:
    return kr8s.api(kubeconfig=os.environ.get("KUBECONFIG"))


def get_env(name: str) -> Any | None:
    try:
        return TENV.get(name, api=api())
    except kr8s.NotFoundError:
        return None


def wait_gone(name: str, timeout: float) -> None:
    """Watch the TestEnvironment until it is deleted (a watch, not a polling sleep)."""
    done = threading.Event()

    def watch() -> None:
        while True:
            obj = get_env(name)
            if obj is None:
                break
            for event, _ in obj.watch():
                if event == "DELETED":
                    done.set()
                    return
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    assert done.wait(timeout), f"TestEnvironment {name} still exists after {timeout:.0f}s"


def wait_namespace_gone(kubectl: str, name: str, timeout: float) -> None:
    done = subprocess.run(
        [kubectl, "wait", "--for=delete", f"namespace/{name}", f"--timeout={timeout:.0f}s"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"namespace {name} still exists: {done.stderr}"


def test_plan_tests_in_real_mode(plan_tests: str, pytester: pytest.Pytester, kubectl: str) -> None:
    pytester.makepyfile(test_plan=plan_tests)
    result = run(pytester, "--testenv-report=report.json")
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines(
        [
            r"testenv: created TestEnvironment pytest-\w+",
            r"testenv: \w+ ready \(\d+\.\ds\) \[1/5\]",
            r"testenv: \w+ ready .*\[5/5\]",
        ]
    )
    report = json.loads((pytester.path / "report.json").read_text())
    env = report["environment"]
    assert env["mode"] == "real" and env["namespace"]
    assert report["phases"].get("ready") is not None
    assert all(c["ok"] for c in report["health_check_results"].values())
    # This cluster (1.34) has the port-forward tunnel: every service's forward uses it.
    assert {c["forward"] for c in report["health_check_results"].values()} == {"tunnel"}
    assert not (pytester.path / ".service_discovery").exists()
    # Teardown deleted it and, without waiting for the garbage collector, confirmed that the
    # namespace is its dependent (or already terminating)...
    result.stdout.re_match_lines(
        [
            rf"testenv: deleted TestEnvironment {env['name']}; (the garbage collector removes "
            rf"namespace {env['namespace']}, its dependent|namespace {env['namespace']} is "
            r"(terminating|gone)) \("
        ]
    )
    assert get_env(env["name"]) is None
    # ... which the garbage collector then removes.
    wait_namespace_gone(kubectl, env["namespace"], timeout=120)


def test_plan_fixtures_in_a_user_conftest(
    plan_conftest: str, plan_tests: str, pytester: pytest.Pytester
) -> None:
    """The plan's Phase 1-2 fixtures pasted into a user's conftest.py (one import line added)
    and its Phase 3 tests, against the real cluster: the user's DevLauncher provisions the
    environment, the plugin provisions nothing, and shutdown leaves nothing behind."""
    pytester.makeconftest(plan_conftest)
    pytester.makepyfile(test_plan=plan_tests)
    result = run(pytester, "-s")  # -s: the launcher's progress lines name the environment
    result.assert_outcomes(passed=2)
    created = [
        m for line in result.outlines if (m := re.search(r"created TestEnvironment (\S+)", line))
    ]
    assert len(created) == 1, result.outlines  # one environment: the user's, not the plugin's
    name = created[0].group(1)
    assert any(f"deleted TestEnvironment {name}" in line for line in result.outlines)
    assert get_env(name) is None
    assert not (pytester.path / ".service_discovery").exists()


def test_xdist_shared_environment(plan_tests: str, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plan=plan_tests, test_record=RECORD_ENV)
    result = run(pytester, "-n", "2", "--testenv-report=report.json")
    result.assert_outcomes(passed=3)
    report = json.loads((pytester.path / "report.json").read_text())
    names = {w["environment"]["name"] for w in report["workers"].values()}
    assert len(names) == 1, report["workers"]  # provisioned once, shared by both workers
    wait_gone(names.pop(), timeout=120)


def own_spec(pytester: pytest.Pytester, suite: str) -> str:
    """``--testenv-spec`` of the reference stack labelled ``suite``: a spec hash of its own,
    so that tests reusing environments never share one (under xdist they run at once)."""
    path = pytester.path / "spec.yaml"
    path.write_text(yaml.safe_dump({"labels": {"suite": suite}}))
    return f"--testenv-spec={path}"


def test_reuse_second_run_reuses_the_ready_environment(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_record=RECORD_ENV)
    spec = own_spec(pytester, "reuse")
    first = run(pytester, "--testenv-reuse", spec)
    first.assert_outcomes(passed=1)
    name = (pytester.path / "env-main").read_text()
    try:
        second = run(pytester, "--testenv-reuse", spec)
        second.assert_outcomes(passed=1)
        assert (pytester.path / "env-main").read_text() == name
        out = second.stdout.str()
        assert f"testenv: reusing TestEnvironment {name}" in out
        assert "testenv: created TestEnvironment" not in out
        obj = get_env(name)
        assert obj is not None and not obj.metadata.get("deletionTimestamp")
        # Only environments offered for reuse count: other sessions' own ones share the hash.
        same_hash = list(
            api().get(
                TENV,
                label_selector={
                    SPEC_HASH_LABEL: obj.labels[SPEC_HASH_LABEL],
                    "testenv.dev/reusable": "true",
                },
            )
        )
        assert [o.name for o in same_hash] == [name]
    finally:
        obj = get_env(name)
        if obj is not None:
            obj.delete()


def test_reuse_never_takes_a_decoy(pytester: pytest.Pytester, k: Any) -> None:
    """An environment someone labelled with our spec hash, but that runs another spec and
    names no creator, is not reused: the hash is recomputed and the creator checked."""
    from testenv._spec import spec_hash
    from testenv.api import TestEnvironmentSpec

    wanted = spec_hash(TestEnvironmentSpec(labels={"suite": "decoy"}))
    decoy = f"decoy-{wanted[:8]}"
    labels = {SPEC_HASH_LABEL: wanted, "testenv.dev/reusable": "true"}
    doc = {
        "apiVersion": "testenv.dev/v1alpha1",
        "kind": "TestEnvironment",
        "metadata": {"name": decoy, "labels": labels},
        "spec": {"services": [], "ttl": "10m"},
    }
    k("apply", "-f", "-", input=yaml.safe_dump(doc))
    pytester.makepyfile(test_record=RECORD_ENV)
    created: str | None = None
    try:
        k("wait", "--for=condition=Ready", f"testenv/{decoy}", "--timeout=120s")
        result = run(pytester, "--testenv-reuse", own_spec(pytester, "decoy"))
        result.assert_outcomes(passed=1)
        created = (pytester.path / "env-main").read_text()
        assert created != decoy
        assert f"reusing TestEnvironment {decoy}" not in result.stdout.str()
    finally:
        k("delete", "testenv", decoy, "--wait=false", check=False)
        if created and (obj := get_env(created)) is not None:
            obj.delete()


RESET_CONFTEST = """
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if item.name == "test_first_time_user_journey":
            item.add_marker(pytest.mark.testenv_reset)
"""


def test_reset_gives_the_plans_journey_clean_data_in_a_reused_environment(
    plan_tests: str, pytester: pytest.Pytester
) -> None:
    """The plan's journey registers a fixed e-mail address: with the reset marker it passes
    again and again against one reused environment; without it, the address is taken."""
    pytester.makeconftest(RESET_CONFTEST)
    pytester.makepyfile(test_plan=plan_tests)
    spec = own_spec(pytester, "reset")
    first = run(pytester, "--testenv-reuse", spec, "--testenv-report=first.json")
    first.assert_outcomes(passed=2)
    name = json.loads((pytester.path / "first.json").read_text())["environment"]["name"]
    try:
        second = run(pytester, "--testenv-reuse", spec)
        second.assert_outcomes(passed=2)
        assert f"testenv: reusing TestEnvironment {name}" in second.stdout.str()
        obj = get_env(name)
        assert obj is not None
        assert obj.raw["status"]["reset"]["phase"] == "Succeeded"

        pytester.makeconftest("")
        third = run(pytester, "--testenv-reuse", spec)
        third.assert_outcomes(passed=1, failed=1)
        third.stdout.fnmatch_lines(["*409*already registered*"])
    finally:
        obj = get_env(name)
        if obj is not None:
            obj.delete()


def test_local_mode_passes_the_same_suite(plan_tests: str, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plan=plan_tests, test_record=RECORD_ENV)
    result = run(pytester, "--testenv-mode=local")
    result.assert_outcomes(passed=3)


def test_operator_missing_or_failed_env_is_reported(pytester: pytest.Pytester) -> None:
    """A spec whose image cannot be pulled: fail with the status message and forensics."""
    spec = pytester.path / "bad.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "services": [
                    {"name": "auth", "image": "testenv/does-not-exist:0", "readinessTimeout": "20s"}
                ]
            }
        )
    )
    pytester.makepyfile(test_x="def test_a(real_services_sync): pass\n")
    result = run(pytester, f"--testenv-spec={spec}", "--testenv-timeout=120")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "EnvironmentFailedError" in out
    assert "testenv forensics" in out and "events in testenv-" in out
    # Each fact once: the cause first, not repeated by the conditions and the service line.
    section = out.split("testenv forensics", 1)[1].split("short test summary info", 1)[0]
    cause = re.search(r"^\s*cause: (.+)$", section, re.M)
    assert cause, section
    assert section.count(cause[1].strip()) == 1, section
