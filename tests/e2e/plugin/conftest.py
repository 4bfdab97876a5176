"""E2E helpers for the plugin: pytester in subprocesses against the real cluster."""

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


@pytest.fixture(autouse=True)
def _inner_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inner pytest runs see KUBECONFIG but none of our own TESTENV_* settings."""
    for name in list(os.environ):
        if name.startswith("TESTENV_") or name in (
            "USE_REAL_SERVICES",
            "TEST_ISOLATION",
            "PYTEST_XDIST_WORKER",
            "PYTEST_ADDOPTS",
        ):
            monkeypatch.delenv(name, raising=False)
    roots = [
        str(Path(m.__file__ or "").resolve().parent.parent)
        for m in (testenv_operator, testenv_pytest, testenv_services)
    ]
    paths = [*roots, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(dict.fromkeys(paths)))
    yield
