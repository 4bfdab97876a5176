"""Isolation that is enforced, on the real cluster (its NetworkPolicy engine): an environment's
pods reach their own services and DNS, and nothing else of the cluster: not another
environment, not the API server, not the node, not the link-local metadata address; nothing
outside an environment reaches into it. The plugin's port-forwards keep working (every
plugin e2e test goes through them with these policies in place).

The probes are real connections from real pods: a job of the environment itself (its
outcome is the environment's: Ready when every expectation held, Failed with the probe's
log lines otherwise), or a pod in a namespace without policies.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_helpers import Kubectl, status, wait_ready

from testenv.api import REFERENCE_IMAGE_TAG

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]

AUTH = f"testenv/auth:{REFERENCE_IMAGE_TAG}"
API = {"name": "api", "image": AUTH, "port": 8080, "secretKey": True}

#: Connects to every ``reach|block:host:port`` argument; exits 1 unless each went as expected.
#: Connected or refused counts as reached (something answered); a policy drops silently (the
#: connection times out). A name that does not resolve is neither. A Service refuses (the
#: node's kube-proxy REJECTs it) until the proxy has its endpoints, which may be just after
#: the environment is Ready: that refusal is not the target's answer, so a ``block`` target
#: that refuses is asked again until a connection or a drop decides, or the deadline passes.
PROBE = """
import socket, sys, time
deadline = time.monotonic() + 60

def attempt(host, port):
    try:
        socket.create_connection((host, port), timeout=4).close()
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except socket.gaierror:
        return "unresolved"
    except OSError:
        return "dropped"

ok = True
for arg in sys.argv[1:]:
    want, host, port = arg.split(":")
    seen = attempt(host, int(port))
    while want == "block" and seen == "refused" and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = attempt(host, int(port))
    got = {"connected": "reach", "refused": "reach", "dropped": "block"}.get(seen, seen)
    print(f"{arg} -> {got} ({seen})", flush=True)
    ok = ok and got == want
sys.exit(0 if ok else 1)
"""


def node_ip(k: Kubectl) -> str:
    return k(
        "get",
        "nodes",
        "-o",
        'jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}',
    ).stdout.strip()


def cluster_targets(k: Kubectl) -> list[str]:
    """What no environment may reach, whatever its egress: the API server (by its Service
    and on the node), the kubelet, the metadata address."""
    node = node_ip(k)
    return [
        "block:kubernetes.default.svc.cluster.local:443",
        f"block:{node}:6443",
        f"block:{node}:10250",
        "block:169.254.169.254:80",
    ]


def pod_ip(k: Kubectl, namespace: str) -> str:
    """The IP of the (one) pod of a namespace: a target no Service or proxy stands before."""
    return k("get", "pods", "-n", namespace, "-o", "jsonpath={.items[0].status.podIP}").stdout


def probe_job(targets: list[str]) -> dict[str, Any]:
    return {
        "name": "probe",
        "image": AUTH,
        "command": ["python3", "-c", PROBE, *targets],
        "dependsOn": ["api"],
        "retries": 0,
    }


@pytest.fixture
def other(k: Kubectl, envs: Any) -> str:
    """A Ready environment next door: the namespace of its service ``api``."""
    name = envs({"services": [API]})
    wait_ready(k, name)
    return str(status(k, name)["namespace"])


@pytest.mark.parametrize("egress", ["none", "internet"])
def test_an_environment_reaches_its_own_services_and_nothing_else(
    k: Kubectl, envs: Any, other: str, egress: str
) -> None:
    targets = [
        "reach:api:8080",  # its own service, by its short name (DNS works)
        f"block:api.{other}.svc.cluster.local:8080",  # another environment
        f"block:{pod_ip(k, other)}:8080",  # its pod, not through the Service
        *cluster_targets(k),
    ]
    spec = {"network": {"egress": egress}, "services": [API], "jobs": [probe_job(targets)]}
    name = envs(spec)
    wait_ready(k, name)
    jobs = {j["name"]: j["phase"] for j in status(k, name)["jobs"]}
    assert jobs == {"probe": "Succeeded"}


@pytest.fixture
def outside(k: Kubectl) -> Iterator[str]:
    """A namespace that is no environment's and has no NetworkPolicy."""
    name = f"outside-{uuid.uuid4().hex[:6]}"
    k("create", "namespace", name)
    k("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    k("delete", "namespace", name, "--wait=false", check=False)


def test_nothing_outside_reaches_into_an_environment(k: Kubectl, other: str, outside: str) -> None:
    other_pod = pod_ip(k, other)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": outside},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": AUTH,
                    "imagePullPolicy": "IfNotPresent",
                    "command": [
                        "python3",
                        "-c",
                        PROBE,
                        f"block:api.{other}.svc.cluster.local:8080",
                        f"block:{other_pod}:8080",
                    ],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    k("wait", "--for=create", "serviceaccount/default", "-n", outside, "--timeout=60s")
    k("apply", "-f", "-", input=json.dumps(pod))
    k(
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/probe",
        "-n",
        outside,
        "--timeout=120s",
        check=False,
    )
    logs = k("logs", "probe", "-n", outside).stdout
    phase = k("get", "pod", "probe", "-n", outside, "-o", "jsonpath={.status.phase}").stdout
    assert phase == "Succeeded", logs
    assert f"api.{other}.svc.cluster.local:8080 -> block (dropped)" in logs
    assert f"{other_pod}:8080 -> block (dropped)" in logs
