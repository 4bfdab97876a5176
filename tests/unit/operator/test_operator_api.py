"""The API models: defaults, and the validation the CRD mirrors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from testenv.api import (
    DiscoveryRecord,
    ServiceSpec,
    TestEnvironmentSpec,
    parse_duration,
    reference_services,
)


def test_empty_spec_is_the_reference_environment() -> None:
    spec = TestEnvironmentSpec.model_validate({})
    assert [s.name for s in spec.services] == ["auth", "backend", "frontend", "db", "cache"]
    assert [j.name for j in spec.jobs] == ["migrate", "seed", "reset"]
    assert [j.name for j in spec.reset_jobs] == ["reset"]
    assert spec.service("auth").depends_on == ["db"]
    assert spec.service("db").preset == "postgres" and spec.service("cache").preset == "redis"
    # services given: none of the reference stack's jobs
    own = TestEnvironmentSpec.model_validate({"services": [{"name": "a", "image": "x"}]})
    assert own.jobs == []
    assert spec.ttl == "1h"
    assert spec.namespace_for("demo") == "testenv-demo"


def test_reference_services_have_unique_ports() -> None:
    ports = [s.port for s in reference_services() if s.port is not None]
    assert ports == [8080, 8081, 8082]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("1h30m", 5400), ("2d", 172800)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["10 minutes", "1h 30m", "", "5", "-1s", "1.5h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


BAD_SPECS = [
    {"ttl": "10 minutes"},
    {"ttl": "0s"},
    {"lease": "0m"},
    {"namespace": "Bad_NS"},
    {"namespace": "kube-system"},
    {"namespace": "team-payments-prod"},
    {"labels": {"sidecar.istio.io/inject": "true"}},
    {"unknown": 1},
    {"labels": {"bad key!": "x"}},
    {"labels": {"ok": "bad value!"}},
    {"services": [{"name": "a", "image": "x", "port": 70000}]},
    {"services": [{"name": "a", "image": "x", "port": 0}]},
    {"services": [{"name": "Auth", "image": "x"}]},
    {"services": [{"name": "1auth", "image": "x"}]},
    {"services": [{"name": "a", "image": ""}]},
    {"services": [{"name": "a", "image": "has space"}]},
    {"services": [{"name": "a", "image": "x", "replicas": -1}]},
    {"services": [{"name": "a", "image": "x"}, {"name": "a", "image": "y", "port": 9}]},
    {
        "services": [
            {"name": "a", "image": "x", "port": 80},
            {"name": "b", "image": "y", "port": 80},
        ]
    },
    {"services": [{"name": "a", "image": "x", "env": [{"name": "1x=y"}]}]},
    {"services": [{"name": "a", "image": "x", "env": [{"name": "PORT", "value": "1"}]}]},
    {"services": [{"name": "a", "image": "x", "env": [{"name": "TESTENV_X"}]}]},
    {"services": [{"name": "a", "image": "x", "env": [{"name": "A"}, {"name": "A"}]}]},
    {"services": [{"name": "a", "image": "x", "healthPath": "health"}]},
    {"services": [{"name": "a", "image": "x", "readinessTimeout": "0s"}]},
    {"services": [{"name": "a", "image": "x", "extra": True}]},
]


@pytest.mark.parametrize("spec", BAD_SPECS, ids=[str(s)[:60] for s in BAD_SPECS])
def test_bad_specs_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TestEnvironmentSpec.model_validate(spec)


def test_full_spec_round_trips() -> None:
    spec = TestEnvironmentSpec.model_validate(
        {
            "namespace": "testenv-custom",
            "ttl": "2h",
            "lease": "10m",
            "labels": {"team": "qa", "suite": "y"},
            "services": [
                {
                    "name": "api",
                    "image": "img:1",
                    "port": 9000,
                    "healthPath": "/ready",
                    "websocketPath": "/ws",
                    "env": [{"name": "A", "value": "b"}],
                    "args": ["--x"],
                    "replicas": 0,
                    "resources": {"requests": {"cpu": "10m"}, "limits": {"memory": "1Gi"}},
                    "readinessTimeout": "30s",
                }
            ],
        }
    )
    again = TestEnvironmentSpec.model_validate(spec.to_wire())
    assert again == spec
    assert spec.namespace_for("x") == "testenv-custom"


def test_discovery_record() -> None:
    svc = ServiceSpec(name="backend", image="x", port=8081, websocket_path="/ws")
    rec = DiscoveryRecord.for_service(svc, "backend.ns.svc.cluster.local")
    assert rec.base_url == "http://backend.ns.svc.cluster.local:8081"
    assert rec.health_url.endswith(":8081/health")
    assert rec.ws_url == "ws://backend.ns.svc.cluster.local:8081/ws"
    assert DiscoveryRecord.model_validate_json(rec.to_json()) == rec
