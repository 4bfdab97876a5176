"""When an environment must go: its ttl, or an unrenewed lease (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from testenv.api import LEASE_RENEWED_ANNOTATION, TestEnvironmentSpec, parse_duration
from testenv_operator.timeutil import format_time, parse_time


@dataclass(frozen=True)
class Deadline:
    at: datetime
    reason: str  # "TTLExpired" or "LeaseExpired"
    message: str


def expires_at(created: datetime, spec: TestEnvironmentSpec) -> datetime:
    return created + parse_duration(spec.ttl)


def lease_renewed_at(created: datetime, annotations: Mapping[str, str] | None) -> datetime:
    """The last lease renewal; the creation time if never (or unparsably) renewed."""
    renewed = parse_time((annotations or {}).get(LEASE_RENEWED_ANNOTATION))
    return max(renewed, created) if renewed else created


def deadline(
    created: datetime, spec: TestEnvironmentSpec, annotations: Mapping[str, str] | None
) -> Deadline:
    """The earliest moment the environment must be deleted, and why."""
    ttl_at = expires_at(created, spec)
    result = Deadline(ttl_at, "TTLExpired", f"ttl {spec.ttl} expired at {format_time(ttl_at)}")
    if spec.lease is not None:
        renewed = lease_renewed_at(created, annotations)
        lease_at = renewed + parse_duration(spec.lease)
        if lease_at < result.at:
            result = Deadline(
                lease_at,
                "LeaseExpired",
                f"lease {spec.lease} not renewed since {format_time(renewed)} "
                f"(annotation {LEASE_RENEWED_ANNOTATION})",
            )
    return result


def expired(
    now: datetime,
    created: datetime,
    spec: TestEnvironmentSpec,
    annotations: Mapping[str, str] | None,
) -> Deadline | None:
    """The deadline that has passed, or None while the environment may live."""
    due = deadline(created, spec, annotations)
    return due if now >= due.at else None
