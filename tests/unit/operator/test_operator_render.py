"""Rendering: golden files from the samples, and the contracts of ARCHITECTURE.md.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/unit/operator``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from testenv.api import TEMPLATE_HASH_ANNOTATION, TestEnvironmentSpec
from testenv_operator.render import (
    RenderOptions,
    pod_template_hash,
    render_discovery,
    render_environment,
    render_pods,
    render_secret,
)

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).parent / "golden"
SAMPLES = sorted((ROOT / "manifests/samples").glob("*.yaml"))
UID = "00000000-0000-0000-0000-000000000001"


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a service's Pod or of a Job."""
    return obj["spec"]["template"]["spec"] if obj["kind"] == "Job" else obj["spec"]


def _render_sample(path: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    name = doc["metadata"]["name"]
    spec = TestEnvironmentSpec.model_validate(doc.get("spec") or {})
    return [
        *render_environment(name, UID, spec),
        render_secret(name, UID, spec, "GOLDEN-SECRET"),
        render_discovery(name, UID, spec),
    ]


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_golden(sample: Path) -> None:
    text = yaml.safe_dump_all(_render_sample(sample), sort_keys=False, width=100)
    golden = GOLDEN / sample.name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), "no golden file: run UPDATE_GOLDEN=1 pytest tests/unit/operator"
    assert text == golden.read_text(), "render changed: UPDATE_GOLDEN=1 pytest ... if intended"


def test_samples_exist() -> None:
    assert {p.stem for p in SAMPLES} >= {"minimal", "full"}


def test_namespace_and_owner() -> None:
    spec = TestEnvironmentSpec()
    objs = render_environment("demo", UID, spec)
    ns = objs[0]
    assert ns["kind"] == "Namespace" and ns["metadata"]["name"] == "testenv-demo"
    labels = ns["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "testenv-operator"
    assert labels["testenv.dev/environment"] == "demo"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objs:
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "testenv.dev/v1alpha1",
            "kind": "TestEnvironment",
            "name": "demo",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    kinds = [o["kind"] for o in objs]
    assert "Secret" not in kinds and "ConfigMap" not in kinds
    # the reference stack: five services, two jobs
    assert kinds.count("Service") == kinds.count("Pod") == 5  # one replica each
    assert kinds.count("Job") == 2
    # only what waits for nothing, when the others are not started yet
    first = render_environment("demo", UID, spec, started={"db", "cache", "frontend"})
    started = [
        o["metadata"]["labels"]["app.kubernetes.io/name"]
        for o in first
        if o["kind"] in ("Pod", "Job")
    ]
    assert sorted(started) == ["cache", "db", "frontend"]


def test_container_contract() -> None:
    spec = TestEnvironmentSpec()
    dep = render_pods("demo", UID, spec, spec.service("backend"))[0]
    pod = dep["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    names = [e["name"] for e in c["env"]]
    assert names[:4] == ["PORT", "TESTENV_ENVIRONMENT", "TESTENV_NAMESPACE", "TESTENV_SERVICE"]
    assert env["PORT"] == "8081"
    assert env["TESTENV_NAMESPACE"] == "testenv-demo"
    assert env["TESTENV_AUTH_URL"] == "http://auth.testenv-demo.svc.cluster.local:8080"
    assert env["TESTENV_FRONTEND_URL"] == "http://frontend.testenv-demo.svc.cluster.local:8082"
    assert "TESTENV_SECRET_KEY" not in env  # only auth asks for it (secretKey: true)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 10001
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "testenv-secrets", "mountPath": "/var/run/secrets/testenv", "readOnly": True},
    ]
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def test_only_a_workload_that_asks_gets_the_secret_key() -> None:
    """``secretKey: true`` gives a container TESTENV_SECRET_KEY (read from the Secret, never
    a literal); any other container reads no Secret at all: no env reference, no volume (its
    pod then never waits for the kubelet to be allowed to read a Secret)."""
    spec = TestEnvironmentSpec()
    auth = render_pods("demo", UID, spec, spec.service("auth"))[0]
    (c,) = auth["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["TESTENV_SECRET_KEY"] == {
        "secretKeyRef": {"name": "testenv-secrets", "key": "secret-key"}
    }
    frontend = render_pods("demo", UID, spec, spec.service("frontend"))[0]
    (c,) = frontend["spec"]["containers"]
    assert not [e for e in c["env"] if "valueFrom" in e or e["name"] == "TESTENV_SECRET_KEY"]
    assert not [v for v in frontend["spec"]["volumes"] if "projected" in v or "secret" in v]
    assert {m["name"] for m in c["volumeMounts"]} == {"tmp"}


