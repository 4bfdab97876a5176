"""The backend: health, /api/me and the WebSocket protocol, wired to the real auth app."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from testenv_services._common import ConfigError
from testenv_services.backend import BackendSettings, create_app
from testenv_services.backend.protocol import ONBOARDING

from .conftest import SEED_EMAIL


def _down(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


@pytest.fixture
def backend_without_auth() -> TestClient:
    app = create_app(
        BackendSettings(auth_url="http://auth.invalid:8080"),
        auth_transport=httpx.MockTransport(_down),
    )
    return TestClient(app)


def _roundtrip(ws: Any, message: dict[str, Any]) -> dict[str, Any]:
    ws.send_json(message)
    reply: dict[str, Any] = ws.receive_json()
    return reply


def test_health_checks_auth(backend: TestClient) -> None:
    resp = backend.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "auth": "ok", "history": "ok"}


def test_health_fails_without_auth(backend_without_auth: TestClient) -> None:
    resp = backend_without_auth.get("/health")
    assert resp.status_code == 503
    assert resp.json()["status"] == "unavailable"


def test_me(backend: TestClient, token: str) -> None:
    resp = backend.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    assert resp.json()["email"] == SEED_EMAIL
    assert resp.json()["sub"]


@pytest.mark.parametrize("header", [None, "Bearer nope", "Token abc"])
def test_me_needs_a_valid_token(backend: TestClient, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    resp = backend.get("/api/me", headers=headers)
    assert resp.status_code == 401


def test_me_without_auth_is_503(backend_without_auth: TestClient) -> None:
    resp = backend_without_auth.get("/api/me", headers={"Authorization": "Bearer x"})
    assert resp.status_code == 503


def test_ws_chat(backend: TestClient, token: str) -> None:
    with backend.websocket_connect(f"/ws?token={token}") as ws:
        reply = _roundtrip(ws, {"type": "chat", "text": "hello"})
        assert reply == {
            "type": "chat_response",
            "text": "Echo: hello",
            "reply_to": "hello",
            "count": 1,
        }
        reply = _roundtrip(ws, {"type": "chat", "message": "legacy key", "id": 7})
        assert reply["text"] == "Echo: legacy key"
        assert reply["id"] == 7
        assert reply["count"] == 2
        assert _roundtrip(ws, {"type": "ping"}) == {"type": "pong", "user": SEED_EMAIL}
    # the history outlives the connection
    resp = backend.get("/api/messages", headers={"Authorization": f"Bearer {token}"})
    assert resp.json() == {"messages": ["hello", "legacy key"]}
    assert backend.get("/api/messages").status_code == 401


def test_ws_accepts_a_bearer_header(backend: TestClient, token: str) -> None:
    with backend.websocket_connect("/ws", headers={"Authorization": f"Bearer {token}"}) as ws:
        assert _roundtrip(ws, {"type": "chat", "text": "hi"})["type"] == "chat_response"


def test_ws_onboarding_journey(backend: TestClient, token: str) -> None:
    total = len(ONBOARDING)
    with backend.websocket_connect(f"/ws?token={token}") as ws:
        early = _roundtrip(ws, {"type": "onboarding_next"})
        assert early["type"] == "error"
        assert "onboarding_start" in early["error"]

        step = _roundtrip(ws, {"type": "onboarding_start"})
        seen = []
        while step["type"] == "onboarding_step":
            assert step["total"] == total
            assert step["title"]
            seen.append(step["step"])
            step = _roundtrip(ws, {"type": "onboarding_next"})
        assert seen == list(range(1, total + 1))
        assert step == {"type": "onboarding_complete", "total": total}

        assert _roundtrip(ws, {"type": "onboarding_next"})["type"] == "error"
        assert _roundtrip(ws, {"type": "onboarding_start"})["step"] == 1  # restartable


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"type": "dance"}', "unknown message type 'dance'"),
        ('{"text": "no type"}', "unknown message type None"),
        ('{"type": "chat", "text": "  "}', "non-empty string"),
        ('{"type": "chat", "text": 5}', "non-empty string"),
    ],
)
def test_ws_bad_messages_keep_the_connection(
    backend: TestClient, token: str, frame: str, error: str
) -> None:
    with backend.websocket_connect(f"/ws?token={token}") as ws:
        ws.send_text(frame)
        reply = ws.receive_json()
        assert reply["type"] == "error"
        assert error in reply["error"]
        assert _roundtrip(ws, {"type": "chat", "text": "still here"})["text"] == "Echo: still here"


def test_ws_binary_frames_are_an_error(backend: TestClient, token: str) -> None:
    with backend.websocket_connect(f"/ws?token={token}") as ws:
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_json()["type"] == "error"
        assert _roundtrip(ws, {"type": "ping"})["type"] == "pong"


def test_ws_overlong_chat_is_an_error(backend: TestClient, token: str) -> None:
    with backend.websocket_connect(f"/ws?token={token}") as ws:
        assert _roundtrip(ws, {"type": "chat", "text": "x" * 5000})["type"] == "error"


@pytest.mark.parametrize(
    ("query", "reason"),
    [("", "missing token"), ("?token=", "missing token"), ("?token=forged", "invalid")],
)
def test_ws_bad_token_closes_with_policy_violation(
    backend: TestClient, query: str, reason: str
) -> None:
    with backend.websocket_connect(f"/ws{query}") as ws, pytest.raises(WebSocketDisconnect) as exc:
        ws.receive_json()
    assert exc.value.code == 1008
    assert reason in exc.value.reason


def test_ws_without_auth_closes_with_internal_error(backend_without_auth: TestClient) -> None:
    with (
        backend_without_auth.websocket_connect("/ws?token=x") as ws,
        pytest.raises(WebSocketDisconnect) as exc,
    ):
        ws.receive_json()
    assert exc.value.code == 1011


def test_backend_verifies_through_auth_over_http(auth_app: FastAPI, token: str) -> None:
    """Every verification is a call to auth's /verify (no local key in the backend)."""
    seen: list[str] = []
    inner = httpx.ASGITransport(app=auth_app)

    class Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(f"{request.method} {request.url}")
            return await inner.handle_async_request(request)

    app = create_app(BackendSettings(auth_url="http://auth:9999"), auth_transport=Recording())
    with TestClient(app) as client:
        assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).is_success
    assert seen == ["GET http://auth:9999/verify"]


def test_settings_need_the_auth_url() -> None:
    with pytest.raises(ConfigError, match="TESTENV_AUTH_URL is required"):
        BackendSettings.from_env({})
    with pytest.raises(ConfigError, match="http"):
        BackendSettings.from_env({"TESTENV_AUTH_URL": "auth:8080"})
    settings = BackendSettings.from_env({"TESTENV_AUTH_URL": "http://auth.ns.svc:8080/"})
    assert settings.auth_url == "http://auth.ns.svc:8080"
