from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from operator_fake_kube import FakeKube, demo_environment
from test_operator_reconcile import Clock

from testenv.api import LEASE_RENEWED_ANNOTATION, TestEnvironmentSpec
from testenv_operator.expiry import deadline, expired, expires_at, lease_renewed_at
from testenv_operator.reconcile import Reconciler
from testenv_operator.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def managed_entry(manager: str, time: str, *annotations: str) -> dict[str, Any]:
    fields = {f"f:{a}": {} for a in annotations}
    return {
        "manager": manager,
        "operation": "Update",
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:annotations": fields}},
    }


def test_ttl() -> None:
    spec = TestEnvironmentSpec(ttl="30m")
    assert expires_at(T0, spec) == T0 + timedelta(minutes=30)
    assert expired(T0 + timedelta(minutes=29), T0, spec, None) is None
    due = expired(T0 + timedelta(minutes=30), T0, spec, None)
    assert due is not None and due.reason == "TTLExpired"


def test_lease_counts_from_creation_when_never_renewed() -> None:
    spec = TestEnvironmentSpec(ttl="1h", lease="5m")
    due = expired(T0 + timedelta(minutes=5), T0, spec, None)
    assert due is not None and due.reason == "LeaseExpired"


def test_lease_renewal_extends_but_not_past_ttl() -> None:
    spec = TestEnvironmentSpec(ttl="1h", lease="5m")
    renewed = T0 + timedelta(minutes=20)
    assert expired(T0 + timedelta(minutes=24), T0, spec, renewed) is None
    assert deadline(T0, spec, renewed).at == T0 + timedelta(minutes=25)
    assert deadline(T0, spec, T0 + timedelta(minutes=58)).reason == "TTLExpired"


def test_the_renewal_time_is_the_api_servers_not_the_clients() -> None:
    """A client whose clock is a day ahead cannot stretch its lease: the time is the one the
    API server stamped on the managedFields entry that owns the annotation."""
    meta = {
        "annotations": {LEASE_RENEWED_ANNOTATION: "2026-01-02T00:00:00Z"},  # the client's clock
        "managedFields": [
            managed_entry("kopf", "2026-01-01T00:30:00Z", "testenv.dev/last-handled"),
            managed_entry("testenv", "2026-01-01T00:10:00Z", LEASE_RENEWED_ANNOTATION),
        ],
    }
    assert lease_renewed_at(meta) == T0 + timedelta(minutes=10)
    assert lease_renewed_at({"annotations": meta["annotations"]}) is None


async def test_expiry_deletes_only_the_version_it_decided_on() -> None:
    """A renewal that lands between the decision and the deletion wins: the deletion carries
    the uid and resourceVersion as preconditions and the API server refuses it."""
    kube = FakeKube()
    body = demo_environment({"ttl": "1h", "lease": "5m", "services": []})
    body["metadata"]["resourceVersion"] = "1"
    kube.put(body)
    clock = Clock()
    clock.now = datetime(2026, 1, 1, 0, 6, tzinfo=UTC)
    rec = Reconciler(kube, Settings(), lambda *a: None, clock=clock)
    stale = rec.environment(copy.deepcopy(body))
    renewed = kube.find("TestEnvironment", "demo") or {}
    renewed["metadata"]["resourceVersion"] = "2"  # renewed meanwhile
    assert await rec.expire_if_due(stale) is None
    assert kube.find("TestEnvironment", "demo") is not None
    fresh = rec.environment(copy.deepcopy(renewed))
    assert await rec.expire_if_due(fresh) is not None
    assert kube.find("TestEnvironment", "demo") is None
