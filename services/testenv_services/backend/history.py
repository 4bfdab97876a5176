"""Chat history per user: Redis (``BACKEND_REDIS_URL``), or memory without it (local mode,
unit tests). The last ``KEEP`` messages of each user are kept."""

from __future__ import annotations

from collections import defaultdict
from typing import Final, Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

KEEP: Final = 100


class HistoryUnavailable(Exception):
    """Redis cannot be reached."""


class ChatHistory(Protocol):
    async def append(self, user: str, text: str) -> int:
        """Store a message; the number of messages the user has sent (at most KEEP)."""

    async def recent(self, user: str, limit: int) -> list[str]: ...
    async def check(self) -> None: ...
    async def close(self) -> None: ...


class MemoryHistory:
    def __init__(self) -> None:
        self._messages: dict[str, list[str]] = defaultdict(list)

    async def append(self, user: str, text: str) -> int:
        messages = self._messages[user]
        messages.append(text)
        del messages[:-KEEP]
        return len(messages)

    async def recent(self, user: str, limit: int) -> list[str]:
        return self._messages[user][-limit:]

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisHistory:
    """A Redis list ``chat:<user>`` per user."""

    def __init__(self, url: str) -> None:
        self.client = redis.from_url(url, decode_responses=True, socket_timeout=5)

    async def append(self, user: str, text: str) -> int:
        key = f"chat:{user}"
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, text)
                pipe.ltrim(key, -KEEP, -1)
                pipe.llen(key)
                _, _, length = await pipe.execute()
        except RedisError as exc:
            raise HistoryUnavailable(str(exc)) from exc
        return int(length)

    async def recent(self, user: str, limit: int) -> list[str]:
        try:
            values = await self.client.lrange(f"chat:{user}", -limit, -1)
            return [v if isinstance(v, str) else v.decode() for v in values]
        except RedisError as exc:
            raise HistoryUnavailable(str(exc)) from exc

    async def check(self) -> None:
        try:
            await self.client.ping()
        except RedisError as exc:
            raise HistoryUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self.client.aclose()


def make_history(url: str | None) -> ChatHistory:
    return RedisHistory(url) if url else MemoryHistory()
