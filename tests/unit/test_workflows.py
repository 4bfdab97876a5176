"""Every GitHub workflow and action file lints clean with actionlint (the project's pinned
build: `bash hack/build-binaries.sh actionlint`, run by `make test`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
from tools import tool  # noqa: E402

WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml")) + sorted(
    (ROOT / "examples/ci").glob("*.yml")
)
ACTIONS = sorted((ROOT / ".github/actions").glob("*/action.yml"))


def actionlint() -> str:
    path = tool("actionlint")
    if path is None:
        pytest.fail("no actionlint: run `bash hack/build-binaries.sh actionlint` (make test does)")
    return path


def test_there_are_workflows_and_actions() -> None:
    assert {p.parent.name for p in ACTIONS} == {"up", "down"}
    assert any(p.parent.name == "ci" for p in WORKFLOWS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[str(p.relative_to(ROOT)) for p in WORKFLOWS])
def test_workflow_lints_clean(path: Path) -> None:
    # Run from the repository root: local actions (./.github/actions/*) are checked too.
    proc = subprocess.run(
        [actionlint(), "-no-color", str(path.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", ACTIONS, ids=[p.parent.name for p in ACTIONS])
def test_action_is_a_composite_with_described_inputs(path: Path) -> None:
    action = yaml.safe_load(path.read_text())
    assert action["runs"]["using"] == "composite"
    assert all(spec.get("description") for spec in action.get("inputs", {}).values())
    assert all(step.get("shell") for step in action["runs"]["steps"] if "run" in step)
