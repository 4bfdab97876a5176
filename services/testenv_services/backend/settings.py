"""Backend settings, read only from environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from testenv_services._common import Env, ServerSettings, env_number, service_url


@dataclass(frozen=True)
class BackendSettings:
    """``auth_url`` comes from ``TESTENV_AUTH_URL``; it is never guessed."""

    auth_url: str
    auth_timeout: float = 5.0
    #: Redis for the chat history (``BACKEND_REDIS_URL``); None: memory.
    redis_url: str | None = field(default=None, repr=False)
    server: ServerSettings = field(default_factory=ServerSettings)

    @classmethod
    def from_env(cls, env: Env) -> BackendSettings:
        return cls(
            auth_url=service_url(env, "TESTENV_AUTH_URL"),
            auth_timeout=env_number(env, "BACKEND_AUTH_TIMEOUT", 5.0, minimum=0.1, maximum=60),
            redis_url=env.get("BACKEND_REDIS_URL") or None,
            server=ServerSettings.from_env(env),
        )
