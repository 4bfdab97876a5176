"""The backend's view of the auth service: token verification and health, over HTTP."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from testenv_services._http import LazyAsyncClient


@dataclass(frozen=True)
class Identity:
    """The authenticated user behind a token."""

    sub: str
    email: str


class AuthUnavailable(Exception):
    """The auth service could not be reached or answered with an error."""


class AuthClient:
    """Calls auth's ``/verify`` and ``/health``; ``transport`` is for in-process tests."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = LazyAsyncClient(base_url, timeout, transport)
        self.base_url = base_url

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http.client

    async def aclose(self) -> None:
        await self._http.aclose()

    async def verify(self, token: str) -> Identity | None:
        """The identity behind ``token``, None if auth refuses it."""
        if not token:
            return None
        try:
            resp = await self.http.get("/verify", headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise AuthUnavailable(f"auth unreachable: {exc!r}") from exc
        if resp.status_code in (401, 403):
            return None
        if resp.status_code != 200:
            raise AuthUnavailable(f"auth /verify answered {resp.status_code}")
        try:
            data = resp.json()
            return Identity(sub=str(data["sub"]), email=str(data["email"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthUnavailable(f"auth /verify answered unexpected body: {exc!r}") from exc

    async def health(self) -> str | None:
        """None if auth is healthy, else why not."""
        try:
            resp = await self.http.get("/health")
        except httpx.HTTPError as exc:
            return f"unreachable: {type(exc).__name__}"
        return None if resp.status_code == 200 else f"status {resp.status_code}"
