from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from testenv_operator.settings import Settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], Settings]:
    """Settings made from exactly the given variables."""
    import os

    for name in list(os.environ):
        if name.startswith("TESTENV_"):
            monkeypatch.delenv(name)

    def make(values: dict[str, str]) -> Settings:
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        return Settings()

    return make


def test_defaults(env: Callable[[dict[str, str]], Settings]) -> None:
    s = env({})
    assert s.default_ttl == "1h"
    assert s.watch_server_timeout < s.watch_client_timeout


def test_from_env(env: Callable[[dict[str, str]], Settings]) -> None:
    s = env(
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
    "values",
    [
        {"TESTENV_DEFAULT_TTL": "10 minutes"},
        {"TESTENV_LOG_FORMAT": "xml"},
        {"TESTENV_DEFAULT_TTL": "0s"},
    ],
)
def test_bad_env(env: Callable[[dict[str, str]], Settings], values: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        env(values)
