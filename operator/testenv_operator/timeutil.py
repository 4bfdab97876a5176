"""RFC 3339 helpers (Kubernetes timestamps are UTC with a ``Z`` suffix)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: object) -> datetime | None:
    """Parse a Kubernetes/RFC 3339 timestamp; None for missing or malformed values."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_since(start: datetime, moment: datetime | None) -> float | None:
    """Seconds from ``start`` to ``moment`` (never negative), or None."""
    if moment is None:
        return None
    return round(max(0.0, (moment - start).total_seconds()), 3)
