"""Operator settings, from the environment (``TESTENV_*`` variables)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from testenv.api import DURATION, parse_duration

ENV_PREFIX = "TESTENV_"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    # The ttl of environments whose spec does not set one (the CRD default is 1h).
    default_ttl: str = Field("1h", pattern=DURATION)
    log_format: Literal["plain", "json", "full"] = "plain"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Kubernetes watch timeouts (seconds): the server ends a watch after server_timeout, the
    # client gives up on a silent connection after client_timeout.
    watch_server_timeout: int = Field(300, ge=10)
    watch_client_timeout: int = Field(330, ge=10)
    # Re-check every environment at least this often, even without events (seconds).
    resync_interval: float = Field(60.0, gt=0)
    # Events posted for TestEnvironments at or above this level.
    posting_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_tail_lines: int = Field(5, ge=0, le=100)
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"

    @field_validator("default_ttl")
    @classmethod
    def _positive(cls, value: str) -> str:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError("TESTENV_DEFAULT_TTL must be longer than 0s")
        return value

    @field_validator("log_level", "posting_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {
            name: env[ENV_PREFIX + name.upper()]
            for name in cls.model_fields
            if ENV_PREFIX + name.upper() in env
        }
        return cls.model_validate(values)
