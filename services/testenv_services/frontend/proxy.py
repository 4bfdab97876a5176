"""Relaying a browser WebSocket to the backend's, frames and close codes included."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, WebSocketException

#: Close codes that may not be sent in a close frame, and what the client gets instead.
_RESERVED_CODES = {1005: 1000, 1006: 1011, 1015: 1011}


class UpstreamClosed(Exception):
    """The upstream connection closed with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class UpstreamUnavailable(Exception):
    """The upstream WebSocket could not be opened."""


class Upstream(Protocol):
    """One open upstream WebSocket; ``recv`` raises UpstreamClosed when it ends."""

    async def send(self, data: str | bytes) -> None: ...

    async def recv(self) -> str | bytes: ...


Connector = Callable[[str], AbstractAsyncContextManager[Upstream]]


class _WebsocketsUpstream:
    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn

    @staticmethod
    def _closed(exc: ConnectionClosed) -> UpstreamClosed:
        return UpstreamClosed(exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else UpstreamClosed(1006)

    async def send(self, data: str | bytes) -> None:
        try:
            await self._conn.send(data)
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    async def recv(self) -> str | bytes:
        try:
            return await self._conn.recv()
        except ConnectionClosed as exc:
            raise self._closed(exc) from None


def websockets_connector(open_timeout: float = 10.0) -> Connector:
    """A Connector using the ``websockets`` client library."""

    @asynccontextmanager
    async def connect(url: str) -> AsyncIterator[Upstream]:
        try:
            conn = await ws_connect(url, open_timeout=open_timeout, max_size=1 << 20)
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise UpstreamUnavailable(f"{type(exc).__name__}: {exc}") from exc
        try:
            yield _WebsocketsUpstream(conn)
        finally:
            await conn.close()

    return connect


async def relay(client: WebSocket, upstream: Upstream) -> None:
    """Pump frames both ways until one side closes; mirror the backend's close to the client.

    ``client`` must be accepted already. Returns once the client is closed or gone.
    """
    upstream_close: UpstreamClosed | None = None
    client_gone = False

    async def client_to_upstream() -> None:
        nonlocal upstream_close, client_gone
        while True:
            frame = await client.receive()
            if frame["type"] == "websocket.disconnect":
                client_gone = True
                return
            data = frame.get("text")
            payload: str | bytes = data if data is not None else frame.get("bytes") or b""
            try:
                await upstream.send(payload)
            except UpstreamClosed as exc:
                upstream_close = exc
                return

    async def upstream_to_client() -> None:
        nonlocal upstream_close
        while True:
            try:
                data = await upstream.recv()
            except UpstreamClosed as exc:
                upstream_close = exc
                return
            if isinstance(data, str):
                await client.send_text(data)
            else:
                await client.send_bytes(data)

    tasks = {asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if client_gone:
        return
    code, reason = (
        (upstream_close.code, upstream_close.reason)
        if upstream_close
        else (1011, "backend connection lost")
    )
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):  # client already left
        await client.close(_RESERVED_CODES.get(code, code), reason)
