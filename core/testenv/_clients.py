"""Typed test clients for the reference services, written once (async) with a thin sync layer.

The async clients keep **one httpx client per event loop**: a test that runs in its own loop
(pytest-asyncio's default) gets its own connection pool, closed when that loop shuts down its
async generators (``asyncio.run`` and pytest-asyncio both do). The ``Sync*`` classes run the same
coroutines on one private background loop, like kr8s's sync objects.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect

from ._discovery import ServiceDiscovery
from ._loop import BackgroundLoop
from ._tls import client_tls

DEFAULT_TIMEOUT = 10.0
T = TypeVar("T")


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


async def _close_with_loop(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    """Parked at its ``yield`` until the loop shuts down its async generators."""
    try:
        yield
    finally:
        await client.aclose()


class _PerLoopClient:
    """One ``httpx.AsyncClient`` per running event loop, closed along with that loop."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[httpx.AsyncClient, AsyncGenerator[None, None]],
        ] = weakref.WeakKeyDictionary()

    async def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        entry = self._by_loop.get(loop)
        if entry is not None and not entry[0].is_closed:
            return entry[0]
        client = httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, verify=client_tls()
        )
        closer = _close_with_loop(client)
        await closer.__anext__()  # registered with this loop's shutdown_asyncgens()
        self._by_loop[loop] = (client, closer)
        return client

    async def aclose(self) -> None:
        """Close the current loop's client (others close with their loops)."""
        entry = self._by_loop.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[1].aclose()


class _AsyncHTTP:
    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = _PerLoopClient(self.base_url, timeout)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        client = await self._http.get()
        return await client.request(method, path, **kwargs)

    async def health(self) -> dict[str, Any]:
        """``GET /health`` (raises on a non-2xx answer)."""
        response = await self.request("GET", "/health")
        _raise_for_status(response, "health")
        data: dict[str, Any] = response.json()
        return data

    async def aclose(self) -> None:
        """Close this loop's connections now (they close with the loop anyway)."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

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
            raise RuntimeError(f"{type(self).__name__} is not connected: call connect() first")
        return self._conn

    async def send(self, message: dict[str, Any]) -> None:
        await self._require().send(json.dumps(message))

    async def send_chat(self, text: str) -> None:
        await self.send({"type": "chat", "text": text})

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109
        """The next message, decoded (``TimeoutError`` after ``timeout`` seconds)."""
        conn = self._require()
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            raw = await conn.recv()
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
        return f"{type(self).__name__}({self.url!r}, connected={self.connected})"


def websocket_url(ws_base: str, token: str | None) -> str:
    return ws_base if token is None else f"{ws_base}?token={quote(token, safe='')}"


def _backend_ws_base(discovery: ServiceDiscovery) -> str:
    info = discovery.get_service_info_sync("backend")
    return info.ws_url or f"ws://{info.host}:{info.port}/ws"


class TestClientFactory:
    """Creates clients for the services found by a :class:`ServiceDiscovery` (the plan's)."""

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

    # -- the sync layer ---------------------------------------------------------------------
    def create_auth_client_sync(self) -> SyncAuthTestClient:
        return SyncAuthTestClient(self.discovery.get_service_info_sync("auth").base_url)

    def create_backend_client_sync(self) -> SyncBackendTestClient:
        return SyncBackendTestClient(self.discovery.get_service_info_sync("backend").base_url)

    def create_websocket_client_sync(self, token: str) -> SyncWebSocketTestClient:
        return SyncWebSocketTestClient(websocket_url(_backend_ws_base(self.discovery), token))


# -- the sync layer: the same coroutines, run on one private loop ---------------------------
_sync_lock = threading.Lock()
_sync_loop: BackgroundLoop | None = None


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the sync layer's background loop and return its result."""
    global _sync_loop
    with _sync_lock:
        if _sync_loop is None:
            _sync_loop = BackgroundLoop(name="testenv-sync")
    return _sync_loop.run(coro)


class _SyncLayer:
    """A blocking twin of an async client: it holds one and runs its coroutine methods on the
    sync layer's loop (methods are added by :func:`_blocking_methods`)."""

    _async_cls: type[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._async = self._async_cls(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # plain attributes: base_url, url, connected
        return getattr(self._async, name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        closer = getattr(self._async, "aclose", None) or self._async.close
        run_sync(closer())

    def __repr__(self) -> str:
        return f"Sync{self._async!r}"


def _blocking_methods(async_cls: type[Any]) -> Callable[[type[T]], type[T]]:
    """Class decorator: give the sync twin a blocking method per public coroutine method of
    ``async_cls`` (as kr8s does for its sync objects)."""

    def decorate(cls: type[T]) -> type[T]:
        def blocking(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(method)
            def call(self: Any, *args: Any, **kwargs: Any) -> Any:
                return run_sync(getattr(self._async, name)(*args, **kwargs))

            return call

        for name, member in inspect.getmembers(async_cls, inspect.iscoroutinefunction):
            if not name.startswith("_") and name not in cls.__dict__:
                setattr(cls, name, blocking(name, member))
        cls._async_cls = async_cls  # type: ignore[attr-defined]
        return cls

    return decorate


@_blocking_methods(AuthTestClient)
class SyncAuthTestClient(_SyncLayer):
    """Blocking :class:`AuthTestClient`: ``register``, ``login``, ``health``, ``close``."""


@_blocking_methods(BackendTestClient)
class SyncBackendTestClient(_SyncLayer):
    """Blocking :class:`BackendTestClient`: ``me``, ``health``, ``close``."""


@_blocking_methods(WebSocketTestClient)
class SyncWebSocketTestClient(_SyncLayer):
    """Blocking :class:`WebSocketTestClient`: ``connect``, ``send``, ``send_chat``,
    ``receive``, ``receive_until``, ``close``; ``with`` connects and closes."""

    def connect(self) -> Self:
        run_sync(self._async.connect())
        return self

    def __enter__(self) -> Self:
        return self.connect()
