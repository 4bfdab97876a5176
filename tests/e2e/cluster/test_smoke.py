"""Smoke tests of the cluster KUBECONFIG points at (the local one in CI).

They show what everything else relies on: a Ready node, pods from locally built images,
Service DNS, logs/exec/port-forward through the API server, and Pod Security admission.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import kr8s
import pytest
from kr8s.objects import Namespace, Pod

from testenv._portforward import PodPortForward, ReadyPods
from testenv.api import REFERENCE_IMAGE_TAG

pytestmark = pytest.mark.e2e

IMAGE = f"testenv/frontend:{REFERENCE_IMAGE_TAG}"  # any locally built image with python3 in it
# kube-proxy programs a new endpoint within about a second of the pod turning Ready; until
# then the Service rejects connections, so the client retries for a bounded time.
CLIENT_SCRIPT = """
import time, urllib.request
deadline = time.monotonic() + 30
while True:
    try:
        print(urllib.request.urlopen({url!r}, timeout=5).status)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.5)
"""
RESTRICTED_CONTAINER: dict[str, Any] = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "imagePullPolicy": "IfNotPresent",
}


def _kubectl(kubectl: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _apply(kubectl: str, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl, "apply", "-f", "-"],
        input=json.dumps(manifest),
        text=True,
        capture_output=True,
        check=False,
    )


@pytest.fixture(scope="module")
def namespace(kube_api: kr8s.Api) -> Iterator[str]:
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    ns = Namespace({"metadata": {"name": name}}, api=kube_api)
    ns.create()
    yield name
    ns.delete()


@pytest.fixture(scope="module")
def web(kube_api: kr8s.Api, kubectl: str, namespace: str) -> str:
    """A web server pod from a local image, behind a Service named `web`."""
    manifest = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web", "namespace": namespace, "labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": IMAGE,
                            "command": ["python3", "-m", "http.server", "8080", "-d", "/etc"],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                            **RESTRICTED_CONTAINER,
                        }
                    ]
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
            },
        ],
    }
    applied = _apply(kubectl, manifest)
    assert applied.returncode == 0, applied.stderr
    waited = _kubectl(
        kubectl,
        "-n",
        namespace,
        "wait",
        "--for=condition=Ready",
        "pod/web",
        "--timeout=120s",
        timeout=130,
    )
    assert waited.returncode == 0, waited.stderr
    return namespace


def test_node_is_ready(kube_api: kr8s.Api) -> None:
    nodes = list(kube_api.get("nodes"))
    assert nodes, "the cluster has no node"
    ready = {
        n.name: any(c["type"] == "Ready" and c["status"] == "True" for c in n.status.conditions)
        for n in nodes
    }
    assert all(ready.values()), ready


def test_pod_from_local_image_runs(kube_api: kr8s.Api, web: str) -> None:
    pod = Pod.get("web", namespace=web, api=kube_api)
    assert pod.status.phase == "Running"
    assert pod.spec.containers[0].image == IMAGE


def test_service_dns_name_reaches_pod(kube_api: kr8s.Api, kubectl: str, web: str) -> None:
    url = f"http://web.{web}.svc.cluster.local/hostname"
    client = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": web},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "client",
                    "image": IMAGE,
                    "command": ["python3", "-c", CLIENT_SCRIPT.format(url=url)],
                    **RESTRICTED_CONTAINER,
                }
            ],
        },
    }
    applied = _apply(kubectl, client)
    assert applied.returncode == 0, applied.stderr
    # Wait for the container to finish either way, then judge by its exit and output.
    done = _kubectl(
        kubectl,
        "-n",
        web,
        "wait",
        "pod/client",
        "--timeout=90s",
        "--for=jsonpath={.status.containerStatuses[0].state.terminated}",
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    logs = _kubectl(kubectl, "-n", web, "logs", "client")
    exit_code = _kubectl(
        kubectl,
        "-n",
        web,
        "get",
        "pod/client",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}",
    )
    assert exit_code.stdout == "0", logs.stdout + logs.stderr
    assert logs.stdout.strip() == "200"


def test_kubectl_logs_and_exec(kubectl: str, web: str) -> None:
    exec_ = _kubectl(kubectl, "-n", web, "exec", "web", "--", "python3", "-c", "print(6*7)")
    assert exec_.returncode == 0, exec_.stderr
    assert exec_.stdout.strip() == "42"
    logs = _kubectl(kubectl, "-n", web, "logs", "web")
    assert logs.returncode == 0, logs.stderr


def test_kubectl_port_forward(kubectl: str, web: str) -> None:
    proc = subprocess.Popen(
        [kubectl, "-n", web, "port-forward", "svc/web", ":80"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8080"
        assert "Forwarding from 127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        response = httpx.get(f"http://127.0.0.1:{port}/hostname", timeout=10)
        assert response.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


async def test_python_client_port_forward(web: str) -> None:
    """The library's own forwarder (not kr8s's, whose free-port pick races other processes
    binding between its check and its bind: seen under CI load)."""
    api = await kr8s.asyncio.api()
    pods = ReadyPods(api, web, {"app": "web"})
    assert await pods.async_ready_pods(), "pod web is not ready"
    forward = PodPortForward(api, pods, 8080)
    local_port = await forward.start()
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{local_port}/hostname", timeout=10)
    finally:
        await forward.stop()
    assert response.status_code == 200


def test_privileged_pod_refused_in_restricted_namespace(kube_api: kr8s.Api, kubectl: str) -> None:
    name = f"restricted-{uuid.uuid4().hex[:6]}"
    ns = Namespace(
        {
            "metadata": {
                "name": name,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            }
        },
        api=kube_api,
    )
    ns.create()
    try:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "privileged", "namespace": name},
            "spec": {
                "containers": [
                    {"name": "c", "image": IMAGE, "securityContext": {"privileged": True}}
                ]
            },
        }
        result = _apply(kubectl, pod)
        assert result.returncode != 0
        assert "violates PodSecurity" in result.stderr and "privileged" in result.stderr
    finally:
        ns.delete()
