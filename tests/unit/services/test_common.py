"""Shared plumbing: server settings and JSON logs."""

from __future__ import annotations

import json
import logging

import pytest

from testenv_services._common import ConfigError, JsonFormatter, ServerSettings, bearer_token


def _record(name: str, msg: str, args: object = (), **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]
    record.__dict__.update(extra)
    return record


def test_server_settings_defaults() -> None:
    assert ServerSettings.from_env({}) == ServerSettings("0.0.0.0", 8080, "INFO")
    assert ServerSettings.from_env({"PORT": "9", "LOG_LEVEL": "debug"}).log_level == "DEBUG"


@pytest.mark.parametrize(
    "env", [{"PORT": "x"}, {"PORT": "0"}, {"PORT": "70000"}, {"LOG_LEVEL": "loud"}]
)
def test_server_settings_refuse_nonsense(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        ServerSettings.from_env(env)


def test_json_log_line_carries_extras() -> None:
    line = JsonFormatter("auth").format(_record("testenv.auth", "user %s", ("x",), event="login"))
    payload = json.loads(line)
    assert payload["service"] == "auth"
    assert payload["message"] == "user x"
    assert payload["event"] == "login"
    assert payload["level"] == "info"
    assert payload["ts"].endswith("Z")


def test_json_log_redacts_tokens() -> None:
    fmt = JsonFormatter("backend")
    ws = fmt.format(
        _record(
            "uvicorn.error", '%s - "WebSocket %s" [accepted]', ("1.2.3.4:5", "/ws?token=eyJ.secret")
        )
    )
    assert "eyJ.secret" not in ws
    access = fmt.format(
        _record(
            "uvicorn.access",
            '%s - "%s %s HTTP/%s" %d',
            ("c", "GET", "/x?token=abc&y=1", "1.1", 200),
        )
    )
    payload = json.loads(access)
    assert payload["path"] == "/x?token=[redacted]&y=1"
    assert payload["status"] == 200


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
