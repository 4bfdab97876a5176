"""Command-line options, ini keys and TESTENV_* variables, resolved CLI > env > ini > default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

Mode = Literal["real", "local"]
XdistMode = Literal["per-worker", "shared"]

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}


@dataclass(frozen=True)
class _Opt:
    name: str  # attribute name, e.g. "kubeconfig"
    help: str
    kind: Literal["str", "bool", "float", "choice"] = "str"
    default: Any = None
    choices: tuple[str, ...] = ()

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


OPTIONS: tuple[_Opt, ...] = (
    _Opt(
        "mode",
        "real: a TestEnvironment in Kubernetes; local: the services as local "
        "processes (default: real)",
        "choice",
        "real",
        ("real", "local"),
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
        False,
    ),
    _Opt("keep", "keep the environment after the session and print how to reach it", "bool", False),
    _Opt(
        "timeout",
        "seconds to wait for the environment to become Ready (default: 300)",
        "float",
        300.0,
    ),
    _Opt("report", "write a JSON report (startup timings, ports, health checks, results)"),
    _Opt(
        "xdist",
        "with pytest-xdist: one environment per worker, or one shared by all "
        "workers (default: shared)",
        "choice",
        "shared",
        ("per-worker", "shared"),
    ),
    _Opt("lease", "lease of environments this session deletes itself (default: 2m)", "str", "2m"),
    _Opt(
        "local_package",
        "local mode: run `python -m <package>.<service>` (default: testenv_services)",
        "str",
        "testenv_services",
    ),
)


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


@dataclass(frozen=True)
class Settings:
    mode: Mode = "real"
    kubeconfig: str | None = None
    context: str | None = None
    spec: Path | None = None
    reuse: bool = False
    keep: bool = False
    timeout: float = 300.0
    report: Path | None = None
    xdist: XdistMode = "shared"
    lease: str = "2m"
    local_package: str = "testenv_services"
    #: where each value came from: "cli", "env:NAME", "ini", "default"
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def header(self) -> list[str]:
        parts = []
        for opt in OPTIONS:
            value = getattr(self, opt.name)
            if value is None:
                continue
            if opt.kind == "bool":
                value = "yes" if value else "no"
            elif opt.kind == "float":
                value = f"{value:g}s"
            parts.append(f"{opt.name}={value} [{self.sources.get(opt.name, 'default')}]")
        return ["testenv: " + ", ".join(parts)]


def _convert(opt: _Opt, raw: Any, origin: str) -> Any:
    if opt.kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise pytest.UsageError(f"testenv: {origin}: {raw!r} is not a boolean (use 1/0)")
    if opt.kind == "float":
        try:
            value = float(raw)
        except ValueError:
            raise pytest.UsageError(
                f"testenv: {origin}: {raw!r} is not a number of seconds"
            ) from None
        if value <= 0:
            raise pytest.UsageError(f"testenv: {origin}: must be > 0")
        return value
    if opt.kind == "choice" and str(raw) not in opt.choices:
        raise pytest.UsageError(
            f"testenv: {origin}: {raw!r} is not one of {', '.join(opt.choices)}"
        )
    return str(raw)


def resolve(config: pytest.Config, environ: dict[str, str] | None = None) -> Settings:
    """Resolve every option: CLI > TESTENV_* (and the plan's variables) > ini > default."""
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        cli = config.getoption(opt.dest, default=None)
        if cli is not None:
            values[opt.name], sources[opt.name] = _convert(opt, cli, opt.flag), "cli"
            continue
        if opt.name == "mode" and config.getoption("testenv_real_services", default=False):
            values["mode"], sources["mode"] = "real", "cli:--real-services"
            continue
        if env.get(opt.env, "") != "":
            values[opt.name] = _convert(opt, env[opt.env], opt.env)
            sources[opt.name] = f"env:{opt.env}"
            continue
        plan = _plan_variable(opt.name, env)
        if plan is not None:
            values[opt.name], sources[opt.name] = plan
            continue
        ini = config.getini(opt.ini)
        if ini not in (None, "", []):
            values[opt.name], sources[opt.name] = _convert(opt, ini, opt.ini), "ini"
            continue
        values[opt.name], sources[opt.name] = opt.default, "default"
    for key in ("spec", "report"):
        if values[key] is not None:
            path = Path(values[key]).expanduser()
            values[key] = path if path.is_absolute() else Path(config.invocation_params.dir) / path
    return Settings(**values, sources=sources)


def _plan_variable(name: str, env: dict[str, str]) -> tuple[Any, str] | None:
    """The plan's CI variables: USE_REAL_SERVICES and TEST_ISOLATION (DYNAMIC_PORTS: ignored,
    ports are always dynamic)."""
    if name == "mode" and env.get("USE_REAL_SERVICES", "") != "":
        flag = env["USE_REAL_SERVICES"].strip().lower()
        if flag in _FALSE:
            return "local", "env:USE_REAL_SERVICES"
        if flag in _TRUE:
            return "real", "env:USE_REAL_SERVICES"
    if name == "xdist" and env.get("TEST_ISOLATION", "").strip().lower() in _TRUE - {""}:
        return "per-worker", "env:TEST_ISOLATION"
    return None
