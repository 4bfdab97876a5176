"""Typed test clients for the reference services (async and sync).

The async clients open their connections inside the calling event loop (one ``httpx``
client per call), so they work from any test, whatever loop scope pytest-asyncio uses.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.sync.client import ClientConnection as SyncClientConnection
from websockets.sync.client import connect as sync_connect

from .discovery import ServiceDiscovery

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class User:
    """A registered user, as returned by the auth service."""

    id: str
    email: str
    raw: dict[str, Any]


def _raise_for_status(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    body = response.text[:500]
    raise httpx.HTTPStatusError(
        f"{what}: {response.request.method} {response.request.url} -> "
        f"{response.status_code}: {body}",
        request=response.request,
        response=response,
    )


def _user(data: dict[str, Any]) -> User:
    return User(id=str(data.get("id", "")), email=str(data["email"]), raw=data)


def _token(data: dict[str, Any]) -> str:
    token = data.get("access_token") or data.get("token")
    if not isinstance(token, str):
        raise ValueError(f"login response has no access_token: {data!r}")
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class _AsyncHTTP:
    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout) as client:
            return await client.request(method, path, **kwargs)

    async def health(self) -> dict[str, Any]:
        """``GET /health`` (raises on a non-2xx answer)."""
        response = await self.request("GET", "/health")
        _raise_for_status(response, "health")
        data: dict[str, Any] = response.json()
        return data

    async def aclose(self) -> None:
        """Nothing to release (connections are per call); kept for symmetry."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"


class AuthTestClient(_AsyncHTTP):
    """Client of the auth service: register users and log in."""

    async def register(self, email: str, password: str) -> User:
        response = await self.request(
            "POST", "/register", json={"email": email, "password": password}
        )
        _raise_for_status(response, "register")
        return _user(response.json())

    async def login(self, email: str, password: str) -> str:
        """Log in and return the access token."""
        response = await self.request("POST", "/login", json={"email": email, "password": password})
        _raise_for_status(response, "login")
        return _token(response.json())


class BackendTestClient(_AsyncHTTP):
    """Client of the backend service's HTTP API."""

    async def me(self, token: str) -> dict[str, Any]:
        """``GET /api/me`` as the user of ``token``."""
        response = await self.request("GET", "/api/me", headers=_bearer(token))
        _raise_for_status(response, "me")
        data: dict[str, Any] = response.json()
        return data


class WebSocketTestClient:
    """A JSON WebSocket client; create it, then ``await connect()`` (or ``async with``)."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._conn: ClientConnection | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def connect(self) -> Self:
        if self._conn is None:
            self._conn = await connect(self.url, open_timeout=self.timeout)
        return self

    def _require(self) -> ClientConnection:
        if self._conn is None:
            raise RuntimeError("WebSocketTestClient is not connected: await client.connect()")
        return self._conn

    async def send(self, message: dict[str, Any]) -> None:
        await self._require().send(json.dumps(message))

    async def send_chat(self, text: str) -> None:
        await self.send({"type": "chat", "text": text})

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109
        """The next message, decoded (``TimeoutError`` after ``timeout`` seconds)."""
        conn = self._require()
        raw = await _recv(conn, self.timeout if timeout is None else timeout)
        data: dict[str, Any] = json.loads(raw)
        return data

    async def receive_until(
        self,
        type_: str,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Skip messages until one of the given ``type`` arrives."""
        while True:
            message = await self.receive(timeout)
            if message.get("type") == type_:
                return message

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"WebSocketTestClient({self.url!r}, connected={self.connected})"


async def _recv(conn: ClientConnection, seconds: float) -> str | bytes:
    async with asyncio.timeout(seconds):
        return await conn.recv()


def websocket_url(ws_base: str, token: str | None) -> str:
    return ws_base if token is None else f"{ws_base}?token={quote(token, safe='')}"


def _backend_ws_base(discovery: ServiceDiscovery) -> str:
    info = discovery.get_service_info_sync("backend")
    return info.ws_url or f"ws://{info.host}:{info.port}/ws"


class TestClientFactory:
    """Creates clients for the services found by a :class:`ServiceDiscovery`."""

    __test__ = False

    def __init__(self, discovery: ServiceDiscovery) -> None:
        self.discovery = discovery

    async def create_auth_client(self) -> AuthTestClient:
        info = await self.discovery.get_service_info("auth")
        return AuthTestClient(base_url=info.base_url)

    async def create_backend_client(self) -> BackendTestClient:
        info = await self.discovery.get_service_info("backend")
        return BackendTestClient(base_url=info.base_url)

    async def create_websocket_client(self, token: str) -> WebSocketTestClient:
        """A backend WebSocket client authenticated by ``token`` (not connected yet)."""
        return WebSocketTestClient(url=websocket_url(_backend_ws_base(self.discovery), token))

    # -- sync variants -------------------------------------------------------------------
    def create_auth_client_sync(self) -> SyncAuthTestClient:
        return SyncAuthTestClient(self.discovery.get_service_info_sync("auth").base_url)

    def create_backend_client_sync(self) -> SyncBackendTestClient:
        return SyncBackendTestClient(self.discovery.get_service_info_sync("backend").base_url)

    def create_websocket_client_sync(self, token: str) -> SyncWebSocketTestClient:
        return SyncWebSocketTestClient(websocket_url(_backend_ws_base(self.discovery), token))


# -- sync clients ----------------------------------------------------------------------------
class _SyncHTTP:
    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._client.request(method, path, **kwargs)

    def health(self) -> dict[str, Any]:
        response = self.request("GET", "/health")
        _raise_for_status(response, "health")
        data: dict[str, Any] = response.json()
        return data

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"


class SyncAuthTestClient(_SyncHTTP):
    """Blocking :class:`AuthTestClient`."""

    def register(self, email: str, password: str) -> User:
        response = self.request("POST", "/register", json={"email": email, "password": password})
        _raise_for_status(response, "register")
        return _user(response.json())

    def login(self, email: str, password: str) -> str:
        response = self.request("POST", "/login", json={"email": email, "password": password})
        _raise_for_status(response, "login")
        return _token(response.json())


class SyncBackendTestClient(_SyncHTTP):
    """Blocking :class:`BackendTestClient`."""

    def me(self, token: str) -> dict[str, Any]:
        response = self.request("GET", "/api/me", headers=_bearer(token))
        _raise_for_status(response, "me")
        data: dict[str, Any] = response.json()
        return data


class SyncWebSocketTestClient:
    """Blocking :class:`WebSocketTestClient` (``websockets.sync``)."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._conn: SyncClientConnection | None = None

    def connect(self) -> Self:
        if self._conn is None:
            # Entering the connection works on every websockets version (and is what 17.1+
            # asks for instead of a bare connect()); close() exits it.
            self._conn = sync_connect(self.url, open_timeout=self.timeout).__enter__()
        return self

    def _require(self) -> SyncClientConnection:
        if self._conn is None:
            raise RuntimeError("SyncWebSocketTestClient is not connected: call connect()")
        return self._conn

    def send(self, message: dict[str, Any]) -> None:
        self._require().send(json.dumps(message))

    def send_chat(self, text: str) -> None:
        self.send({"type": "chat", "text": text})

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        raw = self._require().recv(timeout=self.timeout if timeout is None else timeout)
        data: dict[str, Any] = json.loads(raw)
        return data

    def receive_until(self, type_: str, timeout: float | None = None) -> dict[str, Any]:
        while True:
            message = self.receive(timeout)
            if message.get("type") == type_:
                return message

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()
