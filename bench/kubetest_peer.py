"""kubetest, the closest pytest peer, as a baseline: the same services deployed from manifests
by a one-test kubetest session, in its own virtualenv with the only versions it runs with
(``kubernetes==17.17.0``, ``pytest<8``; newer ones fail at import or teardown).

kubetest creates a namespace per test, polls readiness every second and offers no
port-forward: the test reaches each service through the API server's pod proxy.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from _common import ROOT, session_env

#: Pinned: the versions kubetest works with (cached per version, like the other tools).
KUBETEST = "kubetest==0.9.5"
REQUIREMENTS = (KUBETEST, "kubernetes==17.17.0", "pytest<8")
VENV = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "testenv"
    / "bench"
    / f"kubetest-{KUBETEST.split('==')[1]}"
)

TEST = """
import json, time
from pathlib import Path
from kubernetes import client

PORTS = {ports}

def test_services_answer(kube):
    started = time.time()
    deployments = []
    for name in sorted(PORTS):
        deployment = kube.load_deployment(f"manifests/{{name}}-deployment.yaml")
        kube.create(deployment)
        kube.create(kube.load_service(f"manifests/{{name}}-service.yaml"))
        deployments.append((name, deployment))
    for _, deployment in deployments:
        deployment.wait_until_ready(timeout=300)
    ready = time.time()
    core = client.CoreV1Api()
    for name, deployment in deployments:
        pod = deployment.get_pods()[0]
        core.connect_get_namespaced_pod_proxy_with_path(
            f"{{pod.name}}:{{PORTS[name]}}", pod.namespace, "hostname"
        )
    Path("timings.json").write_text(
        json.dumps({{"started": started, "ready": ready, "answered": time.time()}})
    )
"""


def ensure_venv() -> Path:
    """The virtualenv's python (created on first use, with uv from the project's venv)."""
    python = VENV / "bin" / "python"
    if python.exists():
        return python
    uv = ROOT / ".venv" / "bin" / "uv"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(uv), "venv", "-q", "-p", "python3.11", str(VENV)], check=True)
    subprocess.run(
        [str(uv), "pip", "install", "-q", *REQUIREMENTS],
        env={**os.environ, "VIRTUAL_ENV": str(VENV)},
        check=True,
    )
    return python


def write_session(workdir: Path, items: list[dict[str, Any]]) -> None:
    """The test and its manifests (Deployments and Services without a namespace)."""
    manifests = workdir / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    ports: dict[str, int] = {}
    for item in items:
        name = item["metadata"]["name"]
        kind = item["kind"].lower()
        (manifests / f"{name}-{kind}.yaml").write_text(yaml.safe_dump(item))
        if item["kind"] == "Service":
            ports[name] = item["spec"]["ports"][0]["port"]
    (workdir / "test_peer.py").write_text(TEST.format(ports=repr(ports)))


def session(python: Path, workdir: Path) -> tuple[float, float, float]:
    """(process start to exit, test start to all Ready, test start to every answer)."""
    timings = workdir / "timings.json"
    timings.unlink(missing_ok=True)
    started = time.time()
    done = subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--kube-config",
            os.environ.get("KUBECONFIG", str(Path.home() / ".kube/config")),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        env=session_env(),
    )
    ended = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"kubetest session failed:\n{done.stdout[:6000]}\n{done.stderr[-2000:]}")
    data = json.loads(timings.read_text())
    return ended - started, data["ready"] - data["started"], data["answered"] - data["started"]
