"""The reconciler on a watch cache (kopf indexes): no API reads on a wake-up, a write that
the cache does not show yet is not taken for a deletion, and the watches are filtered by
the API server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import kopf
import pytest
from operator_fake_kube import FakeKube, demo_environment, service_pods
from test_operator_reconcile import Clock, body, make_ready

from testenv_operator.cache import (
    CHILD_INDEXES,
    ENVIRONMENT_INDEX,
    KEPT,
    NAMESPACE_INDEX,
    ApiReads,
    IndexReads,
    index_entry,
)
from testenv_operator.expiry import lease_renewed_at
from testenv_operator.handlers import CHILD_RESOURCES, MANAGED_SELECTOR, configure
from testenv_operator.reconcile import Reconciler
from testenv_operator.settings import Settings

Obj = dict[str, Any]


class CountingKube(FakeKube):
    """FakeKube that counts reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        self.reads += 1
        return await super().get(kind, name, namespace)

    async def list(self, kind: str, *args: Any, **kwargs: Any) -> list[Obj]:
        self.reads += 1
        return await super().list(kind, *args, **kwargs)


class Indexes(dict[str, Any]):
    """kopf-like indexes filled from the fake cluster when ``sync()`` is called (as watch
    events would fill them, later than the writes)."""

    def __init__(self, kube: FakeKube) -> None:
        super().__init__()
        self.kube = kube
        self.sync()

    def sync(self) -> None:
        by_kind: dict[str, dict[str, list[Obj]]] = {}
        for (kind, _, name), obj in self.kube.objects.items():
            labels = obj["metadata"].get("labels") or {}
            key = (
                name
                if kind in ("TestEnvironment", "Namespace")
                else labels.get("testenv.dev/environment")
            )
            entry = index_entry(
                key, obj, keep=KEPT.get(kind), lease_fields=kind == "TestEnvironment"
            )
            for k, v in (entry or {}).items():
                by_kind.setdefault(kind, {}).setdefault(k, []).append(v)
        self.clear()
        self[ENVIRONMENT_INDEX] = by_kind.get("TestEnvironment", {})
        self[NAMESPACE_INDEX] = by_kind.get("Namespace", {})
        for kind, index in CHILD_INDEXES.items():
            self[index] = by_kind.get(kind, {})


@pytest.fixture
def kube() -> CountingKube:
    k = CountingKube()
    k.put(demo_environment())
    return k


@pytest.fixture
def setup(kube: CountingKube) -> Iterator[tuple[Reconciler, Indexes, list[str], Clock]]:
    indexes = Indexes(kube)
    events: list[str] = []
    clock = Clock()
    rec = Reconciler(
        kube,
        Settings(),
        lambda b, t, r, m: events.append(r),
        clock=clock,
        reads=IndexReads(indexes, fallback=ApiReads(kube)),
    )
    yield rec, indexes, events, clock


async def test_a_wake_up_of_a_ready_environment_reads_nothing_from_the_api(
    kube: CountingKube, setup: tuple[Reconciler, Indexes, list[str], Clock]
) -> None:
    rec, indexes, events, clock = setup
    await rec.reconcile(body(kube))
    make_ready(kube)
    indexes.sync()
    clock.now += timedelta(seconds=10)
    await rec.reconcile(body(kube))
    assert body(kube)["status"]["phase"] == "Ready"
    indexes.sync()
    kube.reads = 0
    applies = len(kube.calls)
    result = await rec.reconcile(body(kube))
    assert result is not None and result.status.phase == "Ready"
    assert kube.reads == 0
    assert len(kube.calls) == applies  # nothing re-applied or re-published
    assert events.count("Ready") == 1


async def test_objects_the_cache_has_not_shown_yet_are_not_recreated(
    kube: CountingKube, setup: tuple[Reconciler, Indexes, list[str], Clock]
) -> None:
    rec, indexes, events, clock = setup
    await rec.reconcile(body(kube))  # applied; the indexes have not seen it yet
    await rec.reconcile(body(kube))
    assert "Recreating" not in events
    # Later, an object really missing from the cache (deleted) is recreated.
    indexes.sync()
    (pod,) = service_pods(kube, "backend")
    await kube.delete("Pod", pod["metadata"]["name"], "testenv-demo")
    indexes.sync()
    clock.now += timedelta(seconds=10)
    await rec.reconcile(body(kube))
    assert "Recreating" in events
    assert kube.find("Pod", pod["metadata"]["name"], "testenv-demo") is not None


async def test_status_written_is_used_until_the_cache_shows_it(
    kube: CountingKube, setup: tuple[Reconciler, Indexes, list[str], Clock]
) -> None:
    rec, indexes, events, _ = setup
    await rec.reconcile(body(kube))
    stale = {k: v for k, v in body(kube).items() if k != "status"}
    indexes[ENVIRONMENT_INDEX] = {"demo": [stale]}  # the watch has not delivered the status
    await rec.reconcile(body(kube))
    assert events.count("Provisioning") == 1  # no repeated transition from a stale status


def test_watches_are_filtered_by_label_on_the_server() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, Settings())
    for resource in CHILD_RESOURCES:
        group_version = resource[:-1]
        plural = resource[-1]
        api = "/".join(group_version) if len(group_version) == 2 else group_version[0]
        res = kopf.Resource(
            group=group_version[0] if len(group_version) == 2 else "",
            version=group_version[-1],
            plural=plural,
        )
        assert list(settings.watching.label_selectors.collect(res)) == [MANAGED_SELECTOR], api


def test_index_entries_keep_only_what_is_read() -> None:
    """A child's managedFields and a pod's spec are never read (and are most of their size);
    of an environment's managedFields, the lease's renewal time is."""
    body = {
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "b"}, "managedFields": [{"manager": "x"}]},
        "status": {"phase": "Running"},
    }
    entry = index_entry("env", {**body, "spec": {"containers": []}}, keep=KEPT["Pod"])
    assert entry == {
        "env": {
            "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}},
            "status": body["status"],
        }
    }
    assert body["metadata"]["managedFields"]  # the watched object itself is untouched
    lease = "testenv.dev/lease-renewed-at"
    renewal = {
        "manager": "kr8s",
        "operation": "Update",
        "time": "2026-01-01T00:00:05Z",
        "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{lease}": {}}}, "f:spec": {}},
    }
    env = {
        "kind": "TestEnvironment",
        "metadata": {"name": "e", "managedFields": [{"manager": "kubectl", "time": "x"}, renewal]},
        "spec": {},
    }
    kept = index_entry("e", env, lease_fields=True)
    assert kept is not None
    meta = kept["e"]["metadata"]
    assert lease_renewed_at(meta) == lease_renewed_at(env["metadata"]) is not None
    assert len(meta["managedFields"]) == 1
