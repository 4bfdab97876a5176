"""The reconcile against an in-memory Kubernetes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from operator_factories import pod
from operator_fake_kube import (
    FakeKube,
    demo_environment,
    make_service_ready,
    service_pods,
    services_with_pods,
)

from testenv_operator.kube import KubeError
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
    make_service_ready(kube, service)


def make_ready(kube: FakeKube) -> None:
    for service in services_with_pods(kube):
        make_service_ready(kube, service)


async def test_reconcile_applies_everything(rec: Reconciler, kube: FakeKube) -> None:
    result = await rec.reconcile(body(kube))
    assert result is not None
    kinds = sorted(k for k, _, _ in kube.objects)
    assert kinds.count("Pod") == 3 and kinds.count("Service") == 3
    assert services_with_pods(kube) == ["auth", "backend", "frontend"]
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


async def test_deleted_pod_is_recreated(
    rec: Reconciler, kube: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    await rec.reconcile(body(kube))
    (pod_,) = service_pods(kube, "backend")
    name = pod_["metadata"]["name"]
    await kube.delete("Pod", name, "testenv-demo")
    await rec.reconcile(body(kube))
    assert kube.find("Pod", name, "testenv-demo") is not None
    assert any(r == "Recreating" and name in m for _, r, m in events)


async def test_namespace_conflict_is_never_adopted(rec: Reconciler, kube: FakeKube) -> None:
    kube.put({"kind": "Namespace", "metadata": {"name": "testenv-demo", "uid": "other"}})
    await rec.reconcile(body(kube))
    status = body(kube)["status"]
    assert status["phase"] == "Failed"
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["reason"] == (
        "NamespaceConflict"
    )
    assert not any(k == "Pod" for k, _, _ in kube.objects)
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
    (bad,) = service_pods(kube, "backend")
    bad["status"] = pod("x", "backend", waiting="ErrImageNeverPull", message="not present")[
        "status"
    ]
    name = bad["metadata"]["name"]
    kube.put(
        {
            "kind": "Event",
            "metadata": {"name": "e1", "namespace": "testenv-demo"},
            "reason": "Failed",
            "message": "Error: ErrImageNeverPull",
            "involvedObject": {"name": name},
        }
    )
    kube.logs[name] = "starting\nfatal: no config\n"
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
    assert service_pods(kube, "auth")
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
    make_one_ready(kube, "auth")
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
    make_one_ready(kube, "auth")
    await rec.reconcile(body(kube))
    assert body(kube)["status"]["readyServices"] == "1/3"


# -- a service's pods are the operator's own (docs/decisions/0002) ---------------------------
def pod_names(kube: FakeKube, service: str) -> list[str]:
    return [p["metadata"]["name"] for p in service_pods(kube, service)]


def change_spec(kube: FakeKube, service: str, **fields: Any) -> None:
    env = body(kube)
    next(s for s in env["spec"]["services"] if s["name"] == service).update(fields)
    env["metadata"]["generation"] += 1


async def test_a_changed_service_gets_new_pods_and_is_not_ready_on_the_old_ones(
    rec: Reconciler, kube: FakeKube
) -> None:
    await rec.reconcile(body(kube))
    make_ready(kube)
    await rec.reconcile(body(kube))
    assert body(kube)["status"]["phase"] == "Ready"
    (old,) = pod_names(kube, "backend")
    change_spec(kube, "backend", image="testenv/backend:0.2.0")
    await rec.reconcile(body(kube))
    assert ("delete", "Pod", old) in kube.calls
    (new,) = pod_names(kube, "backend")
    assert new != old and new.startswith("backend-")
    (pod_,) = service_pods(kube, "backend")
    assert pod_["spec"]["containers"][0]["image"] == "testenv/backend:0.2.0"
    backend = next(s for s in body(kube)["status"]["services"] if s["name"] == "backend")
    assert not backend["ready"]
    make_one_ready(kube, "backend")
    await rec.reconcile(body(kube))
    assert body(kube)["status"]["phase"] == "Ready"


async def test_replicas_are_scaled_both_ways(rec: Reconciler, kube: FakeKube) -> None:
    await rec.reconcile(body(kube))
    (first,) = pod_names(kube, "auth")
    change_spec(kube, "auth", replicas=3)
    await rec.reconcile(body(kube))
    names = pod_names(kube, "auth")
    assert len(names) == 3 and first in names  # same template: the pod stays
    change_spec(kube, "auth", replicas=1)
    await rec.reconcile(body(kube))
    assert pod_names(kube, "auth") == [first]


async def test_an_evicted_pod_is_replaced_at_once_and_deleted(
    rec: Reconciler, kube: FakeKube
) -> None:
    await rec.reconcile(body(kube))
    (pod_,) = service_pods(kube, "frontend")
    name = pod_["metadata"]["name"]
    pod_["status"] = {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}
    await rec.reconcile(body(kube))
    assert ("delete", "Pod", name) in kube.calls
    assert pod_names(kube, "frontend") == [f"{name}-1"]  # the next name of its slot
    frontend = next(s for s in body(kube)["status"]["services"] if s["name"] == "frontend")
    assert not frontend["ready"] and frontend["reason"] != "Evicted"


async def test_a_pod_being_deleted_is_replaced_without_waiting_for_it(
    rec: Reconciler, kube: FakeKube, events: list[tuple[str, str, str]]
) -> None:
    """Its name is free only once it is gone (a grace period later): its slot gets the next
    name at once, and the environment is Ready again without waiting for the old pod."""
    await rec.reconcile(body(kube))
    make_ready(kube)
    await rec.reconcile(body(kube))
    (old,) = service_pods(kube, "auth")
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:30Z"  # kubectl delete pod
    calls = len(kube.calls)
    await rec.reconcile(body(kube))
    # The pod alone: nothing else of the environment is applied again.
    assert [c[:2] for c in kube.calls[calls:]] == [("create", "Pod")]
    assert any(r == "Recreating" for _, r, _ in events)
    names = pod_names(kube, "auth")
    assert names == [old["metadata"]["name"], old["metadata"]["name"] + "-1"]
    assert body(kube)["status"]["phase"] == "Degraded"
    make_one_ready(kube, "auth")
    await rec.reconcile(body(kube))
    assert body(kube)["status"]["phase"] == "Ready"
    assert ("delete", "Pod", old["metadata"]["name"]) not in kube.calls  # already going


class QuotaKube(FakeKube):
    """A quota refuses the backend's pods until ``full`` is cleared."""

    full = True

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        labels = obj["metadata"].get("labels") or {}
        if self.full and obj["kind"] == "Pod" and labels.get("testenv.dev/service") == "backend":
            raise KubeError(
                403,
                f'pods "{obj["metadata"]["name"]}" is forbidden: exceeded quota: '
                "team-quota, requested: pods=1, used: pods=10, limited: pods=10",
            )
        return await super().create(obj)


