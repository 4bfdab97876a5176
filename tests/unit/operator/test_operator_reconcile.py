"""The reconcile against an in-memory Kubernetes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from operator_factories import pod
from operator_fake_kube import FakeKube, demo_environment

from testenv_operator.reconcile import Reconciler
from testenv_operator.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(seconds=5)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    k.put(demo_environment())
    return k


@pytest.fixture
def events() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
def rec(kube: FakeKube, events: list[tuple[str, str, str]]) -> Reconciler:
    return Reconciler(
        kube, Settings(), lambda body, t, r, m: events.append((t, r, m)), clock=Clock()
    )


def body(kube: FakeKube) -> dict[str, Any]:
    found = kube.find("TestEnvironment", "demo")
    assert found is not None
    return found


def make_one_ready(kube: FakeKube, service: str) -> None:
    for (kind, ns, name), obj in list(kube.objects.items()):
        if kind == "Deployment" and name == service:
            obj["status"] = {
                "observedGeneration": 1,
                "replicas": 1,
                "updatedReplicas": 1,
                "readyReplicas": 1,
                "availableReplicas": 1,
            }
            p = pod(f"{name}-1", name, ready=True)
            p["metadata"].update(
                namespace=ns,
                labels={"testenv.dev/environment": "demo", "testenv.dev/service": name},
            )
            kube.put(p)


def make_ready(kube: FakeKube) -> None:
    for kind, _, name in list(kube.objects):
        if kind == "Deployment":
            make_one_ready(kube, name)


async def test_reconcile_applies_everything(rec: Reconciler, kube: FakeKube) -> None:
    result = await rec.reconcile(body(kube))
    assert result is not None
    kinds = sorted(k for k, _, _ in kube.objects)
    assert kinds.count("Deployment") == 3 and kinds.count("Service") == 3
    assert "Secret" in kinds and "Namespace" in kinds
    assert kube.find("ConfigMap", "testenv-discovery", "testenv-demo") is None
    status = body(kube)["status"]
    assert status["phase"] == "Provisioning"
    assert status["readyServices"] == "0/3"
    assert status["expiresAt"] == "2026-01-01T01:00:00Z"


async def test_ready_publishes_discovery(
    rec: Reconciler, kube: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    await rec.reconcile(body(kube))
    make_ready(kube)
    await rec.reconcile(body(kube))
    assert kube.find("ConfigMap", "testenv-discovery", "testenv-demo") is not None
    status = body(kube)["status"]
    assert status["phase"] == "Ready"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    # One event tells it all: a service turning Ready with its environment and the discovery
    # being published are in the environment's Ready event, not events of their own.
    ready_events = [m for _, r, m in events if r == "Ready"]
    assert len(ready_events) == 1 and "discovery published" in ready_events[0]
    assert not {"ServiceReady", "DiscoveryPublished"} & {r for _, r, _ in events}


async def test_secret_is_never_regenerated(rec: Reconciler, kube: FakeKube) -> None:
    await rec.reconcile(body(kube))
    secret = kube.find("Secret", "testenv-secrets", "testenv-demo")
    assert secret is not None
    key = secret["data"]["secret-key"]
    rec.nudge("demo", reapply=True)
    rec.states["demo"].reapply = True
    await rec.reconcile(body(kube))
    again = kube.find("Secret", "testenv-secrets", "testenv-demo")
    assert again is not None and again["data"]["secret-key"] == key


async def test_second_reconcile_does_not_reapply(rec: Reconciler, kube: FakeKube) -> None:
    await rec.reconcile(body(kube))
    applies = len([c for c in kube.calls if c[0] == "apply"])
    await rec.reconcile(body(kube))
    assert len([c for c in kube.calls if c[0] == "apply"]) == applies


async def test_deleted_deployment_is_recreated(
    rec: Reconciler, kube: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    await rec.reconcile(body(kube))
    await kube.delete("Deployment", "backend", "testenv-demo")
    await rec.reconcile(body(kube))
    assert kube.find("Deployment", "backend", "testenv-demo") is not None
    assert any(r == "Recreating" for _, r, _ in events)


async def test_namespace_conflict_is_never_adopted(rec: Reconciler, kube: FakeKube) -> None:
    kube.put({"kind": "Namespace", "metadata": {"name": "testenv-demo", "uid": "other"}})
    await rec.reconcile(body(kube))
    status = body(kube)["status"]
    assert status["phase"] == "Failed"
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["reason"] == (
        "NamespaceConflict"
    )
    assert not any(k == "Deployment" for k, _, _ in kube.objects)
    ns = kube.find("Namespace", "testenv-demo")
    assert ns is not None and "ownerReferences" not in ns["metadata"]


class RacingKube(FakeKube):
    """Someone creates the namespace between the operator's read and its write."""

    def __init__(self) -> None:
        super().__init__()
        self.squatted = False

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        found = await super().get(kind, name, namespace)
        if kind == "Namespace" and not self.squatted:
            self.squatted = True
            self.put({"kind": "Namespace", "metadata": {"name": name, "uid": "squatter"}})
        return found


async def test_a_namespace_created_meanwhile_is_never_modified(
    events: list[tuple[str, str, str]],
) -> None:
    kube = RacingKube()
    kube.put(demo_environment())
    rec = Reconciler(kube, Settings(), lambda b, t, r, m: events.append((t, r, m)), clock=Clock())
    await rec.reconcile(body(kube))
    ns = kube.find("Namespace", "testenv-demo")
    assert ns is not None and ns["metadata"] == {
        "name": "testenv-demo",
        "uid": "squatter",
        "creationTimestamp": ns["metadata"]["creationTimestamp"],
        "generation": 1,
    }
    assert not [c for c in kube.calls if c[0] == "apply"]
    assert body(kube)["status"]["phase"] == "Failed"


