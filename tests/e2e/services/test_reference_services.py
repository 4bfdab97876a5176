"""The reference services in a real environment, reached the way users reach them: through
the plugin's port-forwards, with the plugin's clients, and the frontend in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from e2e_helpers import kill_service_pods

from testenv import RealServiceContext

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(
    os.environ.get("TESTENV_ARTIFACTS", Path(__file__).resolve().parents[3] / "artifacts")
)
CHROMIUM = "/usr/bin/chromium"


def _unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@example.com"


async def test_register_login_chat_and_onboarding(real_services: RealServiceContext) -> None:
    email = _unique_email()
    user = await real_services.auth_client.register(email=email, password="correct-horse")
    assert user.email == email
    token = await real_services.auth_client.login(email, "correct-horse")

    me = await real_services.backend_client.me(token)
    assert me["email"] == email  # the backend asked auth, over the cluster network

    async with await real_services.websocket_factory(token) as ws:
        await ws.send_chat("Hello from e2e")
        reply = await ws.receive()
        assert reply["type"] == "chat_response"
        assert "Hello from e2e" in reply["text"]

        await ws.send({"type": "onboarding_start"})
        step = await ws.receive()
        assert step["type"] == "onboarding_step" and step["step"] == 1
        seen = [step["step"]]
        while True:
            await ws.send({"type": "onboarding_next"})
            message = await ws.receive()
            if message["type"] == "onboarding_complete":
                break
            assert message["type"] == "onboarding_step"
            seen.append(message["step"])
        assert seen == list(range(1, step["total"] + 1))

        await ws.send({"type": "no-such-type"})
        assert (await ws.receive())["type"] == "error"
        await ws.send_chat("still usable")
        assert (await ws.receive())["type"] == "chat_response"


async def test_duplicate_and_weak_registrations_are_refused(
    real_services: RealServiceContext,
) -> None:
    auth = await real_services.discovery.get_service_info("auth")
    email = _unique_email()
    async with httpx.AsyncClient(base_url=auth.base_url) as client:
        first = await client.post("/register", json={"email": email, "password": "long-enough"})
        again = await client.post("/register", json={"email": email, "password": "long-enough"})
        weak = await client.post("/register", json={"email": _unique_email(), "password": "short"})
        wrong = await client.post("/login", json={"email": email, "password": "not-it-at-all"})
    assert first.status_code == 201
    assert again.status_code == 409
    assert weak.status_code == 422 and "8 characters" in weak.text
    assert wrong.status_code == 401


def _forged_token() -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = part({"alg": "HS256", "typ": "JWT"})
    claims = part({"sub": "1", "email": "test@example.com", "exp": 4102444800})
    return f"{header}.{claims}.{base64.urlsafe_b64encode(b'x' * 32).rstrip(b'=').decode()}"


async def test_backend_refuses_a_forged_token(real_services: RealServiceContext) -> None:
    forged = _forged_token()
    with pytest.raises(Exception, match="401"):
        await real_services.backend_client.me(forged)
    ws = await real_services.websocket_factory(forged)
    await ws.connect()
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.receive()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008  # policy violation
    assert "token" in closed.value.rcvd.reason


def test_frontend_page_logs_in_and_chats_in_chromium(real_services: RealServiceContext) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "no headless browser: `make deps` installs Debian's chromium"
    frontend = real_services.discovery.get_service_info_sync("frontend")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page()
            page.goto(frontend.base_url + "/")  # a port-forward on an OS-chosen local port
            page.fill("#email", "test@example.com")
            page.fill("#password", "password")
            page.click("#login")
            expect(page.locator("#status")).to_have_text("connected", timeout=15_000)
            page.fill("#chat-input", "hello from chromium")
            page.click("#send")
            expect(page.locator("#messages")).to_contain_text("hello from chromium", timeout=15_000)
            page.screenshot(path=str(ARTIFACTS / "frontend-chat.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "frontend-chat.png").stat().st_size > 0


async def test_users_and_chat_history_survive_restarts_of_their_pods(
    real_services: RealServiceContext, k: Any
) -> None:
    """Auth keeps its users in PostgreSQL and the backend its chat history in Redis: new pods
    of both find what the old ones stored."""
    email = _unique_email()
    await real_services.auth_client.register(email=email, password="correct-horse")
    token = await real_services.auth_client.login(email, "correct-horse")
    async with await real_services.websocket_factory(token) as ws:
        await ws.send_chat("before the restart")
        assert (await ws.receive())["count"] == 1

    ns = real_services.environment.namespace if real_services.environment else None
    assert ns
    for service in ("auth", "backend"):
        kill_service_pods(k, ns, service)
    name = real_services.environment.name if real_services.environment else ""
    k("wait", "--for=jsonpath={.status.phase}=Ready", f"testenv/{name}", "--timeout=120s")

    token = await real_services.auth_client.login(email, "correct-horse")  # a new auth pod
    history = await real_services.backend_client.request(
        "GET", "/api/messages", headers={"Authorization": f"Bearer {token}"}
    )
    assert history.json() == {"messages": ["before the restart"]}
    async with await real_services.websocket_factory(token) as ws:
        await ws.send_chat("after the restart")
        assert (await ws.receive())["count"] == 2
