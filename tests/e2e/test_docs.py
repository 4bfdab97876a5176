"""The docs cannot rot: every command in a ``bash`` block of the README and docs/, and every
``testenv`` command of the README's command table, runs against the real cluster here, or is
listed in ``NOT_RUN`` with the reason (a new command that is neither fails this test).

Placeholders are filled in (the example's environment name becomes a unique one, ``NAME`` and
``SERVICE`` a real environment and service); commands that run until interrupted
(``forward``, ``logs -f``) pass when they are still running after a few seconds.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e_helpers import Kubectl

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))
from tools import tool

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

#: Commands that are not run here, and why. Keys are the command as written.
NOT_RUN = {
    "make demo": "the main job: tests/e2e/test_demo.py runs hack/demo.py, its last step, and "
    "`make test` ran its other steps (images, install-operator) before this test",
    "make test": "the command that runs this test",
    "make install-operator": "ran by `make test` before this test (and by operator_installed)",
    "export KUBECONFIG=~/.kube/config": "points at a user's own cluster",
    "bash hack/images.sh context /tmp/testenv-ctx": "part of the kind recipe (below)",
}
#: Blocks that need what this machine does not have; the CI workflow runs their equivalent.
NOT_RUN_MARKERS = {
    "docker build": "needs Docker and kind: .github/workflows/ci.yml runs the same steps "
    "(hack/ci-kind-images.sh)",
}
#: Commands that keep running until interrupted.
LONG_RUNNING = re.compile(r"^testenv (forward|logs .*(-f|--follow))\b")


def bash_commands(path: Path) -> Iterator[tuple[str, str]]:
    """(command, the block it is in) of every ``bash`` block: continuation lines joined,
    comments dropped."""
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                yield command, block


def table_commands(path: Path) -> list[str]:
    """The ``testenv ...`` commands of the README's command table (first column)."""
    return [
        "testenv " + cell
        for cell in re.findall(r"^\s*\| `([a-z]+(?: [^`]*)?)` \|", path.read_text(), re.M)
        if cell.split()[0] in {"up", "ls", "status", "forward", "logs", "extend", "down", "gc"}
    ]


def test_every_documented_command_is_run_or_excused(k: Kubectl, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    # The example TestEnvironment the kubectl block applies (the yaml block right before it).
    found = re.search(
        r"```yaml\n(apiVersion: testenv.dev[^`]*?)```\s*```bash\nkubectl apply", readme
    )
    assert found, "the README's example TestEnvironment before `kubectl apply -f env.yaml`"
    example = yaml.safe_load(found[1])
    name = f"docs-{uuid.uuid4().hex[:6]}"
    documented = example["metadata"]["name"]
    example["metadata"]["name"] = name
    (tmp_path / "env.yaml").write_text(yaml.safe_dump(example))

    ran: list[str] = []
    unclassified: list[str] = []
    try:
        for doc in DOCS:
            for command, block in bash_commands(doc):
                if command in NOT_RUN or any(m in block for m in NOT_RUN_MARKERS):
                    continue
                if command.startswith(("kubectl ", "testenv ")):
                    run(command.replace(documented, name), tmp_path)
                    ran.append(command)
                else:
                    unclassified.append(f"{doc.name}: {command}")
        commands = table_commands(ROOT / "README.md")
        assert len(commands) == 8, commands
        for command in commands:
            filled = (
                command.replace("NAME", name)
                .replace("SERVICE", "auth")
                .replace("[", "")
                .replace("]", "")
            )
            run(filled, tmp_path)
            ran.append(command)
    finally:
        k("delete", "testenv", name, "--ignore-not-found", "--wait=false", check=False)
    assert not unclassified, f"commands neither run nor in NOT_RUN: {unclassified}"
    assert any(c.startswith("kubectl apply") for c in ran)


def run(command: str, cwd: Path) -> None:
    argv = shlex.split(command)
    if argv[0] == "testenv":
        argv = [sys.executable, "-m", "testenv_cli", *argv[1:]]
    if argv[0] == "kubectl":
        argv[0] = tool("kubectl") or "kubectl"
    if LONG_RUNNING.match(command):
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            _, err = proc.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.communicate(timeout=30)
            return  # still running: it started fine
        raise AssertionError(f"`{command}` ended early ({proc.returncode}): {err}")
    proc = subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{proc.stderr}"
