"""Specs on the client side: read from a file, hashed for reuse, named."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import ValidationError

from ._errors import SpecError
from .api import TestEnvironmentSpec, spec_hash, validation_problems

__all__ = ["load_spec", "now_rfc3339", "spec_hash", "unique_name"]


def load_spec(path: Path | None) -> tuple[TestEnvironmentSpec, dict[str, str]]:
    """The spec (and extra metadata labels) in ``path``: a whole TestEnvironment resource or
    only its spec. ``None``: the default spec (the reference services)."""
    if path is None:
        return TestEnvironmentSpec(), {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read the spec file {path}: {exc}") from exc
    labels: dict[str, str] = {}
    if isinstance(data, dict) and ("kind" in data or "apiVersion" in data or "spec" in data):
        labels = dict((data.get("metadata") or {}).get("labels") or {})
        data = data.get("spec") or {}
    try:
        return TestEnvironmentSpec.model_validate(data), labels
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise SpecError(f"invalid spec in {path}: {problems}") from exc


def unique_name(prefix: str = "pytest") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
