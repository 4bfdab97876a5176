"""Password hashing (argon2id) and access tokens (JWT, HS256)."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's argon2id baseline (19 MiB, 2 passes): cheap enough for a 256Mi container.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
ALGORITHM = "HS256"


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (CPU-bound: call it from a worker thread)."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (CPU-bound)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class InvalidToken(Exception):
    """The token is malformed, forged, expired or lacks a required claim."""


@dataclass(frozen=True)
class Claims:
    sub: str
    email: str
    exp: int


class TokenService:
    """Issues and verifies access tokens.

    The HS256 key is derived from the configured secret with HMAC-SHA256, so any secret
    length yields a full 32-byte key; the secret itself never signs anything.
    """

    def __init__(self, secret: str, ttl_seconds: int, issuer: str) -> None:
        self._key = hmac.new(secret.encode(), b"testenv-auth/jwt/v1", hashlib.sha256).digest()
        self.ttl_seconds = ttl_seconds
        self.issuer = issuer

    def issue(self, sub: str, email: str, *, now: float | None = None) -> str:
        """A signed token for ``sub`` that expires ``ttl_seconds`` after ``now``."""
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "sub": sub,
            "email": email,
            "iss": self.issuer,
            "iat": issued,
            "exp": issued + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str) -> Claims:
        """The claims of a valid token; InvalidToken otherwise."""
        try:
            data = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                options={"require": ["sub", "exp", "iat", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        email = data.get("email")
        if not isinstance(email, str):
            raise InvalidToken("token has no email claim")
        return Claims(sub=str(data["sub"]), email=email, exp=int(data["exp"]))
