"""Operator settings, from the environment (``TESTENV_*`` variables, pydantic-settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from testenv.api import PROJECT_VERSION, Duration
from testenv_operator.render import LOCAL_IMAGE_PREFIXES, PRIVATE_CIDRS, RenderOptions

ENV_PREFIX = "TESTENV_"


class Settings(BaseSettings):
    """Every field is read from ``TESTENV_<FIELD>`` (e.g. ``TESTENV_LOG_LEVEL=debug``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # The ttl of environments whose spec does not set one (the CRD default is 1h).
    default_ttl: Duration = "1h"
    log_format: Literal["plain", "json", "full"] = "plain"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Kubernetes watch timeouts (seconds): the server ends a watch after server_timeout, the
    # client gives up on a silent connection after client_timeout.
    watch_server_timeout: int = Field(300, ge=10)
    watch_client_timeout: int = Field(330, ge=10)
    # Re-check every environment at least this often, even without events (seconds).
    resync_interval: float = Field(60.0, gt=0)
    # While an environment is provisioning, progress-only status changes (a pod scheduled, a
    # container started, one more service Ready) are written at most this often (seconds; 0:
    # each at once). A new phase, a failure reason or a new generation is written at once.
    status_interval: float = Field(1.0, ge=0)
    # Events posted for TestEnvironments at or above this level.
    posting_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_tail_lines: int = Field(5, ge=0, le=100)
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    # The image of the init container that holds a workload until the services it depends on
    # accept connections at their Service address (the operator's own image: it is on every
    # cluster that runs the operator).
    wait_image: str = f"testenv/operator:{PROJECT_VERSION}"
    # Prefixes of images loaded into the nodes (pulled IfNotPresent); every other image is
    # pulled Always (TESTENV_LOCAL_IMAGES='["testenv/"]', JSON).
    local_images: tuple[str, ...] = LOCAL_IMAGE_PREFIXES

    # Who the operator is (system:serviceaccount:<namespace>:<name>, set by the chart): the
    # creator of the environments its pools create, which clients check before claiming one.
    identity: str | None = None
    # Most unclaimed pool environments at once, over all pools (a claimed one no longer counts).
    max_pooled_environments: int = Field(100, ge=0)
    # Environments whose objects are applied at once (the others wait: see reconcile.py).
    apply_concurrency: int = Field(8, ge=1, le=256)
    # Requests to the API server in flight at once (more wait in the operator: see kube.py).
    api_concurrency: int = Field(16, ge=1, le=256)
    # Re-check every pool at least this often, even without events (seconds).
    pool_resync_interval: float = Field(10.0, gt=0)

    # Address ranges environments never reach, even with network.egress: internet (JSON).
    private_cidrs: tuple[str, ...] = PRIVATE_CIDRS
    # Mount the Secret keys a container's env reads, so that the kubelet waits for its Secret
    # cache before it creates the container (testenv.api.SECRETS_MOUNT_PATH says why).
    mount_secrets: bool = True

    @property
    def render_options(self) -> RenderOptions:
        return RenderOptions(
            wait=self.wait_image,
            local=self.local_images,
            private_cidrs=self.private_cidrs,
            mount_secrets=self.mount_secrets,
        )

    @field_validator("log_level", "posting_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
