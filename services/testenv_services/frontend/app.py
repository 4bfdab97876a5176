"""The frontend: the page, /health, and same-origin proxies (/api/login, /api/register, /ws)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request, WebSocket, status
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp

from testenv_services._common import VERSION, Env, ServerSettings, run_main
from testenv_services._http import LazyAsyncClient
from testenv_services.frontend.page import INDEX_HTML
from testenv_services.frontend.proxy import (
    Connector,
    UpstreamUnavailable,
    relay,
    websockets_connector,
)
from testenv_services.frontend.settings import FrontendSettings

log = logging.getLogger("testenv.frontend")

MAX_BODY = 64 * 1024


def create_app(
    settings: FrontendSettings,
    auth_transport: httpx.AsyncBaseTransport | None = None,
    backend_connector: Connector | None = None,
) -> FastAPI:
    """The frontend app; tests inject the auth transport and the backend WebSocket connector."""
    auth = LazyAsyncClient(settings.auth_url, settings.upstream_timeout, auth_transport)
    connect_backend = backend_connector or websockets_connector(settings.upstream_timeout)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.info(
            "frontend ready",
            extra={
                "event": "ready",
                "auth_url": settings.auth_url,
                "backend_url": settings.backend_url,
            },
        )
        yield
        await auth.aclose()

    app = FastAPI(title="testenv frontend", version=VERSION, lifespan=lifespan)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(INDEX_HTML, headers={"Cache-Control": "no-store"})

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def forward(request: Request, path: str) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"detail": "request body too large"}, status_code=413)
        try:
            upstream = await auth.client.post(
                path, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            log.warning("auth unavailable", extra={"event": "proxy_error", "error": repr(exc)})
            return JSONResponse(
                {"detail": "auth service unavailable"},
                status_code=status.HTTP_502_BAD_GATEWAY,
            )
        headers = {k: v for k, v in upstream.headers.items() if k.lower() == "www-authenticate"}
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type", "application/json"),
            headers=headers,
        )

    @app.post("/api/login")
    async def login(request: Request) -> Response:
        """Proxied to auth ``POST /login`` (status and body unchanged)."""
        return await forward(request, "/login")

    @app.post("/api/register")
    async def register(request: Request) -> Response:
        """Proxied to auth ``POST /register`` (status and body unchanged)."""
        return await forward(request, "/register")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        """Relayed to the backend's ``/ws`` with the same ``token``; close codes mirrored."""
        await websocket.accept()
        token = websocket.query_params.get("token", "")
        url = f"{settings.backend_ws_url}?{urlencode({'token': token})}"
        try:
            async with connect_backend(url) as upstream:
                await relay(websocket, upstream)
        except UpstreamUnavailable as exc:
            log.warning("backend unavailable", extra={"event": "proxy_error", "error": str(exc)})
            await websocket.close(status.WS_1011_INTERNAL_ERROR, "backend unavailable")

    return app


def _build(env: Env) -> tuple[ASGIApp, ServerSettings]:
    settings = FrontendSettings.from_env(env)
    return create_app(settings), settings.server


def main() -> int:
    """``python -m testenv_services.frontend``: serve until SIGTERM; 2 on a config error."""
    return run_main("frontend", _build)
