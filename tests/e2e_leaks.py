"""The e2e suites' leak check: once the tests are done, nothing they created is left
(TestEnvironments, pools, the namespaces the operator manages and so their pods and
ConfigMaps).

A plain run checks at the end of its session (the autouse fixture ``leak_check`` of
tests/e2e/conftest.py). Under xdist each worker only records what existed when it started, and
the controller checks once every worker is done (tests/conftest.py): while one worker finishes,
the others still create and delete their own objects.
"""

from __future__ import annotations

import subprocess

#: The key of a worker's ``workeroutput`` that carries its snapshot to the controller.
WORKER_OUTPUT_KEY = "testenv_leak_check"

LEAK_KINDS = (
    ("testenvironments.testenv.dev",),
    ("testenvironmentpools.testenv.dev",),
    ("namespaces", "-l", "app.kubernetes.io/managed-by=testenv-operator"),
)


def testenv_objects(kubectl: str) -> set[str]:
    """``kind/name`` of every TestEnvironment and TestEnvironmentPool, and of every namespace
    the operator manages."""
    found: set[str] = set()
    for args in LEAK_KINDS:
        out = subprocess.run(
            [kubectl, "get", *args, "-o", "jsonpath={.items[*].metadata.name}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0:
            found |= {f"{args[0]}/{name}" for name in out.stdout.split()}
    return found


def left_behind(kubectl: str, before: set[str]) -> list[str]:
    """What exists now and did not before, once deletion has had its time: deletion is
    asynchronous (finalizers, garbage collection), so this waits on the new objects with
    ``kubectl wait --for=delete`` first."""
    new = testenv_objects(kubectl) - before
    if new:
        subprocess.run(
            [kubectl, "wait", "--for=delete", "--timeout=180s", *sorted(new)],
            capture_output=True,
            check=False,
        )
    return sorted(testenv_objects(kubectl) - before)


def message(leaked: list[str]) -> str:
    return f"the e2e session left these behind: {', '.join(leaked)}"
