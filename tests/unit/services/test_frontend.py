"""The frontend: the page, the login proxy and the WebSocket relay to the backend."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from testenv_services._common import ConfigError
from testenv_services.frontend import FrontendSettings, create_app
from testenv_services.frontend.proxy import Upstream, UpstreamUnavailable

from .conftest import SEED_EMAIL, SEED_PASSWORD

SETTINGS = FrontendSettings(auth_url="http://auth:1", backend_url="http://backend:2")


def test_page_has_the_stable_ids(frontend: TestClient) -> None:
    resp = frontend.get("/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    for element in ("email", "password", "login", "chat-input", "send", "messages", "status"):
        assert f'id="{element}"' in resp.text, element


def test_page_uses_only_relative_urls(frontend: TestClient) -> None:
    page = frontend.get("/").text
    assert not re.search(r"(https?|wss?)://", page)
    assert "localhost" not in page
    assert ":8080" not in page
    assert 'fetch("/api/login"' in page
    assert "location.host" in page


def test_health(frontend: TestClient) -> None:
    assert frontend.get("/health").json() == {"status": "ok"}


def test_login_is_proxied(frontend: TestClient) -> None:
    resp = frontend.post("/api/login", json={"email": SEED_EMAIL, "password": SEED_PASSWORD})
    assert resp.status_code == 200
    assert resp.json()["token_type"] == "bearer"
    assert resp.json()["access_token"]


def test_login_errors_pass_through(frontend: TestClient) -> None:
    resp = frontend.post("/api/login", json={"email": SEED_EMAIL, "password": "wrong-one"})
    assert resp.status_code == 401
    assert resp.json() == {"detail": "invalid email or password"}
    assert resp.headers["www-authenticate"] == "Bearer"


def test_register_is_proxied(frontend: TestClient) -> None:
    resp = frontend.post(
        "/api/register", json={"email": "new@example.com", "password": "secure123"}
    )
    assert resp.status_code == 201
    resp = frontend.post("/api/register", json={"email": "new@example.com", "password": "x"})
    assert resp.status_code == 422


def test_login_without_auth_is_502() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with TestClient(create_app(SETTINGS, auth_transport=httpx.MockTransport(down))) as client:
        resp = client.post("/api/login", json={"email": SEED_EMAIL, "password": SEED_PASSWORD})
    assert resp.status_code == 502


def test_ws_is_relayed_to_the_backend(frontend: TestClient, token: str) -> None:
    with frontend.websocket_connect(f"/ws?token={token}") as ws:
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong", "user": SEED_EMAIL}
        ws.send_json({"type": "chat", "text": "through the proxy"})
        reply = ws.receive_json()
        assert reply["type"] == "chat_response"
        assert reply["text"] == "Echo: through the proxy"
        ws.send_text("{oops")
        assert ws.receive_json()["type"] == "error"
        ws.send_json({"type": "onboarding_start"})
        assert ws.receive_json()["step"] == 1


def test_ws_close_code_is_mirrored(frontend: TestClient) -> None:
    with (
        frontend.websocket_connect("/ws?token=forged") as ws,
        pytest.raises(WebSocketDisconnect) as exc,
    ):
        ws.receive_json()
    assert exc.value.code == 1008
    assert exc.value.reason == "invalid or expired token"


def test_ws_without_backend_closes_with_internal_error() -> None:
    @asynccontextmanager
    async def unreachable(url: str) -> AsyncIterator[Upstream]:
        raise UpstreamUnavailable(f"cannot reach {url}")
        yield  # pragma: no cover

    app = create_app(SETTINGS, backend_connector=unreachable)
    with TestClient(app) as client:
        with (
            client.websocket_connect("/ws?token=x") as ws,
            pytest.raises(WebSocketDisconnect) as exc,
        ):
            ws.receive_json()
    assert exc.value.code == 1011


def test_token_is_forwarded_url_encoded() -> None:
    urls: list[str] = []

    @asynccontextmanager
    async def record(url: str) -> AsyncIterator[Upstream]:
        urls.append(url)
        raise UpstreamUnavailable("recorded")
        yield  # pragma: no cover

    with TestClient(create_app(SETTINGS, backend_connector=record)) as client:
        with (
            client.websocket_connect("/ws?token=a%2Bb%26c") as ws,
            pytest.raises(WebSocketDisconnect),
        ):
            ws.receive_json()
    assert urls == ["ws://backend:2/ws?token=a%2Bb%26c"]


def test_settings() -> None:
    with pytest.raises(ConfigError, match="TESTENV_AUTH_URL"):
        FrontendSettings.from_env({"TESTENV_BACKEND_URL": "http://b"})
    with pytest.raises(ConfigError, match="TESTENV_BACKEND_URL"):
        FrontendSettings.from_env({"TESTENV_AUTH_URL": "http://a"})
    settings = FrontendSettings.from_env(
        {"TESTENV_AUTH_URL": "http://a:1", "TESTENV_BACKEND_URL": "https://b:2/", "PORT": "3000"}
    )
    assert settings.backend_ws_url == "wss://b:2/ws"
    assert settings.server.port == 3000
    assert SETTINGS.backend_ws_url == "ws://backend:2/ws"
