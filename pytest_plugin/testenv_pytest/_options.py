"""The plugin's options: one "testenv" group of command-line flags and ini keys.

Values are resolved by :class:`testenv.LauncherConfig` (pydantic-settings), which also reads the
``TESTENV_*`` variables and the plan's ``USE_REAL_SERVICES`` / ``TEST_ISOLATION`` /
``DYNAMIC_PORTS``: command line > environment > ini > default. This module imports nothing
heavy: a session that sets no testenv option and uses no testenv fixture never loads the
library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

if TYPE_CHECKING:
    from testenv import LauncherConfig


@dataclass(frozen=True)
class _Opt:
    name: str  # the flag's and ini key's name, e.g. "kubeconfig"
    help: str
    kind: Literal["str", "bool"] = "str"
    choices: tuple[str, ...] = ()
    field: str = ""  # the LauncherConfig field, when it is not ``name``

    @property
    def flag(self) -> str:
        return f"--testenv-{self.name.replace('_', '-')}"

    @property
    def ini(self) -> str:
        return f"testenv_{self.name}"

    @property
    def env(self) -> str:
        return f"TESTENV_{self.name.upper()}"

    @property
    def dest(self) -> str:
        return f"testenv_{self.name}"

    @property
    def setting(self) -> str:
        return self.field or self.name


OPTIONS: tuple[_Opt, ...] = (
    _Opt(
        "mode",
        "real: a TestEnvironment in Kubernetes; local: the services as local processes "
        "(default: real)",
        choices=("real", "local"),
    ),
    _Opt("kubeconfig", "kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"),
    _Opt("context", "kubeconfig context (default: the current context)"),
    _Opt(
        "spec",
        "YAML file with a TestEnvironment (or just its spec); default: the reference services",
    ),
    _Opt(
        "reuse",
        "reuse a Ready environment with the same spec (label testenv.dev/spec-hash) "
        "and keep it after the session",
        "bool",
    ),
    _Opt("keep", "keep the environment after the session and print how to reach it", "bool"),
    _Opt(
        "name",
        "the environment's name (default: generated); an existing environment of that name "
        "is used as it is and kept, e.g. the one of a pull request",
    ),
    _Opt(
        "pool",
        "auto: claim a Ready environment of a warm pool (TestEnvironmentPool) with the same "
        "spec when there is one; off: always create one (default: auto)",
        choices=("auto", "off"),
    ),
    _Opt(
        "wait_deleted",
        "at teardown, wait until the namespace is gone (default: the deletion is confirmed, "
        "the garbage collector finishes it without keeping the session waiting)",
        "bool",
    ),
    _Opt(
        "timeout",
        "seconds to wait for the environment to become Ready (default: 300)",
        field="startup_timeout",
    ),
    _Opt("report", "write a JSON report (startup timings, ports, health checks, results)"),
    _Opt(
        "xdist",
        "with pytest-xdist: one environment per worker, or one shared by all workers "
        "(default: shared)",
        choices=("per-worker", "shared"),
    ),
    _Opt("lease", "lease of environments this session deletes itself (default: 2m)"),
    _Opt(
        "local_package",
        "local mode: run `python -m <package>.<service>` (default: testenv_services)",
    ),
)
PLAN_VARIABLES = ("USE_REAL_SERVICES", "TEST_ISOLATION", "DYNAMIC_PORTS")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("testenv", "testenv: ephemeral test environments")
    for opt in OPTIONS:
        help_text = f"{opt.help} [env {opt.env}, ini {opt.ini}]"
        if opt.kind == "bool":
            group.addoption(
                opt.flag, action="store_true", default=None, dest=opt.dest, help=help_text
            )
            parser.addini(opt.ini, help_text, type="bool", default=None)
        else:
            group.addoption(
                opt.flag,
                action="store",
                default=None,
                dest=opt.dest,
                choices=opt.choices or None,
                help=help_text,
            )
            parser.addini(opt.ini, help_text, default=None)
    group.addoption(
        "--real-services",
        action="store_true",
        default=False,
        dest="testenv_real_services",
        help="shorthand for --testenv-mode=real (the plan's flag)",
    )


def _cli_values(config: pytest.Config) -> dict[str, Any]:
    values = {}
    for opt in OPTIONS:
        value = config.getoption(opt.dest, default=None)
        if value is not None:
            values[opt.setting] = value
    if "mode" not in values and config.getoption("testenv_real_services", default=False):
        values["mode"] = "real"
    return values


def _ini_values(config: pytest.Config) -> dict[str, Any]:
    values = {}
    for opt in OPTIONS:
        value = config.getini(opt.ini)
        if value not in (None, "", []):
            values[opt.setting] = value
    return values


def configured(config: pytest.Config, environ: dict[str, str] | None = None) -> bool:
    """Whether anything sets a testenv option (cheap: no library import)."""
    env = os.environ if environ is None else environ
    return bool(
        _cli_values(config)
        or _ini_values(config)
        or any(k.startswith("TESTENV_") for k in env)
        or any(env.get(k, "").strip() for k in PLAN_VARIABLES)
    )


def resolve(config: pytest.Config) -> tuple[LauncherConfig, dict[str, str]]:
    """The effective settings and where each came from ("cli", "env:NAME", "ini",
    "default"). Invalid values are a usage error that names the setting."""
    import testenv

    cli, ini = _cli_values(config), _ini_values(config)
    env = dict(os.environ)
    try:
        testenv.set_front_end_values(cli, ini)
        settings = testenv.LauncherConfig.build()
    except testenv.ConfigurationError as exc:
        raise pytest.UsageError(str(exc)) from None
    base = Path(config.invocation_params.dir)
    paths = {
        key: base / path
        for key in ("spec", "report")
        if (path := getattr(settings, key)) is not None and not path.is_absolute()
    }
    if paths:
        settings = settings.model_copy(update=paths)
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        key = opt.setting
        if opt.dest and config.getoption(opt.dest, default=None) is not None:
            sources[key] = "cli"
        elif key == "mode" and "mode" in cli:
            sources[key] = "cli:--real-services"
        elif env.get(f"TESTENV_{key.upper()}", "").strip():
            sources[key] = f"env:TESTENV_{key.upper()}"
        elif env.get(opt.env, "").strip():
            sources[key] = f"env:{opt.env}"
        elif key == "mode" and env.get("USE_REAL_SERVICES", "").strip():
            sources[key] = "env:USE_REAL_SERVICES"
        elif key == "xdist" and settings.xdist == "per-worker" and env.get("TEST_ISOLATION"):
            sources[key] = "env:TEST_ISOLATION"
        elif key in ini:
            sources[key] = "ini"
        else:
            sources[key] = "default"
    return settings, sources


def header(settings: LauncherConfig, sources: dict[str, str]) -> str:
    """One line: every option's effective value and its source."""
    parts = []
    for opt in OPTIONS:
        value = getattr(settings, opt.setting)
        if value is None:
            continue
        if opt.kind == "bool":
            value = "yes" if value else "no"
        elif opt.setting == "startup_timeout":
            value = f"{value:g}s"
        parts.append(f"{opt.name}={value} [{sources.get(opt.setting, 'default')}]")
    return "testenv: " + ", ".join(parts)
