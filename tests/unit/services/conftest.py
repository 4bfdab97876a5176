"""Fixtures wiring the three reference services together in-process (no sockets)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

with warnings.catch_warnings():  # starlette >= 1.x nudges towards httpx2; httpx still works
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

try:
    import testenv_services  # noqa: F401
except ImportError:  # the package is not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "services"))

from testenv_services.auth import AuthSettings
from testenv_services.auth import create_app as create_auth
from testenv_services.backend import BackendSettings
from testenv_services.backend import create_app as create_backend
from testenv_services.frontend import FrontendSettings
from testenv_services.frontend import create_app as create_frontend
from testenv_services.frontend.proxy import Connector, Upstream

from .asgi_ws import AsgiWebSocket

SECRET = "unit-test-secret-0123456789abcdef"
SEED_EMAIL = "test@example.com"
SEED_PASSWORD = "password"


@pytest.fixture
def auth_settings() -> AuthSettings:
    return AuthSettings(
        secret_key=SECRET,
        token_ttl_seconds=600,
        seed_users=((SEED_EMAIL, SEED_PASSWORD),),
    )


@pytest.fixture
def auth_app(auth_settings: AuthSettings) -> FastAPI:
    return create_auth(auth_settings)


@pytest.fixture
def auth_transport(auth_app: FastAPI) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=auth_app)


@pytest.fixture
async def auth_client(auth_transport: httpx.ASGITransport) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=auth_transport, base_url="http://auth") as client:
        yield client


@pytest.fixture
def token(auth_app: FastAPI) -> str:
    """A valid token for the seeded user."""
    with TestClient(auth_app) as client:
        resp = client.post("/login", json={"email": SEED_EMAIL, "password": SEED_PASSWORD})
    assert resp.status_code == 200, resp.text
    access_token: str = resp.json()["access_token"]
    return access_token


@pytest.fixture
def backend_app(auth_transport: httpx.ASGITransport) -> FastAPI:
    settings = BackendSettings(auth_url="http://auth.invalid:8080")
    return create_backend(settings, auth_transport=auth_transport)


@pytest.fixture
def backend(backend_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(backend_app) as client:
        yield client


def asgi_connector(app: FastAPI) -> Connector:
    """A frontend Connector that opens the WebSocket on an in-process ASGI app."""

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[Upstream]:
        ws = AsgiWebSocket(app, url)
        await ws.connect()
        try:
            yield ws
        finally:
            await ws.aclose()

    return connect


@pytest.fixture
def frontend_app(auth_transport: httpx.ASGITransport, backend_app: FastAPI) -> FastAPI:
    settings = FrontendSettings(
        auth_url="http://auth.invalid:8080", backend_url="http://backend.invalid:8080"
    )
    return create_frontend(
        settings, auth_transport=auth_transport, backend_connector=asgi_connector(backend_app)
    )


@pytest.fixture
def frontend(frontend_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(frontend_app) as client:
        yield client
