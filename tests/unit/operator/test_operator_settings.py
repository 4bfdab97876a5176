from __future__ import annotations

import pytest
from pydantic import ValidationError

from testenv_operator.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.default_ttl == "1h"
    assert s.watch_server_timeout < s.watch_client_timeout


def test_from_env() -> None:
    s = Settings.from_env(
        {
            "TESTENV_DEFAULT_TTL": "15m",
            "TESTENV_LOG_FORMAT": "json",
            "TESTENV_LOG_LEVEL": "debug",
            "TESTENV_WATCH_SERVER_TIMEOUT": "60",
            "UNRELATED": "x",
        }
    )
    assert (s.default_ttl, s.log_format, s.log_level, s.watch_server_timeout) == (
        "15m",
        "json",
        "DEBUG",
        60,
    )


@pytest.mark.parametrize(
    "env",
    [
        {"TESTENV_DEFAULT_TTL": "10 minutes"},
        {"TESTENV_LOG_FORMAT": "xml"},
        {"TESTENV_DEFAULT_TTL": "0s"},
    ],
)
def test_bad_env(env: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings.from_env(env)