def test_secret_keys_the_env_reads_are_mounted_too() -> None:
    """The kubelet fetches a mounted Secret with its volume retries before it creates the
    container: the env's secretKeyRefs then never meet an unsynced cache. Exactly the keys
    the env reads are projected, nothing else of either Secret."""
    spec = TestEnvironmentSpec.model_validate(
        {
            "secrets": [{"name": "api-token"}, {"name": "unused"}],
            "services": [
                {"name": "db", "preset": "postgres"},
                {
                    "name": "api",
                    "image": "x",
                    "env": [
                        {"name": "TOKEN", "secret": "api-token"},
                        {"name": "DB", "service": {"name": "db", "field": "dsn"}},
                    ],
                },
            ],
        }
    )
    pod = render_pods("e", UID, spec, spec.service("api"))[0]["spec"]
    refs = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in pod["containers"][0]["env"]
        if "valueFrom" in e
    }
    (volume,) = [v for v in pod["volumes"] if v["name"] == "testenv-secrets"]
    projected = {
        (src["secret"]["name"], item["key"], item["path"])
        for src in volume["projected"]["sources"]
        for item in src["secret"]["items"]
    }
    assert {(name, key) for name, key, _ in projected} == refs
    assert ("testenv-credentials", "unused") not in refs
    assert all(path == f"{name}/{key}" for name, key, path in projected)
    assert volume["projected"]["defaultMode"] == 0o440


def test_url_variable_of_dashed_names() -> None:
    spec = TestEnvironmentSpec.model_validate({"services": [{"name": "user-api", "image": "x"}]})
    dep = render_pods("e", UID, spec, spec.services[0])[0]
    names = [e["name"] for e in dep["spec"]["containers"][0]["env"]]
    assert "TESTENV_USER_API_URL" in names


def test_values_cannot_break_yaml() -> None:
    nasty = 'a"b\nc: d\n- e {{ x }} # f'
    spec = TestEnvironmentSpec.model_validate(
        {
            "services": [
                {"name": "a", "image": "x", "env": [{"name": "V", "value": nasty}], "args": [nasty]}
            ]
        }
    )
    dep = render_pods("e", UID, spec, spec.services[0])[0]
    c = dep["spec"]["containers"][0]
    assert c["env"][-1] == {"name": "V", "value": nasty}
    assert c["args"] == [nasty]


def test_discovery_records() -> None:
    spec = TestEnvironmentSpec()
    cm = render_discovery("demo", UID, spec)
    assert cm["metadata"]["name"] == "testenv-discovery"
    assert set(cm["data"]) == {
        "auth.json",
        "backend.json",
        "frontend.json",
        "db.json",
        "cache.json",
    }
    import json

    rec = json.loads(cm["data"]["backend.json"])
    assert rec["host"] == "backend.testenv-demo.svc.cluster.local"
    assert rec["ws_url"] == "ws://backend.testenv-demo.svc.cluster.local:8081/ws"


def test_only_local_images_may_come_from_a_nodes_cache() -> None:
    """An image the nodes were loaded with is pulled IfNotPresent; any other is pulled Always,
    so the registry checks the puller's credentials even when a node has it cached."""
    spec = TestEnvironmentSpec(
        services=[
            {"name": "local", "image": "testenv/auth:0.1.0", "port": 8080},
            {"name": "remote", "image": "ghcr.io/acme/api:1", "port": 8081},
        ],
        jobs=[{"name": "migrate", "image": "ghcr.io/acme/api:1"}],
    )
    options = RenderOptions(local=("testenv/",))
    policies = {
        obj["metadata"]["labels"]["app.kubernetes.io/name"]: _pod_spec(obj)["containers"][0][
            "imagePullPolicy"
        ]
        for obj in render_environment("x", UID, spec, options=options)
        if obj["kind"] in ("Pod", "Job")
    }
    assert policies == {"local": "IfNotPresent", "remote": "Always", "migrate": "Always"}


