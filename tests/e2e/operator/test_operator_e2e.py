"""The operator against a real cluster (KUBECONFIG): provisioning, validation, healing, expiry.

Uses kubectl (the project's pinned build, fixture ``kubectl``) and the ``operator_installed``
fixture of tests/e2e/conftest.py. Every environment gets a unique name and is deleted after
its test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_helpers import (
    OPERATOR_NAMESPACE,
    Kubectl,
    kill_service_pods,
    manifest,
    status,
    wait_ready,
)

from testenv.api import (
    DISCOVERY_CONFIGMAP,
    REFERENCE_IMAGE_TAG,
    DiscoveryRecord,
    TestEnvironmentSpec,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]

SAMPLES = Path(__file__).resolve().parents[3] / "manifests/samples"


def test_minimal_sample_becomes_ready_with_discovery(k: Kubectl, envs: Any) -> None:
    sample = yaml.safe_load((SAMPLES / "minimal.yaml").read_text())
    name = envs(sample.get("spec"))
    wait_ready(k, name)
    st = status(k, name)
    assert st["phase"] == "Ready"
    assert st["readyServices"] == "5/5"
    assert [(j["name"], j["phase"]) for j in st["jobs"]] == [
        ("migrate", "Succeeded"),
        ("seed", "Succeeded"),
    ]
    ns = st["namespace"]
    assert ns == f"testenv-{name}"
    assert st["timings"]["discoveryPublished"] >= st["timings"]["namespaceCreated"]
    cm = json.loads(k("get", "configmap", DISCOVERY_CONFIGMAP, "-n", ns, "-o", "json").stdout)
    spec = TestEnvironmentSpec()
    assert set(cm["data"]) == {f"{s.name}.json" for s in spec.services}
    for svc in spec.services:
        record = DiscoveryRecord.model_validate_json(cm["data"][f"{svc.name}.json"])
        assert record.host == f"{svc.name}.{ns}.svc.cluster.local"
        assert record.port == svc.main_port.port
    labels = json.loads(k("get", "ns", ns, "-o", "json").stdout)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["testenv.dev/environment"] == name
    # The operator writes only the status: the rest of the object is what the user applied
    # (no annotation of the operator's framework, no write outside the status subresource).
    env = json.loads(k("get", "testenv", name, "-o", "json", "--show-managed-fields").stdout)
    assert set(env["metadata"].get("annotations") or {}) == {
        "kubectl.kubernetes.io/last-applied-configuration"
    }
    writers = {
        entry["manager"]
        for entry in env["metadata"]["managedFields"]
        if entry.get("subresource") != "status"
    }
    assert writers == {"kubectl-client-side-apply"}


def test_delete_removes_the_namespace(k: Kubectl, envs: Any) -> None:
    name = envs(
        {
            "services": [
                {"name": "auth", "image": f"testenv/auth:{REFERENCE_IMAGE_TAG}", "secretKey": True}
            ]
        }
    )
    k("wait", "--for=jsonpath={.status.namespace}", f"testenv/{name}", "--timeout=60s")
    ns = status(k, name)["namespace"]
    k("get", "ns", ns)
    k("delete", "testenv", name, "--wait=true", "--timeout=60s")
    gone = k("wait", "--for=delete", f"namespace/{ns}", "--timeout=180s", check=False)
    assert gone.returncode == 0 or "not found" in gone.stderr, gone.stderr


def test_short_ttl_expires(k: Kubectl, envs: Any) -> None:
    name = envs({"ttl": "20s", "services": []})
    k("wait", "--for=jsonpath={.status.expiresAt}", f"testenv/{name}", "--timeout=60s")
    gone = k("wait", "--for=delete", f"testenv/{name}", "--timeout=120s", check=False)
    assert gone.returncode == 0 or "not found" in gone.stderr, gone.stderr


def test_unrenewed_lease_expires(k: Kubectl, envs: Any) -> None:
    name = envs({"ttl": "1h", "lease": "15s", "services": []})
    gone = k("wait", "--for=delete", f"testenv/{name}", "--timeout=120s", check=False)
    assert gone.returncode == 0 or "not found" in gone.stderr, gone.stderr


SVC = {"name": "api", "image": f"testenv/auth:{REFERENCE_IMAGE_TAG}", "secretKey": True}
MALFORMED: list[tuple[str, dict[str, Any] | str, str]] = [
    ("bad-ttl", {"ttl": "10 minutes"}, "spec.ttl"),
    ("zero-ttl", {"ttl": "0s"}, "longer than 0s"),
    ("bad-lease", {"lease": "forever"}, "spec.lease"),
    ("unknown-field", {"colour": "blue"}, 'unknown field "spec.colour"'),
    ("unknown-service-field", {"services": [{**SVC, "cmd": "x"}]}, "unknown field"),
    ("port-too-big", {"services": [{**SVC, "port": 70000}]}, "less than or equal to 65535"),
    ("port-zero", {"services": [{**SVC, "port": 0}]}, "greater than or equal to 1"),
    ("negative-replicas", {"services": [{**SVC, "replicas": -1}]}, "replicas"),
    ("too-many-replicas", {"services": [{**SVC, "replicas": 11}]}, "replicas"),
    ("empty-image", {"services": [{"name": "api", "image": ""}]}, "image"),
    ("missing-image", {"services": [{"name": "api"}]}, "a service needs an image"),
    ("upper-name", {"services": [{**SVC, "name": "API"}]}, "spec.services[0].name"),
    ("digit-name", {"services": [{**SVC, "name": "1api"}]}, "spec.services[0].name"),
    ("duplicate-names", {"services": [SVC, {**SVC, "port": 9090}]}, "Duplicate value"),
    (
        "duplicate-ports",
        {"services": [{**SVC, "port": 80}, {**SVC, "name": "other", "port": 80}]},
        "service ports must be unique",
    ),
    ("bad-env-name", {"services": [{**SVC, "env": [{"name": "1-A=B"}]}]}, "env[0].name"),
    (
        "reserved-env",
        {"services": [{**SVC, "env": [{"name": "PORT", "value": "1"}]}]},
        "env name is reserved",
    ),
    (
        "duplicate-env",
        {"services": [{**SVC, "env": [{"name": "A"}, {"name": "A"}]}]},
        "Duplicate value",
    ),
    ("bad-health-path", {"services": [{**SVC, "healthPath": "health"}]}, "healthPath"),
    ("system-namespace", {"namespace": "kube-system"}, "namespace must start with testenv-"),
    ("unprefixed-namespace", {"namespace": "team-payments-prod"}, "must start with testenv-"),
    ("bare-prefix-namespace", {"namespace": "testenv-"}, "must start with testenv-"),
    ("mesh-label", {"labels": {"sidecar.istio.io/inject": "true"}}, "without a prefix"),
    (
        "pod-security-label",
        {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}},
        "without a prefix",
    ),
    ("our-label", {"labels": {"testenv.dev/environment": "other"}}, "without a prefix"),
    ("bad-namespace", {"namespace": "Not_Valid"}, "spec.namespace"),
    ("bad-label-key", {"labels": {"bad key": "x"}}, "label keys must be plain names"),
    (
        "bad-readiness-timeout",
        {"services": [{**SVC, "readinessTimeout": "soon"}]},
        "readinessTimeout",
    ),
    ("services-not-a-list", {"services": "auth"}, "must be of type array"),
    # Values that once passed admission and wedged the operator (poison pills).
    ("overflowing-ttl", {"ttl": "9" * 20 + "d"}, "spec.ttl"),
    ("too-many-duration-parts", {"ttl": "1s1s1s1s1s"}, "spec.ttl"),
    ("long-label-name", {"labels": {"x" * 64: "v"}}, "label keys must be plain names"),
    ("long-label-prefix", {"labels": {"a" * 254 + "/x": "v"}}, "label keys must be plain names"),
    (
        "control-char-env",
        {"services": [{**SVC, "env": [{"name": "A", "value": "a\x1bb"}]}]},
        "env[0].value",
    ),
    ("non-ascii-image", {"services": [{**SVC, "image": "testenv/auth\x7f"}]}, "image"),
    # A user's own stack: references, cycles, files, probes, ids (the admission policy and
    # the CRD's rules).
    (
        "dependency-cycle",
        {
            "services": [
                {**SVC, "name": "a", "port": 1, "dependsOn": ["b"]},
                {**SVC, "name": "b", "port": 2, "dependsOn": ["c"]},
                {**SVC, "name": "c", "port": 3, "dependsOn": ["a"]},
            ]
        },
        "dependsOn has a cycle; on it or waiting for it: a, b, c",
    ),
    (
        "job-service-cycle",
        {
            "services": [{**SVC, "dependsOn": ["migrate"]}],
            "jobs": [{"name": "migrate", "image": "testenv/x", "dependsOn": ["api"]}],
        },
        "dependsOn has a cycle",
    ),
    (
        "depends-on-a-reset-job",
        {
            "services": [{**SVC, "dependsOn": ["wipe"]}],
            "jobs": [{"name": "wipe", "image": "testenv/x", "run": "reset"}],
        },
        "dependsOn names jobs that run only on a reset (run: reset): api -> wipe",
    ),
    ("self-dependency", {"services": [{**SVC, "dependsOn": ["api"]}]}, "api depends on itself"),
    (
        "unknown-dependency",
        {"services": [{**SVC, "dependsOn": ["nosuch"]}]},
        "dependsOn names unknown services or jobs: api -> nosuch",
    ),
    (
        "unknown-secret",
        {"services": [{**SVC, "env": [{"name": "K", "secret": "nope"}]}]},
        "env names unknown secrets (declare them in spec.secrets): api (env K)",
    ),
    (
        "unknown-service-ref",
        {"services": [{**SVC, "env": [{"name": "U", "service": {"name": "nosuch"}}]}]},
        "unknown service or port",
    ),
    (
        "unknown-port-ref",
        {"services": [{**SVC, "env": [{"name": "U", "service": {"name": "api", "port": "x"}}]}]},
        "unknown service or port",
    ),
    (
        "dsn-without-preset",
        {"services": [{**SVC, "env": [{"name": "U", "service": {"name": "api", "field": "dsn"}}]}]},
        "a dsn from a service without a preset",
    ),
    (
        "two-env-sources",
        {"services": [{**SVC, "env": [{"name": "A", "value": "1", "secret": "s"}]}]},
        "at most one of value, secret and service",
    ),
    (
        "duplicate-workload-names",
        {"services": [SVC], "jobs": [{"name": "api", "image": "testenv/x"}]},
        "services and jobs share one set of names; repeated: api",
    ),
    (
        "port-and-ports",
        {"services": [{**SVC, "port": 80, "ports": [{"name": "a", "port": 1}]}]},
        "not both",
    ),
    (
        "two-probe-kinds",
        {"services": [{**SVC, "probe": {"http": {}, "tcp": {}}}]},
        "set exactly one of http, tcp, exec",
    ),
    ("empty-exec-probe", {"services": [{**SVC, "probe": {"exec": {"command": []}}}]}, "command"),
    ("unknown-preset", {"services": [{"name": "db", "preset": "mysql"}]}, "Unsupported value"),
    (
        "relative-file-path",
        {"services": [{**SVC, "files": [{"path": "etc/x", "content": ""}]}]},
        "files[0].path",
    ),
    (
        "dotdot-file-path",
        {"services": [{**SVC, "files": [{"path": "/etc/../x", "content": ""}]}]},
        "must not contain '.' or '..' segments",
    ),
    ("scratch-on-tmp", {"services": [{**SVC, "scratch": [{"path": "/tmp"}]}]}, "not /tmp"),
    (
        "file-in-the-secrets-mount",
        {"services": [{**SVC, "files": [{"path": "/run/secrets/testenv/k", "content": ""}]}]},
        "path is reserved: the operator mounts the environment's secrets",
    ),
    (
        "scratch-on-the-secrets-mount",
        {
            "jobs": [
                {
                    "name": "j",
                    "image": "testenv/x",
                    "scratch": [{"path": "/var/run/secrets/testenv"}],
                }
            ]
        },
        "path is reserved",
    ),
    (
        "file-replacing-a-directory-of-the-secrets-mount",
        {"services": [{**SVC, "files": [{"path": "/var/run", "content": ""}]}]},
        "a file cannot replace a directory the operator mounts",
    ),
    ("root-user", {"services": [{**SVC, "runAsUser": 0}]}, "runAsUser"),
    (
        "negative-group",
        {"jobs": [{"name": "j", "image": "testenv/x", "runAsGroup": -5}]},
        "runAsGroup",
    ),
    ("job-without-image", {"jobs": [{"name": "j"}]}, "image: Required value"),
    ("job-retries", {"jobs": [{"name": "j", "image": "testenv/x", "retries": 6}]}, "retries"),
    (
        "job-timeout",
        {"jobs": [{"name": "j", "image": "testenv/x", "timeout": "0s"}]},
        "longer than 0s",
    ),
    ("short-secret", {"secrets": [{"name": "s", "length": 7}]}, "length"),
    ("bad-alphabet", {"secrets": [{"name": "s", "alphabet": "emoji"}]}, "Unsupported value"),
    ("too-many-services", {"services": [{**SVC, "name": f"s{i}"} for i in range(21)]}, "services"),
    ("unicode-service-name", {"services": [{**SVC, "name": "caf\u00e9"}]}, "name"),
    # Attempts to escape Pod Security: none of these fields exist.
    (
        "privileged",
        {"services": [{**SVC, "privileged": True}]},
        'unknown field "spec.services[0].privileged"',
    ),
    ("host-network", {"services": [{**SVC, "hostNetwork": True}]}, "unknown field"),
    (
        "host-path",
        {"services": [{**SVC, "scratch": [{"path": "/data", "hostPath": "/"}]}]},
        "unknown field",
    ),
    (
        "security-context",
        {"services": [{**SVC, "securityContext": {"privileged": True}}]},
        "unknown field",
    ),
    (
        "oversized-files",
        {
            "services": [
                {**SVC, "files": [{"path": f"/f/{i}", "content": "x" * 16000} for i in range(3)]}
            ]
        },
        "at most 32768 characters",
    ),
    (
        "oversized-spec",
        {
            "services": [
                {**SVC, "name": f"s{i}", "port": 8000 + i, "args": ["a" * 4096] * 2}
                for i in range(5)
            ]
        },
        "at most 32768 characters",
    ),
]


@pytest.mark.parametrize(("case", "spec", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_manifest_is_refused(
    k: Kubectl, case: str, spec: dict[str, Any], expected: str
) -> None:
    proc = k(
        "apply", "--dry-run=server", "-f", "-", input=manifest(f"bad-{case}", spec), check=False
    )
    assert proc.returncode != 0, f"{case} was accepted"
    assert expected in proc.stderr, proc.stderr


def test_bad_metadata_name_is_refused(k: Kubectl) -> None:
    long_name = "x" * 60
    proc = k("apply", "--dry-run=server", "-f", "-", input=manifest(long_name), check=False)
    assert proc.returncode != 0
    assert "metadata.name must be a DNS-1123 label" in proc.stderr


def test_bad_image_fails_fast(k: Kubectl, envs: Any) -> None:
    name = envs({"services": [{"name": "broken", "image": "testenv/does-not-exist:1"}]})
    proc = k(
        "wait",
        "--for=jsonpath={.status.phase}=Failed",
        f"testenv/{name}",
        "--timeout=60s",
        check=False,
    )
    st = status(k, name)
    assert proc.returncode == 0, st
    assert "service broken" in st["message"]
    assert any(
        r in st["message"] for r in ("ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull")
    ), st["message"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


def test_deleted_pod_is_replaced(k: Kubectl, envs: Any) -> None:
    """A service's pods are the operator's own (no Deployment): one deleted behind its back
    is replaced (under the next name of its slot while the old one is still terminating,
    else under its own), and the environment is Ready again."""
    name = envs(
        {
            "services": [
                {"name": "auth", "image": f"testenv/auth:{REFERENCE_IMAGE_TAG}", "secretKey": True}
            ]
        }
    )
    wait_ready(k, name)
    ns = status(k, name)["namespace"]
    uids = "jsonpath={.items[*].metadata.uid}"
    old = k("get", "pod", "-n", ns, "-l", "testenv.dev/service=auth", "-o", uids).stdout
    kill_service_pods(k, ns, "auth")
    new = k("get", "pod", "-n", ns, "-l", "testenv.dev/service=auth", "-o", uids).stdout
    assert len(new.split()) == 1 and new != old
    wait_ready(k, name)


def test_a_changed_service_is_replaced_by_pods_of_its_new_spec(k: Kubectl, envs: Any) -> None:
    auth = {"name": "auth", "image": f"testenv/auth:{REFERENCE_IMAGE_TAG}", "secretKey": True}
    name = envs({"services": [auth]})
    wait_ready(k, name)
    ns = status(k, name)["namespace"]
    selector = "testenv.dev/service=auth"
    (old,) = k("get", "pod", "-n", ns, "-l", selector, "-o", "name").stdout.split()
    patch = [{"op": "add", "path": "/spec/services/0/env", "value": [{"name": "X", "value": "2"}]}]
    k("patch", "testenv", name, "--type=json", "-p", json.dumps(patch))
    k("wait", "--for=delete", old, "-n", ns, "--timeout=120s")
    k(
        "wait",
        "--for=jsonpath={.status.observedGeneration}=2",
        f"testenv/{name}",
        "--timeout=60s",
    )
    wait_ready(k, name)
    pods = json.loads(k("get", "pod", "-n", ns, "-l", selector, "-o", "json").stdout)["items"]
    (pod,) = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["X"] == "2" and f"pod/{pod['metadata']['name']}" != old


def test_operator_killed_mid_provisioning(k: Kubectl, envs: Any) -> None:
    name = envs(None)
    k("wait", "--for=jsonpath={.status.namespace}", f"testenv/{name}", "--timeout=60s")
    k(
        "delete",
        "pod",
        "-n",
        OPERATOR_NAMESPACE,
        "-l",
        "app.kubernetes.io/name=testenv-operator",
        "--wait=false",
    )
    wait_ready(k, name, timeout="300s")
    ns = status(k, name)["namespace"]
    selector = f"testenv.dev/environment={name}"
    pods = json.loads(k("get", "pod", "-n", ns, "-l", selector, "-o", "json").stdout)["items"]
    services_pods = [p["metadata"]["labels"].get("testenv.dev/service") for p in pods]
    # One pod per service (one replica each): none created twice across the restart.
    assert sorted(s for s in services_pods if s) == ["auth", "backend", "cache", "db", "frontend"]
    services = json.loads(k("get", "svc", "-n", ns, "-l", selector, "-o", "json").stdout)
    assert len(services["items"]) == 5
    secrets = json.loads(k("get", "secret", "-n", ns, "-o", "json").stdout)
    assert [s["metadata"]["name"] for s in secrets["items"]].count("testenv-secrets") == 1
    k("rollout", "status", "deploy/testenv-operator", "-n", OPERATOR_NAMESPACE, "--timeout=120s")


@pytest.mark.parametrize(
    ("where", "selector"),
    [
        (OPERATOR_NAMESPACE, "app.kubernetes.io/name=testenv-operator"),
        ("", "testenv.dev/service=auth"),  # a reference service, in its environment
    ],
    ids=["operator", "service"],
)
def test_images_carry_no_pytest(k: Kubectl, envs: Any, where: str, selector: str) -> None:
    """The operator's and the services' images install only their own extras."""
    if not where:
        name = envs(
            {
                "services": [
                    {
                        "name": "auth",
                        "image": f"testenv/auth:{REFERENCE_IMAGE_TAG}",
                        "secretKey": True,
                    }
                ]
            }
        )
        wait_ready(k, name)
        where = status(k, name)["namespace"]
    pod = k("get", "pod", "-n", where, "-l", selector, "-o", "jsonpath={.items[0].metadata.name}")
    probe = "import importlib.util as u; print([m for m in ('pytest', 'xdist') if u.find_spec(m)])"
    found = k("exec", "-n", where, pod.stdout, "--", "python3", "-c", probe)
    assert found.stdout.strip() == "[]", f"in the image: {found.stdout}"