async def test_a_pod_a_quota_refuses_is_failed_create_and_retried(
    events: list[tuple[str, str, str]],
) -> None:
    kube = QuotaKube()
    kube.put(demo_environment())
    clock = Clock()
    rec = Reconciler(kube, Settings(), lambda b, t, r, m: events.append((t, r, m)), clock=clock)
    await rec.reconcile(body(kube))
    status = body(kube)["status"]
    assert status["phase"] == "Provisioning"  # not the spec's fault: it may clear
    backend = next(s for s in status["services"] if s["name"] == "backend")
    assert backend["reason"] == "FailedCreate" and "exceeded quota" in backend["message"]
    assert service_pods(kube, "auth") and not service_pods(kube, "backend")
    clock.now += timedelta(seconds=1)
    await rec.reconcile(body(kube))  # tried again, said once
    assert [r for _, r, _ in events].count("FailedCreate") == 1
    assert not any(r == "Recreating" for _, r, _ in events)
    kube.full = False
    clock.now += timedelta(seconds=1)
    await rec.reconcile(body(kube))
    assert service_pods(kube, "backend")
    make_ready(kube)
    await rec.reconcile(body(kube))
    assert body(kube)["status"]["phase"] == "Ready"


async def test_a_pod_the_environment_does_not_control_is_not_its_service(
    rec: Reconciler, kube: FakeKube
) -> None:
    """A pod with a service's labels that is not the environment's own (a Deployment's, left
    by an operator before services were bare pods; anyone's): neither deleted nor counted."""
    await rec.reconcile(body(kube))
    stranger = pod("auth-5d9c-xk2p1", "auth", ready=True)
    stranger["metadata"].update(
        namespace="testenv-demo",
        labels={"testenv.dev/environment": "demo", "testenv.dev/service": "auth"},
        ownerReferences=[{"kind": "ReplicaSet", "uid": "rs-uid", "controller": True}],
    )
    kube.put(stranger)
    rec.states["demo"].reapply = True
    await rec.reconcile(body(kube))
    assert ("delete", "Pod", "auth-5d9c-xk2p1") not in kube.calls
    auth = next(s for s in body(kube)["status"]["services"] if s["name"] == "auth")
    assert not auth["ready"]  # its own pod is not Ready yet; the stranger's does not count
    make_ready(kube)
    await rec.reconcile(body(kube))
    assert body(kube)["status"]["phase"] == "Ready"