def test_network_policies_deny_by_default_and_open_only_what_is_asked() -> None:
    def policies(spec: TestEnvironmentSpec) -> dict[str, Any]:
        return {
            o["metadata"]["name"]: o["spec"]
            for o in render_environment("x", UID, spec)
            if o["kind"] == "NetworkPolicy"
        }

    closed = policies(TestEnvironmentSpec(services=[]))
    assert set(closed) == {"testenv-default-deny", "testenv-allow-own"}
    assert closed["testenv-default-deny"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
    }
    own = closed["testenv-allow-own"]
    assert own["ingress"] == [{"from": [{"podSelector": {}}]}]
    assert {"to": [{"podSelector": {}}]} in own["egress"]
    open_ = policies(TestEnvironmentSpec(services=[], network={"egress": "internet"}))
    block = open_["testenv-allow-internet"]["egress"][0]["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "169.254.0.0/16", "192.168.0.0/16"} <= set(block["except"])


def test_without_mounted_secrets_the_env_alone_reads_them() -> None:
    """TESTENV_MOUNT_SECRETS=false: the pod has no secrets volume, the env is unchanged."""
    spec = TestEnvironmentSpec()
    options = RenderOptions(mount_secrets=False)
    dep = render_pods("demo", UID, spec, spec.service("backend"), options)[0]
    pod = dep["spec"]
    assert all(v["name"] != "testenv-secrets" for v in pod["volumes"])
    assert all(m["name"] != "testenv-secrets" for m in pod["containers"][0]["volumeMounts"])
    default = render_pods("demo", UID, spec, spec.service("backend"))[0]
    assert pod["containers"][0]["env"] == default["spec"]["containers"][0]["env"]


def test_a_service_is_its_replicas_as_pods_named_by_their_template() -> None:
    """``replicas`` pods ``<service>-<hash>-<i>``, each annotated with the same template
    hash; the name changes with the template (a new one starts beside the outdated one)."""
    spec = TestEnvironmentSpec.model_validate(
        {"services": [{"name": "api", "image": "x:1", "replicas": 3}]}
    )
    pods = render_pods("e", UID, spec, spec.services[0])
    hashes = {p["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION] for p in pods}
    assert len(hashes) == 1
    (hash_,) = hashes
    assert [p["metadata"]["name"] for p in pods] == [f"api-{hash_[:10]}-{i}" for i in range(3)]
    assert all(p["kind"] == "Pod" and p["spec"]["containers"][0]["image"] == "x:1" for p in pods)
    assert pod_template_hash("e", UID, spec, spec.services[0]) == hash_
    none = TestEnvironmentSpec.model_validate(
        {"services": [{"name": "api", "image": "x:1", "replicas": 0}]}
    )
    assert render_pods("e", UID, none, none.services[0]) == []
    assert pod_template_hash("e", UID, none, none.services[0]) == hash_  # replicas: not the pod


def test_the_template_hash_changes_with_what_the_pod_runs_and_only_then() -> None:
    def hash_of(service: dict[str, Any]) -> str:
        spec = TestEnvironmentSpec.model_validate({"services": [service]})
        return pod_template_hash("e", UID, spec, spec.services[0])

    base = {"name": "api", "image": "x:1", "files": [{"path": "/etc/a", "content": "1"}]}
    assert hash_of(base) == hash_of(dict(base))
    assert hash_of({**base, "image": "x:2"}) != hash_of(base)
    assert hash_of({**base, "files": [{"path": "/etc/a", "content": "2"}]}) != hash_of(base)
    assert hash_of({**base, "env": [{"name": "A", "value": "b"}]}) != hash_of(base)
    assert hash_of({**base, "replicas": 2}) == hash_of(base)


def test_characters_beyond_the_bmp_render() -> None:
    """JSON escapes them as surrogate pairs, which YAML refuses: they reach the pod intact
    (found by the property test of admitted specs: a scratch path ``/𐀀``)."""
    odd = "/\U00010000\U0001f600\\ud800"
    spec = TestEnvironmentSpec.model_validate(
        {
            "services": [
                {
                    "name": "a",
                    "image": "x",
                    "env": [{"name": "V", "value": odd}],
                    "scratch": [{"path": "/\U00010000"}],
                }
            ]
        }
    )
    (pod,) = render_pods("e", UID, spec, spec.services[0])
    (c,) = pod["spec"]["containers"]
    assert {"name": "V", "value": odd} in c["env"]
    assert "/\U00010000" in [m["mountPath"] for m in c["volumeMounts"]]