async def test_image_failure_message_has_events_and_logs(rec: Reconciler, kube: FakeKube) -> None:
    await rec.reconcile(body(kube))
    bad = pod("backend-1", "backend", waiting="ErrImageNeverPull", message="not present")
    bad["metadata"].update(
        namespace="testenv-demo",
        labels={"testenv.dev/environment": "demo", "testenv.dev/service": "backend"},
    )
    kube.put(bad)
    kube.put(
        {
            "kind": "Event",
            "metadata": {"name": "e1", "namespace": "testenv-demo"},
            "reason": "Failed",
            "message": "Error: ErrImageNeverPull",
            "involvedObject": {"name": "backend-1"},
        }
    )
    kube.logs["backend-1"] = "starting\nfatal: no config\n"
    await rec.reconcile(body(kube))
    status = body(kube)["status"]
    assert status["phase"] == "Failed"
    assert "service backend: ErrImageNeverPull" in status["message"]
    assert "Failed: Error: ErrImageNeverPull" in status["message"]
    assert "fatal: no config" in status["message"]
    # The evidence is fetched once; later wake-ups keep it in the status.
    await rec.reconcile(body(kube))
    assert "fatal: no config" in body(kube)["status"]["message"]


async def test_expiry_deletes_the_environment(rec: Reconciler, kube: FakeKube) -> None:
    env = rec.environment(body(kube))
    assert await rec.expire_if_due(env) is None
    rec.clock.now = T0 + timedelta(hours=2)  # type: ignore[attr-defined]
    due = await rec.expire_if_due(env)
    assert due is not None and due.reason == "TTLExpired"
    assert kube.find("TestEnvironment", "demo") is None


async def test_default_ttl_from_settings(kube: FakeKube) -> None:
    raw = body(kube)
    raw["spec"] = {}
    rec = Reconciler(kube, Settings(default_ttl="15m"), lambda *a: None)
    assert rec.environment(raw).spec.ttl == "15m"


async def test_namespace_deleted_behind_the_operators_back_is_reported_then_recreated(
    rec: Reconciler, kube: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    await rec.reconcile(body(kube))
    make_ready(kube)
    await rec.reconcile(body(kube))
    assert body(kube)["status"]["phase"] == "Ready"
    old_secret = (kube.find("Secret", "testenv-secrets", "testenv-demo") or {})["data"]
    # Someone deletes the namespace: while it terminates, nothing is applied into it.
    ns = kube.find("Namespace", "testenv-demo")
    assert ns is not None
    ns["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:30Z"
    applies = len(kube.calls)
    rec.nudge("demo", reapply=True)
    await rec.reconcile(body(kube))
    status = body(kube)["status"]
    assert status["phase"] == "Degraded"
    assert "was deleted behind the operator's back" in status["message"]
    assert len(kube.calls) == applies
    # Once it is gone, everything is created again in a new namespace, with a new Secret.
    for key in [k for k in kube.objects if k[1] == "testenv-demo" or k[2] == "testenv-demo"]:
        del kube.objects[key]
    await rec.reconcile(body(kube))
    assert kube.find("Namespace", "testenv-demo") is not None
    assert kube.find("Deployment", "auth", "testenv-demo") is not None
    new_secret = (kube.find("Secret", "testenv-secrets", "testenv-demo") or {})["data"]
    assert new_secret != old_secret
    assert body(kube)["status"]["phase"] == "Provisioning"


async def test_progress_is_written_once_a_second_a_new_phase_at_once(
    rec: Reconciler, kube: FakeKube
) -> None:
    """Each status write is an API write and a watch event for every watcher: while an
    environment provisions, progress is written at most once a status_interval (1 s), and the
    monitor is woken for it; Ready (or any new phase) is written at once."""
    clock = rec.clock
    assert isinstance(clock, Clock)
    await rec.reconcile(body(kube))
    assert body(kube)["status"]["readyServices"] == "0/3"
    first = sorted(n for k, _, n in kube.objects if k == "Deployment")[0]
    make_one_ready(kube, first)
    clock.now += timedelta(seconds=0.4)
    result = await rec.reconcile(body(kube))
    assert result is not None and result.status.ready_services == "1/3"
    assert body(kube)["status"]["readyServices"] == "0/3"  # held...
    assert result.wake_at == clock.now + timedelta(seconds=0.6)  # ...until a second is up
    clock.now += timedelta(seconds=0.6)
    await rec.reconcile(body(kube))
    assert body(kube)["status"]["readyServices"] == "1/3"
    make_ready(kube)
    clock.now += timedelta(seconds=0.1)
    await rec.reconcile(body(kube))
    assert body(kube)["status"]["phase"] == "Ready"


async def test_status_interval_zero_writes_every_change(
    kube: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    rec = Reconciler(
        kube,
        Settings(status_interval=0),
        lambda body, t, r, m: events.append((t, r, m)),
        clock=Clock(),
    )
    await rec.reconcile(body(kube))
    make_one_ready(kube, sorted(n for k, _, n in kube.objects if k == "Deployment")[0])
    await rec.reconcile(body(kube))
    assert body(kube)["status"]["readyServices"] == "1/3"
