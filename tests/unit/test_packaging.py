"""What installing the library or the plugin brings: not the operator's or the services'
dependencies (a fresh virtualenv from uv.lock, with the packages from the index). One
distribution holds every package; the operator and the services need their extras
(``testenv[operator]``, ``testenv[services]``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration  # a real install: tens of seconds


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        pytest.fail("uv is not installed: run `make venv` (it installs uv into .venv)")
    return found


def test_plugin_install_has_no_operator_or_service_dependencies(tmp_path: Path) -> None:
    uv, venv = _uv(), tmp_path / "venv"
    python = venv / "bin/python"
    constraints = tmp_path / "constraints.txt"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [
            *(uv, "export", "-q", "--project", str(ROOT), "--frozen", "--no-hashes"),
            *("--no-emit-project", "--extra", "pytest", "--no-dev", "-o", str(constraints)),
        ],
        check=True,
    )
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "-q",
            "--python",
            str(python),
            "-c",
            str(constraints),
            f"{ROOT}[pytest]",
        ],
        check=True,
    )
    probe = (
        "import importlib.util as u, testenv; "
        "testenv.DevLauncher; testenv.LauncherConfig(); "
        "print(' '.join(m for m in ('kopf', 'jinja2', 'fastapi', 'uvicorn', 'starlette',"
        " 'argon2') if u.find_spec(m)))"
    )
    present = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert present.stdout.strip() == "", f"installed with the plugin: {present.stdout}"
    help_text = subprocess.run(
        [str(python), "-m", "pytest", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert "--testenv-mode" in help_text  # the plugin registered itself


def test_lock_file_matches_the_metadata() -> None:
    """uv.lock holds exactly the versions of what pyproject.toml asks for (`uv lock`)."""
    done = subprocess.run(
        [_uv(), "lock", "--check", "--project", str(ROOT)], capture_output=True, text=True
    )
    assert done.returncode == 0, f"uv.lock is stale, run `uv lock`: {done.stderr}"
