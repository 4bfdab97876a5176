"""Frontend settings, read only from environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from testenv_services._common import Env, ServerSettings, env_number, service_url


@dataclass(frozen=True)
class FrontendSettings:
    """Upstreams come from ``TESTENV_AUTH_URL`` and ``TESTENV_BACKEND_URL``."""

    auth_url: str
    backend_url: str
    upstream_timeout: float = 10.0
    server: ServerSettings = field(default_factory=ServerSettings)

    @property
    def backend_ws_url(self) -> str:
        """The backend's ``/ws`` endpoint (``http`` → ``ws``, ``https`` → ``wss``)."""
        return "ws" + self.backend_url.removeprefix("http") + "/ws"

    @classmethod
    def from_env(cls, env: Env) -> FrontendSettings:
        timeout = env_number(env, "FRONTEND_UPSTREAM_TIMEOUT", 10.0, minimum=0.1, maximum=120)
        return cls(
            auth_url=service_url(env, "TESTENV_AUTH_URL"),
            backend_url=service_url(env, "TESTENV_BACKEND_URL"),
            upstream_timeout=timeout,
            server=ServerSettings.from_env(env),
        )
