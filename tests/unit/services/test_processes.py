"""The real entry points: ``python -m testenv_services.<name>`` on loopback ports.

Checks what in-process tests cannot: env-only configuration, JSON logs on stdout, refusal
to start without a key, the websockets-based relay and a clean SIGTERM shutdown.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

# Real local processes: seconds each, so `make test-unit` leaves them out.
pytestmark = pytest.mark.integration

SERVICES_DIR = Path(__file__).resolve().parents[3] / "services"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTENV_", "AUTH_"))}
    path = os.pathsep.join(filter(None, [str(SERVICES_DIR), env.get("PYTHONPATH")]))
    env.update(PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1", LISTEN_HOST="127.0.0.1", **extra)
    return env


def _start(service: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", f"testenv_services.{service}"],
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_auth_refuses_to_start_without_a_key() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "testenv_services.auth"],
        env=_env(PORT=str(_free_port())),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "TESTENV_SECRET_KEY is required" in proc.stderr
    event = json.loads(proc.stdout.strip().splitlines()[-1])
    assert event["event"] == "config_error"
    assert event["level"] == "error"


@pytest.fixture
def stack() -> Iterator[dict[str, tuple[subprocess.Popen[str], int]]]:
    ports = {name: _free_port() for name in ("auth", "backend", "frontend")}
    auth_url = f"http://127.0.0.1:{ports['auth']}"
    backend_url = f"http://127.0.0.1:{ports['backend']}"
    procs = {
        "auth": _start(
            "auth",
            PORT=str(ports["auth"]),
            TESTENV_SECRET_KEY="process-test-secret",
            AUTH_SEED_USERS="test@example.com:password",
        ),
        "backend": _start("backend", PORT=str(ports["backend"]), TESTENV_AUTH_URL=auth_url),
        "frontend": _start(
            "frontend",
            PORT=str(ports["frontend"]),
            TESTENV_AUTH_URL=auth_url,
            TESTENV_BACKEND_URL=backend_url,
        ),
    }
    try:
        yield {name: (proc, ports[name]) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)


async def _wait_healthy(port: int) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"port {port} never became healthy")


async def test_stack_serves_and_stops_on_sigterm(
    stack: dict[str, tuple[subprocess.Popen[str], int]],
) -> None:
    for _, port in stack.values():
        await _wait_healthy(port)
    front = stack["frontend"][1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{front}") as client:
        resp = await client.post(
            "/api/login", json={"email": "test@example.com", "password": "password"}
        )
        assert resp.status_code == 200, resp.text
        token = resp.json()["access_token"]

    async with connect(f"ws://127.0.0.1:{front}/ws?token={token}") as ws:
        await ws.send(json.dumps({"type": "chat", "text": "over real sockets"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["text"] == "Echo: over real sockets"
        await ws.send("not json")
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "error"

    async with connect(f"ws://127.0.0.1:{front}/ws?token=forged") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008

    for name, (proc, _) in stack.items():
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode in (0, -signal.SIGTERM), (name, err)
        lines = [json.loads(line) for line in out.splitlines()]  # every line is JSON
        assert {line["service"] for line in lines} == {name}
        assert any(line["message"] == "Application shutdown complete." for line in lines)
        assert token not in out  # tokens in URLs are redacted from logs
