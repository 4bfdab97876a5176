"""The ``testenv`` command without a cluster: help, exit codes, output helpers, spec errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import kr8s
import pytest
from typer.testing import CliRunner

import testenv
from testenv_cli import ExitCode, app
from testenv_cli._exit import exit_code_for
from testenv_cli._output import age, span, until

runner = CliRunner()


def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "ls", "status", "forward", "logs", "extend", "down", "gc"):
        assert command in result.output
    assert "Exit codes: 0 ok, 1 the environment is Failed" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (testenv.EnvironmentFailedError("x"), ExitCode.FAILED),
        (testenv.ProvisioningTimeoutError("x"), ExitCode.TIMEOUT),
        (testenv.EnvironmentNotFoundError("x"), ExitCode.NOT_FOUND),
        (testenv.ClusterUnreachableError("x"), ExitCode.UNREACHABLE),
        (testenv.OperatorNotInstalledError("x"), ExitCode.NO_OPERATOR),
        (testenv.SpecError("x"), ExitCode.INVALID),
        (kr8s.ServerError("refused", response=None), ExitCode.UNREACHABLE),
    ],
)
def test_each_failure_has_its_exit_code(error: Exception, code: ExitCode) -> None:
    assert exit_code_for(error) == code


def test_codes_are_distinct() -> None:
    assert len({int(c) for c in ExitCode}) == len(ExitCode)


def test_a_bad_spec_file_is_one_line_and_exit_2_before_any_cluster(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  - name: Not_A_Name\n    port: 99999\n")
    result = runner.invoke(app, ["up", "-f", str(bad)])
    assert result.exit_code == ExitCode.INVALID
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("testenv: error: invalid spec in")
    assert "services.0.name" in lines[0] and "services.0.port" in lines[0]
    missing = runner.invoke(app, ["up", "-f", str(tmp_path / "none.yaml")])
    assert missing.exit_code == ExitCode.INVALID and "cannot read the spec file" in missing.output


def test_times_read_like_kubectl() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert [span(s) for s in (5, 119, 600, 7260, 3 * 86400 + 3600)] == [
        "5s",
        "119s",
        "10m",
        "2h1m",
        "3d1h",
    ]
    assert age("2026-01-01T11:50:00Z", now) == "10m"
    assert until((now + timedelta(minutes=42)).isoformat(), now) == "in 42m"
    assert until("2026-01-01T11:00:00Z", now) == "expired"
