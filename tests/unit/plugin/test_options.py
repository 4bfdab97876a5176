"""Options: one "testenv" group; precedence CLI > TESTENV_* (and the plan's variables) > ini."""

from __future__ import annotations

import pytest


def header(pytester: pytest.Pytester, *args: str) -> str:
    result = pytester.runpytest("--co", "-p", "no:cacheprovider", "-p", "no:asyncio", *args)
    lines = [line for line in result.outlines if line.startswith("testenv: mode=")]
    assert len(lines) == 1, result.outlines
    return lines[0]


def test_help_lists_the_testenv_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help", "-p", "no:asyncio")
    out = result.stdout.str()
    assert "testenv: ephemeral test environments" in out
    for flag in (
        "--testenv-kubeconfig",
        "--testenv-context",
        "--testenv-spec",
        "--testenv-reuse",
        "--testenv-keep",
        "--testenv-wait-deleted",
        "--testenv-name",
        "--testenv-timeout",
        "--testenv-report",
        "--testenv-mode",
        "--testenv-xdist",
        "--real-services",
    ):
        assert flag in out
    assert "TESTENV_TIMEOUT" in out and "testenv_timeout" in out


def test_no_header_and_no_library_import_when_unconfigured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="import sys\n\ndef test_x():\n    assert 'testenv' not in sys.modules\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=1)
    assert not [line for line in result.outlines if line.startswith("testenv:")]


def test_defaults_in_report_header(pytester: pytest.Pytester) -> None:
    line = header(pytester, "--testenv-mode=real")
    assert "mode=real [cli]" in line
    assert "timeout=300s [default]" in line
    assert "xdist=shared [default]" in line
    assert "reuse=no [default]" in line


def test_precedence_cli_env_ini(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\ntestenv_timeout = 100\ntestenv_context = from-ini\n")
    assert "timeout=100s [ini]" in header(pytester)
    monkeypatch.setenv("TESTENV_TIMEOUT", "200")
    line = header(pytester)
    assert "timeout=200s [env:TESTENV_TIMEOUT]" in line
    assert "context=from-ini [ini]" in line
    assert "timeout=300s [cli]" in header(pytester, "--testenv-timeout=300")


def test_bool_options(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\ntestenv_keep = true\n")
    assert "keep=yes [ini]" in header(pytester)
    monkeypatch.setenv("TESTENV_KEEP", "0")
    assert "keep=no [env:TESTENV_KEEP]" in header(pytester)
    assert "keep=yes [cli]" in header(pytester, "--testenv-keep")


def test_plan_variables(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USE_REAL_SERVICES", "false")
    monkeypatch.setenv("DYNAMIC_PORTS", "true")  # the only value that can be honoured
    monkeypatch.setenv("TEST_ISOLATION", "1")
    line = header(pytester)
    assert "mode=local [env:USE_REAL_SERVICES]" in line
    assert "xdist=per-worker [env:TEST_ISOLATION]" in line
    assert "mode=real [cli:--real-services]" in header(pytester, "--real-services")
    monkeypatch.setenv("TESTENV_MODE", "real")
    assert "mode=real [env:TESTENV_MODE]" in header(pytester)
    assert "mode=local [cli]" in header(pytester, "--testenv-mode=local")


def test_paths_are_resolved(pytester: pytest.Pytester) -> None:
    line = header(pytester, "--testenv-report=out/r.json")
    assert f"report={pytester.path / 'out' / 'r.json'} [cli]" in line


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--testenv-timeout=soon"], {}, "setting startup_timeout: Input should be a valid number"),
        ([], {"TESTENV_MODE": "cloud"}, "setting mode: Input should be 'real' or 'local'"),
        ([], {"TESTENV_REUSE": "maybe"}, "setting reuse: Input should be a valid boolean"),
        ([], {"DYNAMIC_PORTS": "false"}, "DYNAMIC_PORTS=false cannot be honoured"),
        ([], {"USE_REAL_SERVICES": "perhaps"}, "USE_REAL_SERVICES='perhaps' is not a boolean"),
    ],
)
def test_invalid_values_are_usage_errors(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest("--co", "-p", "no:asyncio", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_mode_choice_on_cli(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--co", "-p", "no:asyncio", "--testenv-mode=cloud")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
