"""The ``testenv`` command end to end on the real cluster: up, then forward, then requests
through the forwarded port (across a pod restart), then down leaves nothing. Scripts' output
parses; every failure gives one line and its own exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from e2e_helpers import Kubectl, kill_service_pods

from testenv.api import REFERENCE_IMAGE_TAG

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]

AUTH = f"testenv/auth:{REFERENCE_IMAGE_TAG}"


def run_cli(
    *args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "testenv_cli", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"testenv {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "env.yaml"
    path.write_text(
        yaml.safe_dump(
            {"services": [{"name": "api", "image": AUTH, "port": 8080, "secretKey": True}]}
        )
    )
    return path


@pytest.fixture
def name(k: Kubectl) -> Iterator[str]:
    chosen = f"cli-{uuid.uuid4().hex[:6]}"
    yield chosen
    k("delete", "testenv", chosen, "--ignore-not-found", "--wait=false", check=False)


def read_json_document(stream: Any) -> Any:
    """The first JSON document a process prints (indented: read lines until one parses)."""
    text = ""
    for line in stream:
        text += line
        try:
            return json.loads(text)
        except ValueError:
            continue
    raise AssertionError(f"no JSON document in the output: {text!r}")


def test_up_forward_down(k: Kubectl, spec_file: Path, name: str) -> None:
    up = run_cli("up", name, "-f", str(spec_file), "--ttl", "30m")
    assert f"{name} is Ready in namespace testenv-{name}" in up.stdout
    assert "testenv forward" in up.stdout

    listed = json.loads(run_cli("ls", "-o", "json").stdout)
    assert [e["phase"] for e in listed if e["name"] == name] == ["Ready"]
    st = yaml.safe_load(run_cli("status", name, "-o", "yaml").stdout)
    assert st["status"]["phase"] == "Ready" and st["namespace"] == f"testenv-{name}"
    assert "api: ready" in run_cli("status", name).stdout

    forward = subprocess.Popen(
        [sys.executable, "-m", "testenv_cli", "forward", name, "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert forward.stdout is not None
        records = read_json_document(forward.stdout)
        url = records["api"]["base_url"]
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        # The pod goes away; the forward takes the next connection to its replacement.
        ns = f"testenv-{name}"
        kill_service_pods(k, ns, "api")
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        forward.send_signal(signal.SIGTERM)
        _, stderr = forward.communicate(timeout=30)
    assert forward.returncode == 0, stderr
    assert "forwards stopped" in stderr

    logs = run_cli("logs", name, "api", "--tail", "20").stdout
    assert logs and all(line.startswith("[api-") for line in logs.splitlines())
    extended = json.loads(run_cli("extend", name, "--ttl", "2h", "-o", "json").stdout)
    spec = json.loads(k("get", "testenv", name, "-o", "json").stdout)["spec"]
    assert spec["ttl"] == extended["ttl"] and extended["ttl"].startswith("2h")

    down = run_cli("down", name)
    assert f"deleted TestEnvironment {name} and namespace testenv-{name}" in down.stderr
    assert k("get", "namespace", f"testenv-{name}", check=False).returncode != 0
    assert k("get", "testenv", name, check=False).returncode != 0


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr  # one line, never a traceback
    assert lines[0].startswith("testenv: error: ")
    return lines[0]


def test_failures_give_one_line_and_their_own_exit_code(
    k: Kubectl, tmp_path: Path, name: str
) -> None:
    missing = run_cli("status", "no-such-env", check=False)
    assert missing.returncode == 3 and "no TestEnvironment 'no-such-env'" in one_error_line(missing)

    unreachable = run_cli("--kubeconfig", str(tmp_path / "nowhere"), "ls", check=False)
    assert unreachable.returncode == 4 and "cannot reach" in one_error_line(unreachable)

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"namespace": "team-payments", "services": [{"name": "A"}]}))
    invalid = run_cli("up", "-f", str(bad), check=False)
    assert invalid.returncode == 2
    line = one_error_line(invalid)
    assert "namespace" in line and "services.0.name" in line

    refused = tmp_path / "refused.yaml"
    refused.write_text(yaml.safe_dump({"services": [{"name": "x", "image": "ghcr.io/x/y:1"}]}))
    admission = run_cli("up", "refused-" + name, "-f", str(refused), check=False)
    assert admission.returncode == 2 and "testenv-images" in one_error_line(admission)

    failing = tmp_path / "failing.yaml"
    failing.write_text(
        yaml.safe_dump({"services": [{"name": "api", "image": "testenv/does-not-exist:1"}]})
    )
    failed = run_cli("up", name, "-f", str(failing), "--timeout", "180", check=False)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    last = failed.stderr.strip().splitlines()[-1]  # after the progress lines: the reason
    assert last.startswith("testenv: error: TestEnvironment") and "failed" in last
    assert "api" in last
    assert run_cli("status", name, check=False).returncode == 1


def test_scripts_can_read_gc_and_completion() -> None:
    report = json.loads(run_cli("gc", "--dry-run", "-o", "json").stdout)
    assert report["dryRun"] is True and isinstance(report["removed"], list)
    # The shell named, not detected: run without a shell among its parents (a CI job, nohup),
    # typer's detection finds none ("Shell  not supported").
    explicit = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    completion = run_cli("--show-completion", "bash", env=explicit)
    assert "complete -o default -F" in completion.stdout and "testenv_cli" in completion.stdout


def test_gc_removes_only_what_nobody_owns(k: Kubectl, name: str) -> None:
    """An orphaned namespace of the product (its owner reference lost: one with a dangling
    reference the garbage collector removes itself) goes; a live environment's stays."""
    live = json.loads(run_cli("up", name, "--no-wait", "-o", "json").stdout)
    orphan = f"testenv-orphan-{uuid.uuid4().hex[:6]}"
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": orphan,
            "labels": {
                "app.kubernetes.io/managed-by": "testenv-operator",
                "testenv.dev/environment": "long-gone",
            },
        },
    }
    k("create", "-f", "-", input=json.dumps(namespace))
    try:
        k("wait", "--for=jsonpath={.status.namespace}", f"testenv/{name}", "--timeout=60s")
        dry = json.loads(run_cli("gc", "--dry-run", "-o", "json").stdout)["removed"]
        assert any(orphan in line for line in dry)
        assert k("get", "namespace", orphan, check=False).returncode == 0  # dry run: kept
        removed = run_cli("gc").stdout
        assert f"removed namespace {orphan}" in removed
        assert f"testenv-{name}" not in removed and live["name"] == name
        gone = k("get", "namespace", orphan, "-o", "jsonpath={.metadata.deletionTimestamp}")
        assert gone.stdout  # being deleted
        assert k("get", "testenv", name).returncode == 0
    finally:
        k("delete", "namespace", orphan, "--wait=false", "--ignore-not-found", check=False)
