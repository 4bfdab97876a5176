"""The auth service's HTTP API: /register, /login, /verify, /health."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp

from testenv_services._common import VERSION, Env, ServerSettings, bearer_token, run_main
from testenv_services.auth.security import (
    InvalidToken,
    TokenService,
    hash_password,
    verify_password,
)
from testenv_services.auth.settings import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    AuthSettings,
    normalize_email,
)
from testenv_services.auth.store import (
    DuplicateEmail,
    MemoryUserStore,
    PostgresUserStore,
    StoreUnavailable,
    UserStore,
)

log = logging.getLogger("testenv.auth")

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


class RegisterRequest(BaseModel):
    email: Annotated[str, Field(max_length=320)]
    password: Annotated[str, Field(max_length=MAX_PASSWORD_LENGTH)]

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        try:
            return normalize_email(value)
        except ValueError as exc:
            raise ValueError(f"invalid email address: {exc}") from None

    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        if len(value) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
        return value


class LoginRequest(BaseModel):
    email: Annotated[str, Field(max_length=320)]
    password: Annotated[str, Field(max_length=MAX_PASSWORD_LENGTH)]


class UserOut(BaseModel):
    id: str
    email: str


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class IdentityOut(BaseModel):
    sub: str
    email: str
    exp: int


def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 body, minus the echoed input, plus a one-line ``error`` summary."""
    assert isinstance(exc, RequestValidationError)
    errors: list[dict[str, Any]] = []
    summary: list[str] = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        errors.append({"loc": err.get("loc"), "msg": msg, "type": err.get("type")})
        summary.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    body = {"detail": jsonable_encoder(errors), "error": "; ".join(summary)}
    return JSONResponse(body, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def _store_error(_: Request, exc: Exception) -> JSONResponse:
    log.warning("user store unavailable", extra={"event": "store_unavailable", "error": str(exc)})
    return JSONResponse({"detail": "user store unavailable"}, status_code=503)


def make_store(settings: AuthSettings) -> UserStore:
    """PostgreSQL when ``AUTH_DATABASE_URL`` is set (its users are created by the seed job),
    else memory, seeded with ``AUTH_SEED_USERS`` at start."""
    if settings.database_url:
        return PostgresUserStore(settings.database_url)
    return MemoryUserStore()


def create_app(settings: AuthSettings, store: UserStore | None = None) -> FastAPI:
    """The auth app; in memory, seed users are hashed at start-up (ready once it serves)."""
    tokens = TokenService(settings.secret_key, settings.token_ttl_seconds, settings.issuer)
    users = store if store is not None else make_store(settings)
    if isinstance(users, MemoryUserStore):
        users.seed((email, hash_password(password)) for email, password in settings.seed_users)
    dummy_hash = hash_password("timing-equaliser")  # login of unknown users costs the same

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await users.open()
        where = "postgresql" if isinstance(users, PostgresUserStore) else "memory"
        log.info("auth ready", extra={"event": "ready", "store": where})
        yield
        await users.close()

    app = FastAPI(title="testenv auth", version=VERSION, lifespan=lifespan)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StoreUnavailable, _store_error)
    app.state.store = users
    app.state.tokens = tokens

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 once the signing key is loaded and the user store answers."""
        try:
            await users.check()
        except StoreUnavailable as exc:
            return JSONResponse(
                {"status": "unavailable", "store": str(exc)},
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return JSONResponse({"status": "ok"})

    @app.post("/register", status_code=status.HTTP_201_CREATED)
    async def register(body: RegisterRequest) -> UserOut:
        """Create an account: 409 if the email is taken, 422 for a weak password/bad email."""
        conflict = HTTPException(status.HTTP_409_CONFLICT, "email already registered")
        if await users.get(body.email) is not None:
            raise conflict
        password_hash = await run_in_threadpool(hash_password, body.password)
        try:
            user = await users.add(body.email, password_hash)
        except DuplicateEmail:
            raise conflict from None
        log.info("user registered", extra={"event": "register", "user_id": user.id})
        return UserOut(id=user.id, email=user.email)

    @app.post("/login")
    async def login(body: LoginRequest) -> TokenOut:
        """Exchange credentials for a bearer token; 401 on any mismatch."""
        try:
            email = normalize_email(body.email)
        except ValueError:
            email = body.email.strip().lower()
        user = await users.get(email)
        ok = await run_in_threadpool(
            verify_password, user.password_hash if user else dummy_hash, body.password
        )
        if user is None or not ok:
            log.info("login refused", extra={"event": "login_failed"})
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "invalid email or password", headers=_UNAUTHORIZED
            )
        log.info("login", extra={"event": "login", "user_id": user.id})
        return TokenOut(
            access_token=tokens.issue(user.id, user.email), expires_in=tokens.ttl_seconds
        )

    @app.get("/verify")
    async def verify(authorization: Annotated[str | None, Header()] = None) -> IdentityOut:
        """Who a bearer token belongs to; 401 if it is missing, forged or expired."""
        token = bearer_token(authorization)
        if token is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers=_UNAUTHORIZED
            )
        try:
            claims = tokens.verify(token)
        except InvalidToken as exc:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, f"invalid token: {exc}", headers=_UNAUTHORIZED
            ) from None
        return IdentityOut(sub=claims.sub, email=claims.email, exp=claims.exp)

    return app


def _build(env: Env) -> tuple[ASGIApp, ServerSettings]:
    settings = AuthSettings.from_env(env)
    if len(settings.secret_key) < 16:
        log.warning("signing secret is shorter than 16 characters", extra={"event": "weak_key"})
    return create_app(settings), settings.server


def main() -> int:
    """``python -m testenv_services.auth``: serve until SIGTERM; 2 on a configuration error."""
    return run_main("auth", _build)
