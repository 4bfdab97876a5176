"""The WebSocket message protocol: one JSON reply for every client message (see docs)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from testenv_services.backend.authclient import Identity

MAX_TEXT: Final = 4096


@dataclass(frozen=True)
class Step:
    title: str
    description: str


ONBOARDING: Final = (
    Step("Welcome", "Welcome to the testenv demo app."),
    Step("Your profile", "Tell us how you would like to be addressed."),
    Step("Say hello", "Send your first chat message."),
)


def error(message: str, msg_id: Any = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"type": "error", "error": message}
    if msg_id is not None:
        reply["id"] = msg_id
    return reply


class Session:
    """The state of one authenticated connection; :meth:`handle` never raises."""

    def __init__(self, identity: Identity, steps: tuple[Step, ...] = ONBOARDING) -> None:
        self.identity = identity
        self.steps = steps
        self.step = 0  # 0: onboarding not started; 1..N: showing step n

    def handle(self, raw: str) -> dict[str, Any]:
        """The reply to one text frame."""
        try:
            message = json.loads(raw)
        except ValueError as exc:
            return error(f"invalid JSON: {exc}")
        if not isinstance(message, dict):
            return error("a message must be a JSON object with a 'type'")
        msg_id = message.get("id")
        kind = message.get("type")
        handler = {
            "chat": self._chat,
            "onboarding_start": self._onboarding_start,
            "onboarding_next": self._onboarding_next,
            "ping": self._ping,
        }.get(kind if isinstance(kind, str) else "")
        if handler is None:
            return error(f"unknown message type {kind!r}", msg_id)
        reply = handler(message)
        if msg_id is not None:
            reply["id"] = msg_id
        return reply

    def _chat(self, message: dict[str, Any]) -> dict[str, Any]:
        text = message.get("text", message.get("message"))
        if not isinstance(text, str) or not text.strip():
            return error("chat needs a non-empty string 'text'")
        if len(text) > MAX_TEXT:
            return error(f"chat text is longer than {MAX_TEXT} characters")
        return {"type": "chat_response", "text": f"Echo: {text}", "reply_to": text}

    def _ping(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"type": "pong", "user": self.identity.email}

    def _onboarding_start(self, _: dict[str, Any]) -> dict[str, Any]:
        self.step = 1
        return self._current_step()

    def _onboarding_next(self, _: dict[str, Any]) -> dict[str, Any]:
        if self.step == 0:
            return error("onboarding has not started: send onboarding_start first")
        if self.step >= len(self.steps):
            self.step = 0
            return {"type": "onboarding_complete", "total": len(self.steps)}
        self.step += 1
        return self._current_step()

    def _current_step(self) -> dict[str, Any]:
        step = self.steps[self.step - 1]
        return {
            "type": "onboarding_step",
            "step": self.step,
            "total": len(self.steps),
            "title": step.title,
            "description": step.description,
        }
