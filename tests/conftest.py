"""Shared by every suite: the plan's code, as a user would paste it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import e2e_leaks
import pytest

TESTS = Path(__file__).resolve().parent

#: The xdist controller's view of the workers' leak-check snapshots (tests/e2e_leaks.py).
LEAK_SNAPSHOTS = pytest.StashKey[list[dict[str, Any]]]()


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


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: keep what a worker saw before its e2e tests (tests/e2e_leaks.py)."""
    snapshot = getattr(node, "workeroutput", {}).get(e2e_leaks.WORKER_OUTPUT_KEY)
    if snapshot is not None:
        node.config.stash.setdefault(LEAK_SNAPSHOTS, []).append(snapshot)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """xdist controller, once every worker is done: nothing the e2e tests created is left.
    What existed before is what every worker saw at its start."""
    snapshots = session.config.stash.get(LEAK_SNAPSHOTS, [])
    if not snapshots:
        return
    before = set.intersection(*(set(s["before"]) for s in snapshots))
    leaked = e2e_leaks.left_behind(snapshots[0]["kubectl"], before)
    if leaked:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "leak check", red=True)
            reporter.write_line(e2e_leaks.message(leaked))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
