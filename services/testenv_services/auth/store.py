"""Where auth keeps its users: PostgreSQL (``AUTH_DATABASE_URL``), or memory without it
(local mode, unit tests). The schema is created by ``python -m testenv_services.auth.db
migrate``, a job of the reference environment, never by the service itself."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id text PRIMARY KEY,
    email text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password_hash: str = field(repr=False)


class DuplicateEmail(Exception):
    """An account with this email already exists."""


class StoreUnavailable(Exception):
    """The database cannot be reached."""


class UserStore(Protocol):
    async def get(self, email: str) -> User | None: ...
    async def add(self, email: str, password_hash: str) -> User: ...
    async def count(self) -> int: ...
    async def check(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...


class MemoryUserStore:
    """Users by (normalized) email. Mutated only from the event loop, so no locking."""

    def __init__(self) -> None:
        self._users: dict[str, User] = {}

    def seed(self, users: Iterable[tuple[str, str]]) -> None:
        """Add ``(email, password_hash)`` pairs that are not there yet."""
        for email, password_hash in users:
            if email not in self._users:
                self._users[email] = User(uuid.uuid4().hex, email, password_hash)

    async def get(self, email: str) -> User | None:
        return self._users.get(email)

    async def add(self, email: str, password_hash: str) -> User:
        if email in self._users:
            raise DuplicateEmail(email)
        user = User(id=uuid.uuid4().hex, email=email, password_hash=password_hash)
        self._users[email] = user
        return user

    async def count(self) -> int:
        return len(self._users)

    async def check(self) -> None:
        return None

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None


class PostgresUserStore:
    """Users in the ``users`` table, through a small connection pool."""

    def __init__(self, dsn: str) -> None:
        self.pool = AsyncConnectionPool(
            dsn, min_size=1, max_size=4, open=False, timeout=10, name="auth"
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def get(self, email: str) -> User | None:
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT id, email, password_hash FROM users WHERE email = %s", (email,)
            )
            row = await cur.fetchone()
        return User(*row) if row else None

    async def add(self, email: str, password_hash: str) -> User:
        user = User(id=uuid.uuid4().hex, email=email, password_hash=password_hash)
        try:
            async with self._connection() as conn:
                await conn.execute(
                    "INSERT INTO users (id, email, password_hash) VALUES (%s, %s, %s)",
                    (user.id, user.email, user.password_hash),
                )
        except psycopg.errors.UniqueViolation:
            raise DuplicateEmail(email) from None
        return user

    async def count(self) -> int:
        async with self._connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM users")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def check(self) -> None:
        async with self._connection() as conn:
            await conn.execute("SELECT 1 FROM users LIMIT 1")

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; a database that cannot be reached is StoreUnavailable."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(str(exc)) from exc
