"""Helpers for the plugin's tests: pytester, and the packages importable in subprocesses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import testenv_operator
import testenv_pytest
import testenv_services


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


def _source_roots() -> list[str]:
    mods = (testenv_operator, testenv_pytest, testenv_services)
    return [str(Path(m.__file__ or "").resolve().parent.parent) for m in mods]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No TESTENV_*/plan variables leak in; inner pytest processes can import our packages."""
    for name in list(os.environ):
        if name.startswith("TESTENV_") or name in (
            "USE_REAL_SERVICES",
            "TEST_ISOLATION",
            "DYNAMIC_PORTS",
            "PYTEST_XDIST_WORKER",
            "PYTEST_ADDOPTS",
        ):
            monkeypatch.delenv(name, raising=False)
    paths = [*_source_roots(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(dict.fromkeys(paths)))
    yield
