"""The auth service: registration, login, token verification, configuration."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
from fastapi import FastAPI

from testenv_services._common import ConfigError
from testenv_services.auth import AuthSettings
from testenv_services.auth.security import TokenService

from .conftest import SECRET, SEED_EMAIL, SEED_PASSWORD


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/login", json={"email": email, "password": password})


async def _verify(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/verify", headers={"Authorization": f"Bearer {token}"})


async def test_health(auth_client: httpx.AsyncClient) -> None:
    resp = await auth_client.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


async def test_register_login_verify(auth_client: httpx.AsyncClient) -> None:
    resp = await auth_client.post(
        "/register", json={"email": "alice@example.com", "password": "secure123"}
    )
    assert resp.status_code == 201, resp.text
    user = resp.json()
    assert user["email"] == "alice@example.com"
    assert user["id"]

    resp = await _login(auth_client, "alice@example.com", "secure123")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 600

    resp = await _verify(auth_client, body["access_token"])
    assert resp.status_code == 200
    assert resp.json()["sub"] == user["id"]
    assert resp.json()["email"] == "alice@example.com"


async def test_seeded_user_can_log_in(auth_client: httpx.AsyncClient) -> None:
    resp = await _login(auth_client, SEED_EMAIL, SEED_PASSWORD)
    assert resp.status_code == 200
    claims = jwt.decode(resp.json()["access_token"], options={"verify_signature": False})
    assert claims["email"] == SEED_EMAIL
    assert claims["exp"] - claims["iat"] == 600


async def test_email_is_case_insensitive(auth_client: httpx.AsyncClient) -> None:
    assert (await _login(auth_client, "Test@Example.COM", SEED_PASSWORD)).status_code == 200


async def test_duplicate_email_conflicts(auth_client: httpx.AsyncClient) -> None:
    resp = await auth_client.post(
        "/register", json={"email": "TEST@example.com", "password": "whatever1"}
    )
    assert resp.status_code == 409
    assert "already registered" in resp.json()["detail"]


@pytest.mark.parametrize("password", ["password", "secure123"])
async def test_eight_character_passwords_are_accepted(
    auth_client: httpx.AsyncClient, password: str
) -> None:
    resp = await auth_client.post(
        "/register", json={"email": "b@example.com", "password": password}
    )
    assert resp.status_code == 201, resp.text


async def test_weak_password_is_refused_clearly(auth_client: httpx.AsyncClient) -> None:
    resp = await auth_client.post("/register", json={"email": "c@example.com", "password": "short"})
    assert resp.status_code == 422
    body = resp.json()
    assert body["error"] == "password: password must be at least 8 characters"
    assert body["detail"][0]["loc"] == ["body", "password"]
    assert "short" not in resp.text  # the submitted password is not echoed


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "@example.com", ""])
async def test_malformed_email_is_refused(auth_client: httpx.AsyncClient, email: str) -> None:
    resp = await auth_client.post("/register", json={"email": email, "password": "secure123"})
    assert resp.status_code == 422
    assert resp.json()["error"].startswith("email: invalid email address")


async def test_missing_fields_are_refused(auth_client: httpx.AsyncClient) -> None:
    resp = await auth_client.post("/register", json={"email": "d@example.com"})
    assert resp.status_code == 422
    assert "password" in resp.json()["error"]


@pytest.mark.parametrize(
    ("email", "password"),
    [(SEED_EMAIL, "wrong-password"), ("nobody@example.com", SEED_PASSWORD), ("junk", "x")],
)
async def test_wrong_credentials_are_unauthorized(
    auth_client: httpx.AsyncClient, email: str, password: str
) -> None:
    resp = await _login(auth_client, email, password)
    assert resp.status_code == 401
    assert resp.json() == {"detail": "invalid email or password"}
    assert resp.headers["www-authenticate"] == "Bearer"


async def test_expired_token_is_refused(auth_client: httpx.AsyncClient, auth_app: FastAPI) -> None:
    tokens: TokenService = auth_app.state.tokens
    expired = tokens.issue("someone", SEED_EMAIL, now=time.time() - 3600)
    resp = await _verify(auth_client, expired)
    assert resp.status_code == 401
    assert "expired" in resp.json()["detail"]


async def test_forged_tokens_are_refused(auth_client: httpx.AsyncClient) -> None:
    other_key = TokenService("another-secret-0123456789abcdef", 600, "testenv-auth")
    forged = other_key.issue("someone", SEED_EMAIL)
    unsigned = jwt.encode(
        {"sub": "x", "email": SEED_EMAIL, "iss": "testenv-auth", "iat": 1, "exp": 2**33},
        key="",
        algorithm="none",
    )
    raw_secret = jwt.encode(
        {"sub": "x", "email": SEED_EMAIL, "iss": "testenv-auth", "iat": 1, "exp": 2**33},
        key=SECRET,
        algorithm="HS256",
    )  # signed with the secret itself rather than the derived key
    for token in (forged, unsigned, raw_secret, "not.a.jwt", "garbage"):
        assert (await _verify(auth_client, token)).status_code == 401, token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz"])
async def test_verify_needs_a_bearer_token(
    auth_client: httpx.AsyncClient, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    resp = await auth_client.get("/verify", headers=headers)
    assert resp.status_code == 401


def test_settings_need_a_key() -> None:
    with pytest.raises(
        ConfigError, match=r"TESTENV_SECRET_KEY is required.*AUTH_SIGNING_KEY.*secretKey: true"
    ):
        AuthSettings.from_env({})


def test_settings_from_env() -> None:
    env = {
        "AUTH_SIGNING_KEY": "dev-key",
        "AUTH_SEED_USERS": " Test@Example.com:password , ops@example.com:pa:ss:word ,",
        "AUTH_TOKEN_TTL_SECONDS": "60",
        "PORT": "9000",
    }
    settings = AuthSettings.from_env(env)
    assert settings.secret_key == "dev-key"
    assert settings.seed_users == (
        ("test@example.com", "password"),
        ("ops@example.com", "pa:ss:word"),
    )
    assert settings.token_ttl_seconds == 60
    assert settings.server.port == 9000
    assert settings.server.host == "0.0.0.0"
    assert "dev-key" not in repr(settings)
    assert "password" not in repr(settings)
    assert AuthSettings.from_env({**env, "TESTENV_SECRET_KEY": "k8s"}).secret_key == "k8s"


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ("test@example.com", "email:password"),
        ("test@example.com:", "email:password"),
        ("nope:password", "invalid email"),
        ("a@example.com:x,A@example.com:y", "listed twice"),
    ],
)
def test_bad_seed_users_are_refused(seed: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AuthSettings.from_env({"AUTH_SIGNING_KEY": "k", "AUTH_SEED_USERS": seed})
