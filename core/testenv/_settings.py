"""``LauncherConfig``: every setting of a launch, from code, the command line, ``TESTENV_*``
variables, the plan's CI variables and pytest's ini file (pydantic-settings).

Precedence, highest first: command-line values a front end (the pytest plugin, the CLI) passes
as overrides > keyword arguments in code > ``TESTENV_*`` variables > the plan's variables
(``USE_REAL_SERVICES``, ``TEST_ISOLATION``, ``DYNAMIC_PORTS``) > ini values > defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ._errors import ConfigurationError
from .api import Duration

Mode = Literal["real", "local"]
XdistMode = Literal["per-worker", "shared"]
PoolMode = Literal["auto", "off"]
#: Who creates the environments of warm pools: the operator's service account as the chart
#: names it (``pool_identity``, ``TESTENV_POOL_IDENTITY``, for another release).
DEFAULT_POOL_IDENTITY = "system:serviceaccount:testenv-system:testenv-operator"

_TRUE = frozenset({"1", "true", "yes", "on", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "n"})


def _flag(value: str) -> bool | None:
    text = value.strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


class _DictSource(PydanticBaseSettingsSource):
    """A fixed mapping of values (command-line overrides, ini values, the plan's variables)."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self.values = dict(values)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if v is not None}


def plan_variables(environ: Mapping[str, str]) -> dict[str, Any]:
    """The plan's CI variables (and ``TESTENV_TIMEOUT``), as settings."""
    values: dict[str, Any] = {}
    if environ.get("TESTENV_TIMEOUT", "").strip():
        values["startup_timeout"] = environ["TESTENV_TIMEOUT"]
    use_real = environ.get("USE_REAL_SERVICES", "")
    if use_real.strip():
        flag = _flag(use_real)
        if flag is None:
            raise ConfigurationError(
                f"USE_REAL_SERVICES={use_real!r} is not a boolean: use true (a TestEnvironment "
                "in Kubernetes) or false (local processes)"
            )
        values["mode"] = "real" if flag else "local"
    isolation = environ.get("TEST_ISOLATION", "")
    if isolation.strip() and _flag(isolation):
        values["xdist"] = "per-worker"
    dynamic = environ.get("DYNAMIC_PORTS", "")
    if dynamic.strip():
        values["dynamic_ports"] = _flag(dynamic) if _flag(dynamic) is not None else dynamic
    return values


class LauncherConfig(BaseSettings):
    """How to launch the services (the plan's ``LauncherConfig``, and every option of testenv).

    ``LauncherConfig(dynamic_ports=True, test_mode=True, startup_timeout=30)`` as in the plan;
    each field is also read from ``TESTENV_<FIELD>`` (``TESTENV_TIMEOUT`` for the timeout).
    """

    model_config = SettingsConfigDict(
        env_prefix="TESTENV_", frozen=True, extra="ignore", populate_by_name=True
    )

    #: ``real``: a TestEnvironment in Kubernetes; ``local``: the services as local processes.
    mode: Mode = "real"
    kubeconfig: str | None = None
    context: str | None = None
    #: A YAML file with a TestEnvironment (or only its spec); ``None``: the reference services.
    spec: Path | None = None
    #: Reuse a Ready environment with the same spec (and keep it afterwards).
    reuse: bool = False
    #: Keep the environment after shutdown and say how to reach it.
    keep: bool = False
    #: ``auto``: claim a Ready environment of a warm pool (TestEnvironmentPool) with the same
    #: spec when there is one; ``off``: always create a new one.
    pool: PoolMode = "auto"
    #: The creator a pool's environments must have to be claimed: the operator's service
    #: account (change it for an operator installed under another name or namespace).
    pool_identity: str = DEFAULT_POOL_IDENTITY
    #: At teardown, wait until the environment's namespace is gone. Without it, one read
    #: confirms the namespace is terminating or owned by the deleted environment (the
    #: garbage collector then removes it), and nobody waits for that.
    wait_deleted: bool = False
    #: Seconds to wait until every service is healthy.
    #: (Also ``TESTENV_TIMEOUT``, the pytest option's variable.)
    startup_timeout: float = Field(300.0, gt=0)
    #: A JSON report of the session (pytest plugin).
    report: Path | None = None
    #: With pytest-xdist: one environment per worker, or one shared by all of them.
    xdist: XdistMode = "shared"
    #: The lease of environments the launcher deletes itself (renewed while it runs).
    lease: Duration = "2m"
    #: Local mode runs ``python -m <local_package>.<service>``.
    local_package: str = "testenv_services"
    #: Where the discovery files go (``<service>.json``).
    discovery_dir: Path = Path(".service_discovery")
    #: A name for the environment (default: generated, unique).
    name: str | None = None
    #: The plan's switches. Ports are always dynamic and the services always run for tests:
    #: ``False`` cannot be honoured and is refused.
    dynamic_ports: bool = True
    test_mode: bool = True

    #: Values the front end's command line set; they beat everything else.
    _overrides: ClassVar[dict[str, Any]] = {}
    #: Values from the front end's config file (pytest's ini); they beat only the defaults.
    _ini: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            _DictSource(settings_cls, cls._overrides),
            init_settings,
            env_settings,
            _DictSource(settings_cls, plan_variables(os.environ)),
            _DictSource(settings_cls, cls._ini),
        )

    @field_validator("dynamic_ports", mode="before")
    @classmethod
    def _dynamic_only(cls, value: object) -> object:
        if value is False or (isinstance(value, str) and _flag(value) is False):
            raise ValueError(
                "DYNAMIC_PORTS=false cannot be honoured: testenv always gives every service "
                "a free local port chosen by the OS (read it from the discovery, never "
                "hard-code it); unset DYNAMIC_PORTS or set it to true"
            )
        return value

    @field_validator("test_mode")
    @classmethod
    def _test_mode_only(cls, value: bool) -> bool:
        if not value:
            raise ValueError(
                "test_mode=False cannot be honoured: testenv only launches test environments"
            )
        return value

    @model_validator(mode="after")
    def _paths(self) -> LauncherConfig:
        if self.mode == "local" and (self.reuse or self.keep):
            # Local processes end with the launcher; say so instead of pretending.
            raise ValueError("reuse and keep need mode=real: local processes end with the session")
        return self

    def cache_key(self) -> str:
        """Identifies what this config launches: equal keys can share one running launcher."""
        from ._spec import load_spec, spec_hash  # deferred: reads the spec file

        spec, _ = load_spec(self.spec)
        parts = {
            "mode": self.mode,
            "spec": spec_hash(spec),
            "kubeconfig": self.kubeconfig,
            "context": self.context,
            "local_package": self.local_package if self.mode == "local" else None,
        }
        blob = json.dumps(parts, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def build(cls, **values: Any) -> LauncherConfig:
        """Like ``LauncherConfig(**values)``, but an invalid value raises
        :class:`ConfigurationError` with one line per problem."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigurationError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        message = str(err["msg"]).removeprefix("Value error, ")
        got = f" (got {err['input']!r})" if err["type"] != "value_error" else ""
        lines.append(f"testenv setting {where}: {message}{got}")
    return "\n".join(lines)


def set_front_end_values(overrides: Mapping[str, Any], ini: Mapping[str, Any]) -> None:
    """Called by a front end (the pytest plugin) once per process: its command-line values
    beat everything, its config-file values beat only the defaults, for every
    ``LauncherConfig`` made afterwards in this process (the user's own ones included)."""
    LauncherConfig._overrides = {k: v for k, v in overrides.items() if v is not None}
    LauncherConfig._ini = {k: v for k, v in ini.items() if v is not None}
