"""The README's first quick-start command ends in ``hack/demo.py``: a real environment, its
status and every service's address, each probed through a port-forward."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]

DEMO = Path(__file__).resolve().parents[2] / "hack/demo.py"


def test_demo_prints_every_service_and_deletes_it() -> None:
    name = f"demo-{uuid.uuid4().hex[:6]}"
    try:
        up = subprocess.run(
            [sys.executable, str(DEMO), "--name", name],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        out = up.stdout + up.stderr
        assert f"{name} is Ready in namespace testenv-{name}" in out
        for service in ("auth", "backend", "frontend"):
            assert f"{service}" in out
        assert out.count("HTTP 200 through a port-forward") == 3, out
        assert out.count("TCP connection through a port-forward") == 2, out  # db, cache
        assert f"postgresql://app@db.testenv-{name}.svc.cluster.local:5432/app" in out
    finally:
        down = subprocess.run(
            [sys.executable, str(DEMO), "--name", name, "--delete"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert down.returncode == 0, down.stdout + down.stderr
    assert "gone in" in down.stdout + down.stderr
