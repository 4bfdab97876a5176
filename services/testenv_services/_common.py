"""Plumbing shared by the reference services: env parsing, JSON logging, the uvicorn runner."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Any

from starlette.types import ASGIApp

Env = Mapping[str, str]

log = logging.getLogger("testenv.services")

_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


def _version() -> str:
    try:
        return _dist_version("testenv")
    except PackageNotFoundError:
        return "0.0.0"


#: The services' version: that of the distribution they are installed from.
VERSION = _version()


class ConfigError(Exception):
    """A required setting is missing or invalid; the service refuses to start."""


def env_str(env: Env, name: str, default: str | None = None) -> str | None:
    """The stripped value of ``name``, or ``default`` when unset or blank."""
    value = env.get(name, "").strip()
    return value or default


def require(env: Env, *names: str) -> str:
    """The first non-blank of ``names`` (in order), else a ConfigError naming the first."""
    for name in names:
        value = env_str(env, name)
        if value is not None:
            return value
    alternatives = f" (or {', '.join(names[1:])} for local development)" if names[1:] else ""
    raise ConfigError(f"environment variable {names[0]} is required{alternatives}")


def env_number(env: Env, name: str, default: float, *, minimum: float, maximum: float) -> float:
    """A numeric setting within ``[minimum, maximum]``."""
    raw = env_str(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum:g} and {maximum:g}, got {raw}")
    return value


def service_url(env: Env, name: str) -> str:
    """The base URL of a sibling service from the variable ``name`` (required), e.g.
    ``TESTENV_AUTH_URL``: the environment gives every container one per service."""
    url = require(env, name)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http(s):// URL, got {url!r}")
    return url.rstrip("/")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@dataclass(frozen=True)
class ServerSettings:
    """Where and how a service listens: ``LISTEN_HOST`` (0.0.0.0), ``PORT`` (8080)."""

    host: str = "0.0.0.0"
    port: int = 8080
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Env) -> ServerSettings:
        port = int(env_number(env, "PORT", 8080, minimum=1, maximum=65535))
        level = (env_str(env, "LOG_LEVEL") or "INFO").upper()
        if level not in _LEVELS:
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        return cls(host=env_str(env, "LISTEN_HOST") or "0.0.0.0", port=port, log_level=level)


_SECRET_QUERY = re.compile(r"((?:access_)?token=)[^&\s\"']+")


def redact(text: str) -> str:
    """``text`` with query-string tokens (``?token=...``) masked."""
    return _SECRET_QUERY.sub(r"\1[redacted]", text)


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, service, logger, message, then any ``extra``."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        payload: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            if len(record.args) == 5:
                client, method, path, _version, status = record.args
                payload.update(
                    message="request",
                    client=client,
                    method=method,
                    path=redact(str(path)),
                    status=status,
                )
        if "message" not in payload:
            payload["message"] = redact(record.getMessage())
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in payload:
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, separators=(",", ":"))


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log record (uvicorn's included) to stdout as JSON lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    for name in ("httpx", "httpcore", "websockets"):  # one line per call is noise
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def serve(app: ASGIApp, server: ServerSettings) -> None:
    """Run ``app`` with uvicorn until SIGINT/SIGTERM.

    uvicorn drains connections, runs the lifespan shutdown (closing http clients), then
    re-raises the signal, so a SIGTERM'd service exits with status 143 as usual.
    """
    import uvicorn  # imported here: tests and config errors do not pay for it

    config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        log_config=None,
        log_level=server.log_level.lower(),
        access_log=True,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=10,
        ws="websockets-sansio",
    )
    uvicorn.Server(config).run()


def run_main(service: str, build: Callable[[Env], tuple[ASGIApp, ServerSettings]]) -> int:
    """Entry point body of every service: configure logging, build the app, serve it.

    Returns the process exit code: 2 (after a clear message) on a configuration error.
    """
    env = os.environ
    level = (env_str(env, "LOG_LEVEL") or "INFO").upper()
    configure_logging(service, level if level in _LEVELS else "INFO")
    try:
        app, server = build(env)
    except ConfigError as exc:
        log.error("configuration error: %s", exc, extra={"event": "config_error"})
        print(f"testenv {service}: configuration error: {exc}", file=sys.stderr)
        return 2
    log.info(
        "starting",
        extra={"event": "starting", "host": server.host, "port": server.port},
    )
    serve(app, server)
    return 0
