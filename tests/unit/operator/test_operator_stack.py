"""A user's own stack against the in-memory Kubernetes: start order (dependsOn), jobs,
generated secrets, and that secrets never leak into status, discovery or events."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from operator_factories import pod
from operator_fake_kube import FakeKube, demo_environment, make_service_ready, service_pods
from test_operator_reconcile import Clock

from testenv_operator.reconcile import Reconciler
from testenv_operator.settings import Settings

NS = "testenv-demo"
STACK: dict[str, Any] = {
    "ttl": "1h",
    "secrets": [{"name": "api-key", "length": 40, "alphabet": "hex"}],
    "services": [
        {"name": "db", "preset": "postgres"},
        {
            "name": "api",
            "image": "example/api:1",
            "dependsOn": ["migrate"],
            "env": [
                {"name": "DATABASE_URL", "service": {"name": "db", "field": "dsn"}},
                {"name": "API_KEY", "secret": "api-key"},
            ],
        },
    ],
    "jobs": [
        {"name": "migrate", "image": "example/api:1", "command": ["migrate"], "dependsOn": ["db"]}
    ],
}


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    k.put(demo_environment(json.loads(json.dumps(STACK))))
    return k


@pytest.fixture
def events() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rec(kube: FakeKube, events: list[tuple[str, str, str]], clock: Clock) -> Reconciler:
    return Reconciler(kube, Settings(), lambda b, t, r, m: events.append((t, r, m)), clock=clock)


def body(kube: FakeKube) -> dict[str, Any]:
    found = kube.find("TestEnvironment", "demo")
    assert found is not None
    return found


def status(kube: FakeKube) -> dict[str, Any]:
    return dict(body(kube)["status"])


def make_ready(kube: FakeKube, name: str) -> None:
    make_service_ready(kube, name, NS)


def has_pods(kube: FakeKube, service: str) -> bool:
    return bool(service_pods(kube, service, NS))


def finish_job(kube: FakeKube, name: str, *, ok: bool) -> None:
    job = kube.find("Job", name, NS)
    assert job is not None, f"Job {name} was not created"
    condition = {"type": "Complete" if ok else "Failed", "status": "True"}
    if not ok:
        condition |= {"reason": "BackoffLimitExceeded", "message": "Job has reached the limit"}
    job["status"] = {"startTime": "2026-01-01T00:00:02Z", "conditions": [condition]}
    if ok:
        job["status"]["completionTime"] = "2026-01-01T00:00:04Z"
    p = pod(f"{name}-x", name, exit_code=3)
    p["metadata"].update(
        namespace=NS, labels={"testenv.dev/environment": "demo", "testenv.dev/job": name}
    )
    kube.put(p)


async def settle(rec: Reconciler, kube: FakeKube, clock: Clock) -> None:
    """A later wake-up of the monitor (after the reads' lag)."""
    clock.now += timedelta(seconds=10)
    await rec.reconcile(body(kube))


async def test_workloads_start_in_dependency_order(
    rec: Reconciler, kube: FakeKube, clock: Clock, events: list[tuple[str, str, str]]
) -> None:
    await rec.reconcile(body(kube))
    assert has_pods(kube, "db")
    assert kube.find("Job", "migrate", NS) is None
    assert not has_pods(kube, "api")
    assert kube.find("Service", "api", NS) is not None  # the address exists from the start
    st = status(kube)
    api = next(s for s in st["services"] if s["name"] == "api")
    assert api["reason"] == "WaitingForDependencies" and "migrate" in api["message"]
    assert st["jobs"][0]["phase"] == "Waiting" and "db" in st["jobs"][0]["message"]

    make_ready(kube, "db")
    await settle(rec, kube, clock)
    assert kube.find("Job", "migrate", NS) is not None
    assert not has_pods(kube, "api")
    assert any(r == "Starting" and "migrate" in m for _, r, m in events)

    finish_job(kube, "migrate", ok=True)
    await settle(rec, kube, clock)
    assert has_pods(kube, "api")
    assert status(kube)["phase"] == "Provisioning"
    assert kube.find("ConfigMap", "testenv-discovery", NS) is None

    make_ready(kube, "api")
    await settle(rec, kube, clock)
    st = status(kube)
    assert st["phase"] == "Ready", st["message"]
    assert st["jobs"][0]["phase"] == "Succeeded"
    assert "1/1 jobs done" in st["message"]
    assert kube.find("ConfigMap", "testenv-discovery", NS) is not None


async def test_discovery_waits_for_the_jobs(rec: Reconciler, kube: FakeKube, clock: Clock) -> None:
    env = body(kube)
    env["spec"]["services"][1]["dependsOn"] = []  # api no longer waits for the job
    await rec.reconcile(body(kube))
    make_ready(kube, "db")
    make_ready(kube, "api")
    await settle(rec, kube, clock)
    assert kube.find("Job", "migrate", NS) is not None
    assert kube.find("ConfigMap", "testenv-discovery", NS) is None
    assert status(kube)["phase"] == "Provisioning"
    finish_job(kube, "migrate", ok=True)
    await settle(rec, kube, clock)
    assert kube.find("ConfigMap", "testenv-discovery", NS) is not None
    assert status(kube)["phase"] == "Ready"


async def test_a_failed_job_fails_the_environment_with_its_logs(
    rec: Reconciler, kube: FakeKube, clock: Clock
) -> None:
    await rec.reconcile(body(kube))
    make_ready(kube, "db")
    await settle(rec, kube, clock)
    kube.logs["migrate-x"] = "connecting\nERROR: relation users already exists\n"
    finish_job(kube, "migrate", ok=False)
    await settle(rec, kube, clock)
    st = status(kube)
    assert st["phase"] == "Failed"
    assert "job migrate failed" in st["message"]
    assert "relation users already exists" in st["message"]
    assert st["jobs"][0]["phase"] == "Failed"
    assert not has_pods(kube, "api")  # what depends on it never starts
    # later wake-ups keep the evidence
    await settle(rec, kube, clock)
    assert "relation users already exists" in status(kube)["message"]


async def test_a_job_that_prints_its_credentials_fails_without_showing_them(
    rec: Reconciler, kube: FakeKube, clock: Clock, events: list[tuple[str, str, str]]
) -> None:
    await rec.reconcile(body(kube))
    secret = kube.find("Secret", "testenv-credentials", NS)
    assert secret is not None
    password = base64.b64decode(secret["data"]["db-password"]).decode()
    api_key = base64.b64decode(secret["data"]["api-key"]).decode()
    make_ready(kube, "db")
    await settle(rec, kube, clock)
    kube.logs["migrate-x"] = (
        f"connecting to postgresql://app:{password}@db:5432/app\n"
        f"using key {api_key}\nERROR: password authentication failed (token=abc123)\n"
    )
    finish_job(kube, "migrate", ok=False)
    await settle(rec, kube, clock)
    st = status(kube)
    assert st["phase"] == "Failed" and "password authentication failed" in st["message"]
    seen = json.dumps([st, events])
    assert password not in seen and api_key not in seen and "abc123" not in seen
    assert "postgresql://app:***@db:5432/app" in st["message"]


async def test_secrets_are_generated_once_and_never_shown(
    rec: Reconciler, kube: FakeKube, clock: Clock, events: list[tuple[str, str, str]]
) -> None:
    await rec.reconcile(body(kube))
    secret = kube.find("Secret", "testenv-credentials", NS)
    assert secret is not None
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(values) == {"api-key", "db-password"}
    assert len(values["api-key"]) == 40 and set(values["api-key"]) <= set("0123456789abcdef")
    assert len(values["db-password"]) == 32 and values["db-password"].isalnum()

    rec.states["demo"].reapply = True
    await rec.reconcile(body(kube))
    again = kube.find("Secret", "testenv-credentials", NS)
    assert again is not None and again["data"] == secret["data"]

    make_ready(kube, "db")
    await settle(rec, kube, clock)
    finish_job(kube, "migrate", ok=True)
    await settle(rec, kube, clock)
    make_ready(kube, "api")
    await settle(rec, kube, clock)
    discovery = kube.find("ConfigMap", "testenv-discovery", NS)
    assert discovery is not None
    seen = json.dumps([status(kube), discovery, events])
    for value in values.values():
        assert value not in seen
    # the containers take them from the Secret, by reference
    (api,) = service_pods(kube, "api", NS)
    assert values["api-key"] not in json.dumps(api)
    env = {e["name"]: e for e in api["spec"]["containers"][0]["env"]}
    assert env["API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "testenv-credentials",
        "key": "api-key",
    }
    assert env["DATABASE_URL"]["value"] == (
        f"postgresql://app:$(TESTENV_PASSWORD_DB)@db.{NS}.svc.cluster.local:5432/app"
    )
    assert env["TESTENV_PASSWORD_DB"]["valueFrom"]["secretKeyRef"]["key"] == "db-password"


async def test_a_changed_job_is_run_again(rec: Reconciler, kube: FakeKube, clock: Clock) -> None:
    await rec.reconcile(body(kube))
    make_ready(kube, "db")
    await settle(rec, kube, clock)
    assert kube.find("Job", "migrate", NS) is not None
    env = body(kube)
    env["spec"]["jobs"][0]["command"] = ["migrate", "--again"]
    env["metadata"]["generation"] = 2
    await rec.reconcile(body(kube))
    assert ("delete", "Job", "migrate") in kube.calls
    await settle(rec, kube, clock)
    job = kube.find("Job", "migrate", NS)
    assert job is not None
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["migrate", "--again"]


async def test_a_reset_runs_the_reset_jobs_once_per_request(
    rec: Reconciler, kube: FakeKube, clock: Clock, events: list[tuple[str, str, str]]
) -> None:
    env = body(kube)
    env["spec"]["jobs"].append(
        {"name": "wipe", "image": "example/api:1", "run": "reset", "dependsOn": ["db"]}
    )
    await rec.reconcile(body(kube))
    assert kube.find("Job", "wipe", NS) is None  # not part of the setup
    assert [j["name"] for j in status(kube)["jobs"]] == ["migrate"]

    env["metadata"]["annotations"] = {"testenv.dev/reset-requested": "r1"}
    await rec.reconcile(body(kube))
    job = kube.find("Job", "wipe", NS)
    assert job is not None
    assert job["metadata"]["annotations"]["testenv.dev/reset-requested"] == "r1"
    assert status(kube)["reset"] == {"request": "r1", "phase": "Running", "message": "running wipe"}
    finish_job(kube, "wipe", ok=True)
    await settle(rec, kube, clock)
    assert status(kube)["reset"]["phase"] == "Succeeded"
    assert any(r == "ResetDone" for _, r, _ in events)

    # a new request: the old Job goes, a new one runs; a failure carries its log
    env["metadata"]["annotations"]["testenv.dev/reset-requested"] = "r2"
    await rec.reconcile(body(kube))
    assert ("delete", "Job", "wipe") in kube.calls
    await settle(rec, kube, clock)
    job = kube.find("Job", "wipe", NS)
    assert job is not None
    assert job["metadata"]["annotations"]["testenv.dev/reset-requested"] == "r2"
    kube.logs["wipe-x"] = "TRUNCATE failed: permission denied\n"
    finish_job(kube, "wipe", ok=False)
    await settle(rec, kube, clock)
    reset = status(kube)["reset"]
    assert reset["phase"] == "Failed" and "permission denied" in reset["message"]


async def test_a_reset_without_reset_jobs_fails_with_a_reason(
    rec: Reconciler, kube: FakeKube
) -> None:
    body(kube)["metadata"]["annotations"] = {"testenv.dev/reset-requested": "r1"}
    await rec.reconcile(body(kube))
    reset = status(kube)["reset"]
    assert reset["phase"] == "Failed" and "no job with run: reset" in reset["message"]
