"""An in-memory user store (the reference service keeps no state on disk)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password_hash: str = field(repr=False)


class DuplicateEmail(Exception):
    """An account with this email already exists."""


class UserStore:
    """Users by (normalized) email. Mutated only from the event loop, so no locking."""

    def __init__(self) -> None:
        self._users: dict[str, User] = {}

    def __len__(self) -> int:
        return len(self._users)

    def get(self, email: str) -> User | None:
        return self._users.get(email)

    def add(self, email: str, password_hash: str) -> User:
        if email in self._users:
            raise DuplicateEmail(email)
        user = User(id=uuid.uuid4().hex, email=email, password_hash=password_hash)
        self._users[email] = user
        return user
