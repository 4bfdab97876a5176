"""The backend's HTTP and WebSocket endpoints: /health, /api/me, /ws."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
from fastapi import FastAPI, Header, HTTPException, WebSocket, status
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp
from starlette.websockets import WebSocketDisconnect

from testenv_services._common import VERSION, Env, ServerSettings, bearer_token, run_main
from testenv_services.backend.authclient import AuthClient, AuthUnavailable, Identity
from testenv_services.backend.history import ChatHistory, HistoryUnavailable, make_history
from testenv_services.backend.protocol import Session, error
from testenv_services.backend.settings import BackendSettings

log = logging.getLogger("testenv.backend")

POLICY_VIOLATION = status.WS_1008_POLICY_VIOLATION
INTERNAL_ERROR = status.WS_1011_INTERNAL_ERROR


def create_app(
    settings: BackendSettings,
    auth_transport: httpx.AsyncBaseTransport | None = None,
    history: ChatHistory | None = None,
) -> FastAPI:
    """The backend app; ``auth_transport`` routes its auth calls (tests: an ASGITransport)."""
    auth = AuthClient(settings.auth_url, settings.auth_timeout, auth_transport)
    chats = history if history is not None else make_history(settings.redis_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        where = "redis" if settings.redis_url else "memory"
        log.info(
            "backend ready",
            extra={"event": "ready", "auth_url": settings.auth_url, "history": where},
        )
        yield
        await auth.aclose()
        await chats.close()

    app = FastAPI(title="testenv backend", version=VERSION, lifespan=lifespan)
    app.state.auth = auth

    async def identify(token: str | None) -> Identity:
        try:
            identity = await auth.verify(token or "")
        except AuthUnavailable as exc:
            log.warning("auth unavailable", extra={"event": "auth_unavailable", "error": str(exc)})
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "auth unavailable") from exc
        if identity is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return identity

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 only while auth's /health answers 200 and the chat history answers."""
        problem = await auth.health()
        try:
            await chats.check()
            history_state = "ok"
        except HistoryUnavailable as exc:
            history_state = str(exc)
        if problem is None and history_state == "ok":
            return JSONResponse({"status": "ok", "auth": "ok", "history": "ok"})
        return JSONResponse(
            {"status": "unavailable", "auth": problem or "ok", "history": history_state},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    @app.get("/api/messages")
    async def messages(
        authorization: Annotated[str | None, Header()] = None, limit: int = 20
    ) -> dict[str, list[str]]:
        """The caller's last chat messages (oldest first), kept in the chat history."""
        identity = await identify(bearer_token(authorization))
        try:
            recent = await chats.recent(identity.sub, max(1, min(limit, 100)))
        except HistoryUnavailable as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "history unavailable") from exc
        return {"messages": recent}

    @app.get("/api/me")
    async def me(authorization: Annotated[str | None, Header()] = None) -> dict[str, str]:
        """The caller's identity, as verified by auth."""
        identity = await identify(bearer_token(authorization))
        return {"sub": identity.sub, "email": identity.email}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        """Authenticate with ``?token=`` (or a Bearer header), then serve the protocol."""
        await websocket.accept()
        token = websocket.query_params.get("token") or bearer_token(
            websocket.headers.get("authorization")
        )
        if not token:
            await websocket.close(POLICY_VIOLATION, "missing token")
            return
        try:
            identity = await auth.verify(token)
        except AuthUnavailable as exc:
            log.warning("auth unavailable", extra={"event": "auth_unavailable", "error": str(exc)})
            await websocket.close(INTERNAL_ERROR, "auth service unavailable")
            return
        if identity is None:
            log.info("ws refused", extra={"event": "ws_refused"})
            await websocket.close(POLICY_VIOLATION, "invalid or expired token")
            return
        log.info("ws connected", extra={"event": "ws_connected", "user_id": identity.sub})
        await _serve(websocket, Session(identity), chats)
        log.info("ws closed", extra={"event": "ws_closed", "user_id": identity.sub})

    return app


async def _serve(websocket: WebSocket, session: Session, chats: ChatHistory) -> None:
    """Answer every frame until the client goes away; chat messages go to the history and
    their reply says how many the user has sent (``count``)."""
    try:
        while True:
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            text = frame.get("text")
            if text is None:
                await websocket.send_json(error("binary frames are not supported; send JSON text"))
                continue
            reply = session.handle(text)
            if reply.get("type") == "chat_response":
                try:
                    reply["count"] = await chats.append(session.identity.sub, reply["reply_to"])
                except HistoryUnavailable as exc:
                    log.warning(
                        "history unavailable", extra={"event": "history", "error": str(exc)}
                    )
            await websocket.send_json(reply)
    except WebSocketDisconnect:
        return


def _build(env: Env) -> tuple[ASGIApp, ServerSettings]:
    settings = BackendSettings.from_env(env)
    return create_app(settings), settings.server


def main() -> int:
    """``python -m testenv_services.backend``: serve until SIGTERM; 2 on a config error."""
    return run_main("backend", _build)
