"""A lazily created httpx client, so apps can be built outside an event loop."""

from __future__ import annotations

import httpx


class LazyAsyncClient:
    """Creates its ``httpx.AsyncClient`` on first use; :meth:`aclose` on shutdown.

    ``transport`` lets tests route requests to an in-process ASGI app.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url, timeout=self._timeout, transport=self._transport
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
