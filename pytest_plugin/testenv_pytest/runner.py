"""``testenv-test``: the plan's ``python test_runner.py --level integration --real-services``.

::

    testenv-test --level integration --real-services     # the plan's CI line
    testenv-test --level unit                             # no services at all
    testenv-test --level all --local -- -x tests/api      # after --: pytest's own arguments

A level is a pytest marker (``-m LEVEL``); ``unit`` means "neither integration nor e2e" and
``all`` selects everything. ``--real-services`` / ``--local`` set the mode (as
``USE_REAL_SERVICES`` does); ``TEST_ISOLATION=1`` gives each xdist worker its own environment.
The exit code is pytest's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pytest

UNIT = "not integration and not e2e"


def marker_expression(level: str) -> str | None:
    """The ``-m`` expression of a level (None: every test)."""
    if level == "all":
        return None
    if level == "unit":
        return UNIT
    return level


def pytest_args(argv: Sequence[str]) -> list[str]:
    parser = argparse.ArgumentParser(
        prog="testenv-test", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--level", default="all", help="a marker (integration, e2e, ...), 'unit' or 'all'"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--real-services", action="store_true", help="a TestEnvironment in Kubernetes"
    )
    mode.add_argument("--local", action="store_true", help="the services as local processes")
    parser.add_argument(
        "-n", "--workers", help="run in parallel with pytest-xdist (a number or 'auto')"
    )
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (put them after --)")
    options = parser.parse_args(argv)
    args: list[str] = []
    expression = marker_expression(options.level)
    if expression is not None:
        args += ["-m", expression]
    if options.real_services:
        args.append("--testenv-mode=real")
    elif options.local:
        args.append("--testenv-mode=local")
    if options.workers:
        args += ["-n", options.workers]
    return args + list(options.pytest_args)


def main(argv: Sequence[str] | None = None) -> int:
    return int(pytest.main(pytest_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    raise SystemExit(main())
