"""When an environment must go: its ttl, or an unrenewed lease (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from testenv.api import LEASE_RENEWED_ANNOTATION, TestEnvironmentSpec, parse_duration
from testenv_operator.timeutil import format_time, parse_time


@dataclass(frozen=True)
class Deadline:
    at: datetime
    reason: str  # "TTLExpired" or "LeaseExpired"
    message: str


def expires_at(created: datetime, spec: TestEnvironmentSpec) -> datetime:
    return created + parse_duration(spec.ttl)


def lease_renewed_at(metadata: Mapping[str, Any]) -> datetime | None:
    """When the lease was last renewed, by the API server's clock: the time of the
    ``managedFields`` entry that owns the renewal annotation (the server stamps it whenever
    that writer changes the value). The annotation's own value is the client's clock and is
    not trusted; None if it was never set."""
    key = f"f:{LEASE_RENEWED_ANNOTATION}"
    times = [
        parse_time(entry.get("time"))
        for entry in metadata.get("managedFields") or []
        if key
        in (((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {})
    ]
    found = [t for t in times if t is not None]
    return max(found) if found else None


def deadline(created: datetime, spec: TestEnvironmentSpec, renewed: datetime | None) -> Deadline:
    """The earliest moment the environment must be deleted, and why (``renewed``: the last
    lease renewal, see :func:`lease_renewed_at`)."""
    ttl_at = expires_at(created, spec)
    result = Deadline(ttl_at, "TTLExpired", f"ttl {spec.ttl} expired at {format_time(ttl_at)}")
    if spec.lease is not None:
        since = max(renewed, created) if renewed else created
        lease_at = since + parse_duration(spec.lease)
        if lease_at < result.at:
            result = Deadline(
                lease_at,
                "LeaseExpired",
                f"lease {spec.lease} not renewed since {format_time(since)} "
                f"(annotation {LEASE_RENEWED_ANNOTATION})",
            )
    return result


def expired(
    now: datetime,
    created: datetime,
    spec: TestEnvironmentSpec,
    renewed: datetime | None,
) -> Deadline | None:
    """The deadline that has passed, or None while the environment may live."""
    due = deadline(created, spec, renewed)
    return due if now >= due.at else None
