from __future__ import annotations

from datetime import UTC, datetime, timedelta

from testenv.api import LEASE_RENEWED_ANNOTATION, TestEnvironmentSpec
from testenv_operator.expiry import deadline, expired, expires_at

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_ttl() -> None:
    spec = TestEnvironmentSpec(ttl="30m")
    assert expires_at(T0, spec) == T0 + timedelta(minutes=30)
    assert expired(T0 + timedelta(minutes=29), T0, spec, {}) is None
    due = expired(T0 + timedelta(minutes=30), T0, spec, {})
    assert due is not None and due.reason == "TTLExpired"


def test_lease_counts_from_creation_when_never_renewed() -> None:
    spec = TestEnvironmentSpec(ttl="1h", lease="5m")
    due = expired(T0 + timedelta(minutes=5), T0, spec, None)
    assert due is not None and due.reason == "LeaseExpired"


def test_lease_renewal_extends_but_not_past_ttl() -> None:
    spec = TestEnvironmentSpec(ttl="1h", lease="5m")
    renewed = {LEASE_RENEWED_ANNOTATION: "2026-01-01T00:20:00Z"}
    assert expired(T0 + timedelta(minutes=24), T0, spec, renewed) is None
    assert deadline(T0, spec, renewed).at == T0 + timedelta(minutes=25)
    late = {LEASE_RENEWED_ANNOTATION: "2026-01-01T00:58:00Z"}
    assert deadline(T0, spec, late).reason == "TTLExpired"


def test_garbage_annotation_counts_as_never_renewed() -> None:
    spec = TestEnvironmentSpec(ttl="1h", lease="5m")
    assert deadline(T0, spec, {LEASE_RENEWED_ANNOTATION: "yesterday"}).at == T0 + timedelta(
        minutes=5
    )
