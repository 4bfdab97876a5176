"""A WebSocket client that talks to an ASGI app directly (the frontend's upstream in tests)."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp

from testenv_services.frontend.proxy import UpstreamClosed, UpstreamUnavailable


class AsgiWebSocket:
    """Implements the frontend's ``Upstream`` protocol over ASGI messages."""

    def __init__(self, app: ASGIApp, url: str) -> None:
        parts = urlsplit(url)
        self.app = app
        self.url = url
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": parts.scheme,
            "path": parts.path,
            "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(),
            "root_path": "",
            "headers": [(b"host", (parts.netloc or "upstream").encode())],
            "client": ("127.0.0.1", 50000),
            "server": (parts.hostname or "upstream", parts.port or 80),
            "subprotocols": [],
            "state": {},
        }
        self._to_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.closed: UpstreamClosed | None = None

    async def _run(self) -> None:
        try:
            await self.app(self.scope, self._to_app.get, self._from_app.put)
        finally:
            if self.closed is None:
                await self._from_app.put({"type": "websocket.close", "code": 1006})

    async def connect(self) -> None:
        self._task = asyncio.create_task(self._run())
        await self._to_app.put({"type": "websocket.connect"})
        first = await self._from_app.get()
        if first["type"] != "websocket.accept":
            raise UpstreamUnavailable(f"handshake refused: {first}")

    async def send(self, data: str | bytes) -> None:
        if self.closed is not None or self._task is None or self._task.done():
            raise self.closed or UpstreamClosed(1006)
        key = "text" if isinstance(data, str) else "bytes"
        await self._to_app.put({"type": "websocket.receive", key: data})

    async def recv(self) -> str | bytes:
        message = await self._from_app.get()
        if message["type"] == "websocket.send":
            text = message.get("text")
            return text if text is not None else bytes(message.get("bytes") or b"")
        self.closed = UpstreamClosed(message.get("code", 1000), message.get("reason") or "")
        raise self.closed

    async def aclose(self) -> None:
        if self._task is None:
            return
        if not self._task.done():
            await self._to_app.put({"type": "websocket.disconnect", "code": 1000})
        # asyncio.wait neither cancels nor (unlike 3.11's wait_for) swallows a cancellation
        await asyncio.wait({self._task}, timeout=5)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
