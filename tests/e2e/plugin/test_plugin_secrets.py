"""Secrets stay secret, on the real cluster: a job that prints its database password and its
token, then fails. Its own pod log shows them (the leak was really attempted); nothing the
product copies out of the environment does: not the status, the ConfigMaps, the events, the
operator's log, the test session's output or its JSON report."""

from __future__ import annotations

import base64
import json
import re

import pytest
import yaml
from e2e_helpers import OPERATOR_NAMESPACE, OPERATOR_SELECTOR, Kubectl, status

from testenv.api import REFERENCE_IMAGE_TAG

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]

LEAKY = (
    "import os; print('connecting to', os.environ['DATABASE_URL'], flush=True); "
    "print('token=' + os.environ['TOKEN'], 'and again', os.environ['TOKEN'], flush=True); "
    "raise SystemExit('migration failed')"
)
SPEC = {
    "secrets": [{"name": "token", "length": 24}],
    "services": [{"name": "db", "preset": "postgres"}],
    "jobs": [
        {
            "name": "leaky",
            "image": f"testenv/auth:{REFERENCE_IMAGE_TAG}",
            "command": ["python3", "-c", LEAKY],
            "env": [
                {"name": "DATABASE_URL", "service": {"name": "db", "field": "dsn"}},
                {"name": "TOKEN", "secret": "token"},
            ],
            "dependsOn": ["db"],
            "retries": 0,
        }
    ],
}


def test_no_credential_appears_outside_its_secret(pytester: pytest.Pytester, k: Kubectl) -> None:
    spec = pytester.path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    pytester.makepyfile(test_x="def test_x(testenv):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        f"--testenv-spec={spec}",
        "--testenv-keep",
        "--testenv-report=report.json",
        timeout=600,
    )
    result.assert_outcomes(errors=1)
    out = result.stdout.str() + result.stderr.str()
    created = re.search(r"created TestEnvironment (\S+)", out)
    assert created, out
    name = created.group(1)
    try:
        st = status(k, name)
        ns = st["namespace"]
        raw = k("get", "secret", "testenv-credentials", "-n", ns, "-o", "json").stdout
        secret = json.loads(raw)
        values = {key: base64.b64decode(v).decode() for key, v in secret["data"].items()}
        assert set(values) == {"token", "db-password"}

        pod_log = k("logs", "-n", ns, "job/leaky").stdout
        assert values["db-password"] in pod_log and values["token"] in pod_log  # it did leak

        assert st["phase"] == "Failed" and "migration failed" in st["message"]
        assert "postgresql://app:***@" in st["message"]  # the evidence is kept, redacted
        copies = {
            "status": json.dumps(st),
            "configmaps": k("get", "configmaps", "-n", ns, "-o", "json").stdout,
            "events": k("get", "events", "-A", "-o", "json").stdout,
            "operator log": k(
                "logs", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR, "--tail=-1"
            ).stdout,
            "session output": out,
            "report": (pytester.path / "report.json").read_text(),
        }
        for where, text in copies.items():
            for key, value in values.items():
                assert value not in text, f"{key} appears in the {where}"
    finally:
        k("delete", "testenv", name, "--wait=false", check=False)
