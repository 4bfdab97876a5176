"""The spec of a user's own stack: references, cycles, presets, discovery (pure models)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from testenv.api import (
    DiscoveryRecord,
    TestEnvironmentSpec,
    dependency_cycle,
    policy_validations,
    policy_variables,
)


def svc(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "example/x:1", **extra}


def test_dependency_cycle_names_the_cycle() -> None:
    assert dependency_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert dependency_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert dependency_cycle({"x": ["y"], "y": ["y"]}) == ["y", "y"]
    # what only waits for a cycle is not on it
    assert dependency_cycle({"d": ["a"], "a": ["b"], "b": ["a"]}) == ["a", "b", "a"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"services": [svc("a", dependsOn=["b"]), svc("b", dependsOn=["a"])]},
            "dependsOn has a cycle: a -> b -> a",
        ),
        ({"services": [svc("a", dependsOn=["nope"])]}, "unknown services or jobs: nope"),
        ({"services": [svc("a", dependsOn=["a"])]}, "a depends on itself"),
        (
            {"services": [svc("a", env=[{"name": "K", "secret": "k"}])]},
            "unknown secret 'k': declare it in spec.secrets",
        ),
        (
            {"services": [svc("a", env=[{"name": "U", "service": {"name": "b"}}])]},
            "unknown service 'b'",
        ),
        (
            {"services": [svc("a", env=[{"name": "U", "service": {"name": "a", "port": "x"}}])]},
            "service a has no port 'x' (its ports: http)",
        ),
        (
            {"services": [svc("a", env=[{"name": "U", "service": {"name": "a", "field": "dsn"}}])]},
            "only a preset service (postgres, redis) has a dsn",
        ),
        (
            {"services": [svc("a", dependsOn=["w"])], "jobs": [svc("w", run="reset")]},
            "runs only on a reset",
        ),
        ({"services": [svc("a")], "jobs": [svc("a")]}, "service and job names must be unique"),
        ({"services": [{"name": "a"}]}, "give an image or a preset"),
        ({"services": [svc("a", port=1, ports=[{"name": "p", "port": 2}])]}, "not both"),
        (
            {"services": [svc("a", files=[{"path": "/tmp", "content": ""}])]},
            "files and scratch paths must be distinct",
        ),
        (
            {"services": [svc("a", files=[{"path": "/var/run/secrets/testenv/x", "content": ""}])]},
            "path is reserved: the operator mounts the environment's secrets",
        ),
        (
            {"services": [svc("a", scratch=[{"path": "/run/secrets/testenv"}])]},
            "path is reserved",
        ),
        (
            {"services": [svc("a", files=[{"path": "/run/secrets", "content": ""}])]},
            "cannot replace a directory the operator mounts",
        ),
        (
            {"services": [svc("a", probe={"tcp": {"port": "nope"}})]},
            "the probe names port 'nope'",
        ),
    ],
)
def test_bad_references_are_refused_with_what_to_fix(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        TestEnvironmentSpec.model_validate(spec)
    assert message in str(info.value)


def test_a_preset_brings_image_port_probe_password_and_a_url() -> None:
    spec = TestEnvironmentSpec.model_validate({"services": [{"name": "db", "preset": "postgres"}]})
    db = spec.service("db")
    assert db.effective_image().startswith("testenv/postgres:")
    assert [(p.name, p.port, p.protocol) for p in db.effective_ports()] == [
        ("postgres", 5432, "tcp")
    ]
    assert db.effective_probe().exec is not None
    assert spec.secret_names() == ["db-password"]
    record = DiscoveryRecord.for_service(db, "db.ns.svc")
    assert record.url == "postgresql://app@db.ns.svc:5432/app"
    assert record.password_secret == "db-password" and record.base_url is None


def test_the_admission_policy_has_every_check_the_models_make() -> None:
    names = dict(policy_variables())
    assert {"names", "secrets", "badDepends", "badSecrets", "badServices", "onReset"} <= set(names)
    rounds = max(int(n[1:]) for n in names if n.startswith("r") and n[1:].isdigit())
    assert rounds == 30  # enough to peel every acyclic graph of 20 services and 10 jobs
    messages = " ".join(v["messageExpression"] for v in policy_validations())
    for check in ("cycle", "unknown services or jobs", "unknown secrets", "reset"):
        assert check in messages
