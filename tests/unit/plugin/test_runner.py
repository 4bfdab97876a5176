"""``testenv-test``: the plan's test_runner.py command line."""

from __future__ import annotations

import pytest

from testenv_pytest.runner import main, pytest_args


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--level", "integration", "--real-services"],
            ["-m", "integration", "--testenv-mode=real"],
        ),
        (["--level", "unit"], ["-m", "not integration and not e2e"]),
        (["--local", "--", "-x", "tests/api"], ["--testenv-mode=local", "-x", "tests/api"]),
        (["--level", "e2e", "-n", "2"], ["-m", "e2e", "-n", "2"]),
    ],
)
def test_levels_map_to_markers(argv: list[str], expected: list[str]) -> None:
    assert pytest_args(argv) == expected


def test_real_and_local_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        pytest_args(["--real-services", "--local"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_runs_pytest_with_the_level(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    integration: x\n    e2e: y\n")
    pytester.makepyfile(
        test_levels="""
        import pytest

        def test_unit(): pass

        @pytest.mark.integration
        def test_integration(): pass
        """
    )
    assert main(["--level", "unit", "--", "-p", "no:cacheprovider", str(pytester.path)]) == 0
    assert main(["--level", "integration", "--", "-p", "no:cacheprovider", str(pytester.path)]) == 0
    assert main(["--level", "e2e", "--", "-p", "no:cacheprovider", str(pytester.path)]) == 5
