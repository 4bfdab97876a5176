"""Shared by every suite: the plan's code, as a user would paste it."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _plan_tests() -> str:
    """The plan's Phase 3 tests as written (tests/e2e/test_plan_examples.py without its
    marker lines)."""
    return "\n".join(
        line
        for line in (TESTS / "e2e/test_plan_examples.py").read_text().splitlines()
        if not line.startswith(("import pytest", "pytestmark"))
    )


@pytest.fixture(scope="session")
def plan_tests() -> str:
    return _plan_tests()


@pytest.fixture(scope="session")
def plan_conftest() -> str:
    """The plan's Phase 1-2 fixtures with the one import line a user adds."""
    return (TESTS / "plan_conftest.py").read_text()
