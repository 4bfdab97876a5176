"""The TestEnvironment API: the single source of the CRD schema, the operator and the plugin.

Everything that crosses a process boundary (the custom resource's spec and status, the
discovery records) is a pydantic model here. ``crd.py`` generates the CRD's OpenAPI schema
from these models; nothing else may describe the shape of the resource.

It also holds the *container contract* (the variables every service container gets, the
labels that select an environment's pods): the operator, local mode and the client side all
use these definitions, so they are written once.

This module imports nothing of the project and nothing but pydantic: the operator, the core
library and every client import it (checked by the import-layer test).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP: Final = "testenv.dev"
VERSION: Final = "v1alpha1"
KIND: Final = "TestEnvironment"
PLURAL: Final = "testenvironments"
SINGULAR: Final = "testenvironment"
SHORT_NAMES: Final = ("testenv", "tenv")
API_VERSION: Final = f"{GROUP}/{VERSION}"

DISCOVERY_CONFIGMAP: Final = "testenv-discovery"
DISCOVERY_SCHEMA_VERSION: Final = 1
SERVICES_SECRET: Final = "testenv-secrets"
#: The Secret holding an environment's generated credentials (``spec.secrets``, presets').
CREDENTIALS_SECRET: Final = "testenv-credentials"
MANAGED_BY: Final = "testenv-operator"
FIELD_MANAGER: Final = "testenv-operator"

# Annotation a client (the pytest plugin) refreshes to keep a leased environment alive.
LEASE_RENEWED_ANNOTATION: Final = f"{GROUP}/lease-renewed-at"
#: Who created the environment: the admission policy accepts only the creating user's own
#: name and never lets it change, so a client can trust it (reuse checks it).
CREATOR_ANNOTATION: Final = f"{GROUP}/creator"
# Label on every object the operator creates, naming its environment.
ENVIRONMENT_LABEL: Final = f"{GROUP}/environment"
# Label with a hash of the spec, used by the plugin to reuse an identical environment.
SPEC_HASH_LABEL: Final = f"{GROUP}/spec-hash"
# Label on a service's pods and Service, naming the service.
SERVICE_LABEL: Final = f"{GROUP}/service"
# Label on a job's Job and pods, naming the job.
JOB_LABEL: Final = f"{GROUP}/job"
# Annotation a client sets (to a new unique value) to have the ``run: reset`` jobs run again;
# the operator reports the outcome in ``status.reset``.
RESET_ANNOTATION: Final = f"{GROUP}/reset-requested"
# Annotation with a hash of what a Job or a pod template was rendered from.
TEMPLATE_HASH_ANNOTATION: Final = f"{GROUP}/template-hash"

POOL_KIND: Final = "TestEnvironmentPool"
POOL_PLURAL: Final = "testenvironmentpools"
POOL_SINGULAR: Final = "testenvironmentpool"
POOL_SHORT_NAMES: Final = ("tepool",)
#: Label on an environment a pool created, naming the pool.
POOL_LABEL: Final = f"{GROUP}/pool"
#: Label on a pool's environment: ``available`` until a client claims it, then ``claimed``.
POOL_STATE_LABEL: Final = f"{GROUP}/pool-state"
POOL_AVAILABLE: Final = "available"
POOL_CLAIMED: Final = "claimed"
#: Annotation a client sets when it claims a pool's environment: who claimed it.
CLAIMED_BY_ANNOTATION: Final = f"{GROUP}/claimed-by"
#: Most environments one pool may keep (ready, starting and claimed together).
MAX_POOL_SIZE: Final = 100


def _project_version() -> str:
    try:
        return _dist_version("testenv")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


#: The project's version (pyproject.toml is the single source); the reference images carry it.
PROJECT_VERSION: Final = _project_version()
REFERENCE_IMAGE_TAG: Final = PROJECT_VERSION

# -- the container contract (ARCHITECTURE.md) -------------------------------------------------
ENV_PORT: Final = "PORT"
ENV_ENVIRONMENT: Final = "TESTENV_ENVIRONMENT"
ENV_NAMESPACE: Final = "TESTENV_NAMESPACE"
ENV_SERVICE: Final = "TESTENV_SERVICE"
ENV_SECRET_KEY: Final = "TESTENV_SECRET_KEY"


def service_url_variable(service: str) -> str:
    """``TESTENV_<NAME>_URL``: the variable holding a sibling service's base URL."""
    return f"TESTENV_{service.upper().replace('-', '_')}_URL"


def pod_selector(environment: str, service: str) -> dict[str, str]:
    """The labels that select the pods of ``service`` in ``environment``."""
    return {ENVIRONMENT_LABEL: environment, SERVICE_LABEL: service}


def contract_env(
    *, environment: str, namespace: str, service: str, port: int, urls: Mapping[str, str]
) -> dict[str, str]:
    """The plain variables of the contract for one container (``TESTENV_SECRET_KEY`` aside:
    the operator gives it from a Secret, local mode directly). ``urls``: service -> base URL."""
    env = {
        ENV_PORT: str(port),
        ENV_ENVIRONMENT: environment,
        ENV_NAMESPACE: namespace,
        ENV_SERVICE: service,
    }
    env.update({service_url_variable(name): url for name, url in urls.items()})
    return env


DNS1123_LABEL: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Kubernetes Service names must also start with a letter (RFC 1035).
DNS1035_LABEL: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# At most four parts of at most five digits (99999d): large enough for any test environment,
# small enough that adding it to a date can never overflow.
DURATION: Final = r"^([0-9]{1,5}(s|m|h|d)){1,4}$"
ENV_NAME: Final = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# An image reference: registry/path:tag@digest characters only (printable ASCII).
IMAGE: Final = r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$"
# Env values: any text but control characters (tab, newline and carriage return are fine).
ENV_VALUE: Final = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
# The most characters of env names and values and args in one spec, all services together:
# kopf keeps a copy of the spec in an annotation, and annotations are capped at 256 KiB.
MAX_SPEC_TEXT: Final = 32768
LABEL_VALUE: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# Names the operator sets itself in every container; a spec may not override them.
RESERVED_ENV_NAMES: Final = (ENV_PORT, ENV_ENVIRONMENT, ENV_NAMESPACE, ENV_SERVICE, ENV_SECRET_KEY)
RESERVED_ENV_PREFIX: Final = "TESTENV_"
#: Every environment's namespace starts with this; the operator may create no other.
NAMESPACE_PREFIX: Final = "testenv-"
# A label key without a prefix: keys with a prefix (kubernetes.io/, istio.io/, testenv.dev/)
# belong to other systems and are never set from a spec.
LABEL_NAME: Final = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
# Longest TestEnvironment name: the namespace ``testenv-<name>`` must fit in 63 characters.
MAX_ENVIRONMENT_NAME: Final = 55

# CEL rules (x-kubernetes-validations) for what a JSON schema cannot express. They sit
# next to the fields they guard and are copied into the CRD by crd.py; the pydantic
# validators below enforce the same rules in Python.
_NONZERO_DURATION_RULE: Final = {
    "rule": "self.matches('[1-9]')",
    "message": "must be longer than 0s, e.g. 30s, 15m, 1h30m or 2d",
}
_DURATION_HINT: Final = (
    "a duration: up to four parts of up to 5 digits with s, m, h or d, e.g. 90s, 1h30m, 2d"
)
_DURATION_RULES: Final = {"x-kubernetes-validations": [_NONZERO_DURATION_RULE]}

_DURATION_PART = re.compile(r"([0-9]+)(s|m|h|d)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _cel_string(text: str) -> str:
    """A CEL single-quoted string literal for ``text``."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _reserved_env_name(name: str) -> bool:
    return name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIX)


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``15m``, ``1h30m``, ``2d`` into a timedelta (ValueError otherwise)."""
    if not re.fullmatch(DURATION, text):
        raise ValueError(f"invalid duration {text!r}: use {_DURATION_HINT}")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


class _Model(BaseModel):
    """Base for API types: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it is stored in Kubernetes (camelCase, no unset optionals)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def positive_duration(value: str) -> str:
    """A duration longer than 0s (pydantic validator of :data:`Duration`)."""
    if parse_duration(value).total_seconds() <= 0:
        raise ValueError(_NONZERO_DURATION_RULE["message"])
    return value


#: A duration in the spec: pattern DURATION, longer than 0s (checked by CEL and by pydantic).
Duration = Annotated[
    str,
    Field(pattern=DURATION, max_length=24, json_schema_extra=_DURATION_RULES),
    AfterValidator(positive_duration),
]
Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi)?$", max_length=32)]


# -- names and paths used by workloads -------------------------------------------------------
#: A port name (IANA service name): at most 15 characters, starts with a letter.
PORT_NAME: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: An absolute path without '..' segments, control characters or a trailing '/'.
ABSOLUTE_PATH: Final = r"^(/[^/\x00-\x1f\x7f]+)+$"
#: The most services and jobs of one environment (the dependency graph's size).
MAX_SERVICES: Final = 20
MAX_JOBS: Final = 10
MAX_DEPENDENCIES: Final = 10
#: Highest uid/gid a spec may choose (Pod Security "restricted": any non-zero id).
MAX_ID: Final = 2147483647
DEFAULT_UID: Final = 10001

PortName = Annotated[str, Field(pattern=PORT_NAME, min_length=1, max_length=15)]
SecretName = Annotated[str, Field(pattern=DNS1123_LABEL, min_length=1, max_length=63)]
WorkloadName = Annotated[str, Field(pattern=DNS1035_LABEL, min_length=1, max_length=40)]
AbsolutePath = Annotated[str, Field(pattern=ABSOLUTE_PATH, max_length=256)]
Text = Annotated[str, Field(max_length=4096, pattern=ENV_VALUE)]


#: Where a workload's pod mounts the keys of the Secrets its env reads. Mounted, they make
#: the kubelet wait for its Secret cache with its volume retries (half a second apart) instead
#: of failing the container ("failed to sync secret cache", a one-second limit on a busy node)
#: and retrying the whole pod ten seconds later. ``/var/run`` is ``/run`` in most images, so
#: both spellings are reserved for files and scratch directories.
SECRETS_MOUNT_PATH: Final = "/var/run/secrets/testenv"
RESERVED_PATHS: Final = (SECRETS_MOUNT_PATH, "/run/secrets/testenv")
_RESERVED_PATH_MESSAGE: Final = (
    f"path is reserved: the operator mounts the environment's secrets at {SECRETS_MOUNT_PATH}"
)
_ABOVE_RESERVED_MESSAGE: Final = (
    "a file cannot replace a directory the operator mounts the environment's secrets in "
    f"({SECRETS_MOUNT_PATH})"
)


def _no_dot_segments(path: str) -> str:
    if any(part in {".", ".."} for part in path.split("/")):
        raise ValueError(f"path {path!r} must not contain '.' or '..' segments")
    return path


def _not_reserved(path: str) -> str:
    if any(path == r or path.startswith(r + "/") for r in RESERVED_PATHS):
        raise ValueError(f"{path!r}: {_RESERVED_PATH_MESSAGE}")
    return path


_PATH_RULES: Final = {
    "x-kubernetes-validations": [
        {
            "rule": "!self.split('/').exists(p, p == '.' || p == '..')",
            "message": "path must not contain '.' or '..' segments",
        },
        {
            "rule": f"{list(RESERVED_PATHS)!r}.all(r, self != r && !self.startsWith(r + '/'))",
            "message": _RESERVED_PATH_MESSAGE,
        },
    ]
}
CheckedPath = Annotated[
    AbsolutePath,
    Field(json_schema_extra=_PATH_RULES),
    AfterValidator(_no_dot_segments),
    AfterValidator(_not_reserved),
]


def _exactly_one(*fields: str) -> dict[str, Any]:
    has = ", ".join(f"has(self.{f})" for f in fields)
    return {
        "rule": f"[{has}].filter(x, x).size() == 1",
        "message": "set exactly one of " + ", ".join(fields),
    }


class ServiceRef(_Model):
    """A value taken from another service's address (resolved by the operator)."""

    #: The service whose address is taken.
    name: WorkloadName
    #: The port (by name); default: the service's first port.
    port: PortName | None = None
    #: ``url`` (``http://host:port``, or ``postgresql://user@host:port/db`` for a preset),
    #: ``host``, ``port``, ``address`` (``host:port``) or ``dsn``: a preset's URL *with* its
    #: password (the value stays in the pod: it is assembled from the Secret by the kubelet).
    field: Literal["url", "host", "port", "address", "dsn"] = "url"


class EnvVar(_Model):
    """An environment variable: a literal ``value``, a generated ``secret`` or a ``service``'s
    address (at most one; none means the empty string)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.value), has(self.secret), has(self.service)]"
                    ".filter(x, x).size() <= 1",
                    "message": "an env entry takes at most one of value, secret and service",
                }
            ]
        }
    )

    #: The variable's name (not PORT, nor TESTENV_*: the operator sets those).
    name: Annotated[
        str,
        Field(
            pattern=ENV_NAME,
            min_length=1,
            max_length=128,
            json_schema_extra={
                "x-kubernetes-validations": [
                    {
                        "rule": "!(self in " + repr(list(RESERVED_ENV_NAMES)) + ")"
                        f" && !self.startsWith('{RESERVED_ENV_PREFIX}')",
                        "message": "env name is reserved: the operator sets PORT and "
                        "TESTENV_* itself",
                    }
                ]
            },
        ),
    ]
    #: A literal value (``$(X)`` is not expanded).
    value: Annotated[str | None, Field(max_length=4096, pattern=ENV_VALUE)] = None
    #: The name of one of the environment's ``secrets`` (or a preset's ``<service>-password``).
    secret: SecretName | None = None
    #: A value from another service's address.
    service: ServiceRef | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if _reserved_env_name(name):
            raise ValueError(
                f"env name {name!r} is reserved: the operator sets PORT and TESTENV_* itself"
            )
        return name

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if sum(x is not None for x in (self.value, self.secret, self.service)) > 1:
            raise ValueError(f"env {self.name}: give at most one of value, secret and service")
        return self


class ResourceList(_Model):
    #: CPU, e.g. ``250m``.
    cpu: Quantity | None = None
    #: Memory, e.g. ``256Mi``.
    memory: Quantity | None = None


class Resources(_Model):
    #: What the scheduler reserves.
    requests: ResourceList = ResourceList(cpu="50m", memory="64Mi")
    #: The most the container may use.
    limits: ResourceList = ResourceList(cpu="500m", memory="256Mi")


class PortSpec(_Model):
    """A named port of a service; the plugin forwards every one."""

    #: The port's name (at most 15 characters); the plugin forwards it under this name.
    name: PortName
    #: The container's port number (the Service's too).
    port: Annotated[int, Field(ge=1, le=65535)]
    #: ``http`` ports get URLs and may be probed over HTTP; ``tcp`` ports only an address.
    protocol: Literal["http", "tcp"] = "http"


class HttpProbe(_Model):
    #: The path a GET must answer 2xx on.
    path: Annotated[str, Field(pattern=r"^/\S*$", max_length=256)] = "/health"
    #: The port's name; default: the service's first port.
    port: PortName | None = None


class TcpProbe(_Model):
    port: PortName | None = None


class ExecProbe(_Model):
    #: Run in the container; exit code 0 means Ready.
    command: Annotated[list[Text], Field(min_length=1, max_length=32)]


class Probe(_Model):
    """How the operator knows a service is Ready: one of ``http``, ``tcp``, ``exec``."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_exactly_one("http", "tcp", "exec")]}
    )

    #: GET a path on an HTTP port.
    http: HttpProbe | None = None
    #: Open a TCP connection to a port.
    tcp: TcpProbe | None = None
    #: Run a command in the container.
    exec: ExecProbe | None = None
    #: How often the probe runs (every second: a service counts as Ready at most a second after
    #: it is; Ready propagates along dependsOn, so a longer period adds up).
    period_seconds: Annotated[int, Field(ge=1, le=300)] = 1
    #: How long one attempt may take.
    timeout_seconds: Annotated[int, Field(ge=1, le=60)] = 2
    #: Failed attempts in a row before a Ready service counts as not Ready.
    failure_threshold: Annotated[int, Field(ge=1, le=30)] = 3

    @model_validator(mode="after")
    def _one_kind(self) -> Probe:
        if sum(x is not None for x in (self.http, self.tcp, self.exec)) != 1:
            raise ValueError("a probe has exactly one of http, tcp and exec")
        return self


_FILE_RULES: Final[Any] = [
    {
        "rule": f"{list(RESERVED_PATHS)!r}.all(r, !r.startsWith(self.path + '/'))",
        "message": _ABOVE_RESERVED_MESSAGE,
    }
]


class FileSpec(_Model):
    """A small file the operator renders into a ConfigMap and mounts read-only at ``path``."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _FILE_RULES})

    #: Where the file is mounted (absolute; not in /var/run/secrets/testenv, nor a directory
    #: above it).
    path: CheckedPath
    #: The file's text.
    content: Annotated[str, Field(max_length=16384, pattern=ENV_VALUE)]

    @field_validator("path")
    @classmethod
    def _not_above_reserved(cls, path: str) -> str:
        if any(r.startswith(path + "/") for r in RESERVED_PATHS):
            raise ValueError(f"{path!r}: {_ABOVE_RESERVED_MESSAGE}")
        return path


class ScratchDir(_Model):
    """A writable, empty directory (an emptyDir) at ``path``; /tmp always is one."""

    #: Where the directory is mounted (absolute; not in /var/run/secrets/testenv).
    path: CheckedPath
    #: The most the directory may hold.
    size_limit: Quantity = "256Mi"


def _unique(items: list[Any], attr: str, what: str) -> None:
    values = [getattr(i, attr) for i in items]
    dupes = sorted({str(v) for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"{what} must be unique; repeated: {', '.join(dupes)}")


def _list_map(key: str = "name", **extra: Any) -> dict[str, Any]:
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key], **extra}


class _Workload(_Model):
    """What services and jobs share: a container and what it needs."""

    #: A DNS label: the Service's or Job's name (a service's pods: ``<name>-<hash>-<i>``).
    name: WorkloadName
    #: The container image (``IfNotPresent``: load local images into the cluster).
    image: Annotated[str | None, Field(min_length=1, max_length=512, pattern=IMAGE)] = None
    #: The container's entrypoint (replaces the image's); ``args`` are its arguments.
    command: Annotated[list[Text], Field(max_length=64)] = []
    args: Annotated[list[Text], Field(max_length=64)] = []
    #: Variables besides the contract's (PORT, TESTENV_*).
    env: Annotated[list[EnvVar], Field(max_length=64, json_schema_extra=_list_map())] = []
    #: Small files mounted read-only (through a ConfigMap); pods restart when one changes.
    files: Annotated[list[FileSpec], Field(max_length=16, json_schema_extra=_list_map("path"))] = []
    #: Writable empty directories (the root filesystem is read-only).
    scratch: Annotated[
        list[ScratchDir], Field(max_length=8, json_schema_extra=_list_map("path"))
    ] = []
    #: Services (Ready) and jobs (succeeded) this one waits for before it starts.
    depends_on: Annotated[
        list[WorkloadName],
        Field(max_length=MAX_DEPENDENCIES, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = []
    #: CPU and memory requests and limits.
    resources: Resources = Resources()
    #: The uid and gid the container runs as: any but 0 (Pod Security "restricted").
    run_as_user: Annotated[int, Field(ge=1, le=MAX_ID)] = DEFAULT_UID
    #: The gid (also the pod's fsGroup: writable volumes belong to it).
    run_as_group: Annotated[int, Field(ge=1, le=MAX_ID)] = DEFAULT_UID
    #: Give the container ``TESTENV_SECRET_KEY``, the environment's generated secret (e.g. to
    #: sign tokens). Off unless asked for: no other container holds it, and a pod that reads
    #: no Secret does not wait for the kubelet to be allowed to read one (up to ~2 s on a new
    #: pod: ARCHITECTURE.md).
    secret_key: bool = False

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[EnvVar]) -> list[EnvVar]:
        _unique(env, "name", "env names")
        return env

    @model_validator(mode="after")
    def _paths(self) -> _Workload:
        paths = [f.path for f in self.files] + [s.path for s in self.scratch] + ["/tmp"]
        dupes = sorted({p for p in paths if paths.count(p) > 1})
        if dupes:
            raise ValueError(
                f"{self.name}: files and scratch paths must be distinct (and not /tmp, "
                f"always a scratch directory); repeated: {', '.join(dupes)}"
            )
        if self.name in self.depends_on:
            raise ValueError(f"{self.name} depends on itself: remove it from its dependsOn")
        return self

    def effective_env(self) -> list[EnvVar]:
        """The env the container gets besides the contract (a preset adds its own)."""
        return list(self.env)

    def effective_scratch(self) -> list[ScratchDir]:
        """The writable directories besides /tmp (a preset adds its data directory)."""
        return list(self.scratch)

    def text_size(self) -> int:
        """Characters of env, command, args and files (counted against MAX_SPEC_TEXT)."""
        return (
            sum(len(e.name) + len(e.value or "") for e in self.env)
            + sum(len(a) for a in self.args + self.command)
            + sum(len(f.content) for f in self.files)
        )


_WORKLOAD_RULES: Final[Any] = [
    {
        "rule": "!has(self.dependsOn) || !(self.name in self.dependsOn)",
        "messageExpression": "self.name + ' depends on itself: remove it from its dependsOn'",
    },
    {
        "rule": "(has(self.files) ? self.files.map(f, f.path) : [])"
        ".all(p, !(has(self.scratch) && self.scratch.exists(s, s.path == p)) && p != '/tmp')"
        " && (!has(self.scratch) || self.scratch.all(s, s.path != '/tmp'))",
        "message": "files and scratch paths must be distinct, and not /tmp (always a scratch "
        "directory)",
    },
]


class Preset(StrEnum):
    """Ready-made services: image, port, probe, credentials and data directory included."""

    POSTGRES = "postgres"
    REDIS = "redis"


@dataclass(frozen=True)
class PresetDefaults:
    image: str
    port: int
    scheme: str
    probe: list[str]
    #: Env entries, ``{password}`` standing for the preset's password secret.
    env: tuple[tuple[str, str | None], ...]
    password_env: str
    user_env: str | None = None
    database_env: str | None = None
    scratch: tuple[str, ...] = ()


def preset_defaults(preset: Preset, tag: str = REFERENCE_IMAGE_TAG) -> PresetDefaults:
    if preset is Preset.POSTGRES:
        return PresetDefaults(
            image=f"testenv/postgres:{tag}",
            port=5432,
            scheme="postgresql",
            probe=["sh", "-c", 'exec pg_isready -q -h 127.0.0.1 -p "$PORT"'],
            env=(("POSTGRES_USER", "app"), ("POSTGRES_DB", "app"), ("POSTGRES_PASSWORD", None)),
            password_env="POSTGRES_PASSWORD",
            user_env="POSTGRES_USER",
            database_env="POSTGRES_DB",
            scratch=("/var/lib/postgresql/data",),
        )
    return PresetDefaults(
        image=f"testenv/redis:{tag}",
        port=6379,
        scheme="redis",
        probe=[
            "sh",
            "-c",
            'redis-cli -p "$PORT" --no-auth-warning -a "$REDIS_PASSWORD" ping | grep -q PONG',
        ],
        env=(("REDIS_PASSWORD", None),),
        password_env="REDIS_PASSWORD",
    )


def password_secret(service: str) -> str:
    """The secret a preset service's password is generated into (declare it to tune it)."""
    return f"{service}-password"


class ServiceSpec(_Workload):
    """One service of an environment: ``replicas`` pods (the operator's own, no Deployment)
    plus a Service of the same name.

    Either ``image`` or ``preset``. Ports: ``ports``, or the shorthand ``port`` (one HTTP port
    named ``http``), else the preset's, else 8080.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                *_WORKLOAD_RULES,
                {
                    "rule": "has(self.image) || has(self.preset)",
                    "message": "a service needs an image (or a preset: postgres, redis)",
                },
                {
                    "rule": "!(has(self.port) && has(self.ports) && size(self.ports) > 0)",
                    "message": "give either port (one HTTP port) or ports, not both",
                },
                {
                    "rule": "!has(self.ports) || self.ports.all(p, "
                    "self.ports.exists_one(q, q.port == p.port))",
                    "message": "port numbers of a service must be unique",
                },
            ]
        }
    )

    #: A ready-made service: ``postgres`` or ``redis`` (image, port, readiness and a generated
    #: password ``<name>-password``).
    preset: Preset | None = None
    #: Shorthand for one HTTP port named ``http`` (default 8080 without ``ports`` or a preset).
    port: Annotated[int | None, Field(ge=1, le=65535)] = None
    #: Named ports; the first is the service's main port.
    ports: Annotated[list[PortSpec], Field(max_length=8, json_schema_extra=_list_map())] = []
    #: Readiness; default: HTTP GET ``healthPath`` on the first port if it is HTTP, else TCP
    #: (a preset brings its own).
    probe: Probe | None = None
    #: The path of the default HTTP probe.
    health_path: Annotated[str, Field(pattern=r"^/\S*$", max_length=256)] = "/health"
    #: Where the service accepts WebSocket connections (its discovery record gets a ``ws_url``).
    websocket_path: Annotated[str | None, Field(pattern=r"^/\S*$", max_length=256)] = None
    #: Pods of the service.
    replicas: Annotated[int, Field(ge=0, le=10)] = 1
    #: How long the service may take to become Ready (from its start) before the environment fails.
    readiness_timeout: Duration = "120s"

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSpec:
        if self.image is None and self.preset is None:
            raise ValueError(f"service {self.name}: give an image or a preset (postgres, redis)")
        if self.port is not None and self.ports:
            raise ValueError(f"service {self.name}: give either port or ports, not both")
        _unique(self.ports, "port", f"service {self.name}: port numbers")
        names = [p.name for p in self.effective_ports()]
        probe_ports = (
            [p.port for p in (self.probe.http, self.probe.tcp) if p is not None and p.port]
            if self.probe
            else []
        )
        unknown = [p for p in probe_ports if p not in names]
        if unknown:
            raise ValueError(
                f"service {self.name}: the probe names port {unknown[0]!r}; "
                f"its ports are {', '.join(names)}"
            )
        return self

    # -- what the service resolves to ---------------------------------------------------
    @property
    def defaults(self) -> PresetDefaults | None:
        return preset_defaults(self.preset) if self.preset is not None else None

    def effective_image(self) -> str:
        if self.image:
            return self.image
        assert self.defaults is not None  # checked by _consistent
        return self.defaults.image

    def effective_ports(self) -> list[PortSpec]:
        if self.ports:
            return list(self.ports)
        if self.port is None and self.defaults is not None:
            return [PortSpec(name=str(self.preset), port=self.defaults.port, protocol="tcp")]
        return [PortSpec(name="http", port=self.port or 8080, protocol="http")]

    @property
    def main_port(self) -> PortSpec:
        return self.effective_ports()[0]

    def port_named(self, name: str | None) -> PortSpec:
        """The port called ``name`` (the first one for None); KeyError if there is none."""
        ports = self.effective_ports()
        if name is None:
            return ports[0]
        for port in ports:
            if port.name == name:
                return port
        raise KeyError(name)

    def effective_probe(self) -> Probe:
        if self.probe is not None:
            return self.probe
        if self.defaults is not None:
            return Probe(exec=ExecProbe(command=self.defaults.probe))
        if self.main_port.protocol == "http":
            return Probe(http=HttpProbe(path=self.health_path))
        return Probe(tcp=TcpProbe())

    def effective_env(self) -> list[EnvVar]:
        """The preset's env (its password from the secret ``<name>-password``) with the
        service's own entries in their place."""
        own = {e.name: e for e in self.env}
        preset: list[EnvVar] = []
        if self.defaults is not None:
            for name, value in self.defaults.env:
                if name in own:
                    continue
                if value is None:
                    preset.append(EnvVar(name=name, secret=password_secret(self.name)))
                else:
                    preset.append(EnvVar(name=name, value=value))
        return preset + list(self.env)

    def effective_scratch(self) -> list[ScratchDir]:
        own = {s.path for s in self.scratch}
        extra = [
            ScratchDir(path=p, size_limit="1Gi")
            for p in (self.defaults.scratch if self.defaults else ())
            if p not in own
        ]
        return extra + list(self.scratch)

    def env_value(self, name: str) -> str | None:
        """The literal value of an env entry (None if it has none)."""
        return next((e.value for e in self.effective_env() if e.name == name), None)

    # The plan's single-port attributes, kept for its clients.
    @property
    def http_port(self) -> int:
        return self.main_port.port


class JobSpec(_Workload):
    """A one-shot container (a migration, seed data), run once its dependencies are Ready.
    The environment is Ready only after every job succeeded; a failed job fails it."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _WORKLOAD_RULES})

    #: The container image.
    image: Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE)]
    #: The longest the job may run (each attempt).
    timeout: Duration = "10m"
    #: Retries after a failed attempt before the job, and the environment, fail.
    retries: Annotated[int, Field(ge=0, le=5)] = 0
    #: ``setup``: once, before the environment is Ready. ``reset``: whenever a client asks
    #: for clean data (the plugin's ``testenv_reset`` marker), e.g. truncate and re-seed.
    run: Literal["setup", "reset"] = "setup"


class SecretSpec(_Model):
    """A credential the operator generates once per environment. Services take it with
    ``env: [{name: X, secret: NAME}]``; the test side reads it (``testenv.secret(NAME)``).
    It never appears in status, discovery, events or reports."""

    #: The secret's name: the key services and tests read it by.
    name: SecretName
    #: Characters of the generated value.
    length: Annotated[int, Field(ge=8, le=256)] = 32
    #: The characters it is made of.
    alphabet: Literal["alphanumeric", "hex", "urlsafe"] = "alphanumeric"


class NetworkSpec(_Model):
    """What an environment's pods may reach. Always: each other, and DNS. Never: other
    environments, the API server, the nodes, link-local (cloud metadata) and other private
    addresses. Enforced by NetworkPolicies, so only on a cluster whose network plugin
    enforces them."""

    #: ``none``: nothing outside the environment. ``internet``: also public addresses (a
    #: service that calls an external API, downloads, ...).
    egress: Literal["none", "internet"] = "none"


#: The user the reference environment seeds (``AUTH_SEED_USERS`` of its seed job).
REFERENCE_SEED_USERS: Final = "test@example.com:password"


def _dsn(name: str, service: str) -> EnvVar:
    return EnvVar(name=name, service=ServiceRef(name=service, field="dsn"))


def reference_services(tag: str = REFERENCE_IMAGE_TAG) -> list[ServiceSpec]:
    """The default set: the reference auth, backend and frontend services, auth's PostgreSQL
    (``db``) and the backend's Redis (``cache``); see :func:`reference_jobs`.

    The reference ports are distinct (8080, 8081, 8082), so the three also run as local
    processes on one host (local mode leaves out the presets and the jobs).
    """
    return [
        ServiceSpec(
            name="auth",
            image=f"testenv/auth:{tag}",
            port=8080,
            # Not after the migration: auth starts alongside it and turns Ready (its /health
            # reads the users table) once the schema exists.
            depends_on=["db"],
            env=[_dsn("AUTH_DATABASE_URL", "db")],
            secret_key=True,  # it signs the tokens
        ),
        ServiceSpec(
            name="backend",
            image=f"testenv/backend:{tag}",
            port=8081,
            websocket_path="/ws",
            depends_on=["cache"],
            env=[_dsn("BACKEND_REDIS_URL", "cache")],
        ),
        ServiceSpec(name="frontend", image=f"testenv/frontend:{tag}", port=8082),
        ServiceSpec(name="db", preset=Preset.POSTGRES),
        ServiceSpec(name="cache", preset=Preset.REDIS),
    ]


def reference_jobs(tag: str = REFERENCE_IMAGE_TAG) -> list[JobSpec]:
    """Auth's schema migration and its seed user, run by the auth image; ``reset`` (run on a
    client's request) removes every user and seeds again."""
    command = ["python3", "-m", "testenv_services.auth.db"]
    seeded = [
        _dsn("AUTH_DATABASE_URL", "db"),
        EnvVar(name="AUTH_SEED_USERS", value=REFERENCE_SEED_USERS),
    ]
    return [
        JobSpec(
            name="migrate",
            image=f"testenv/auth:{tag}",
            command=[*command, "migrate"],
            depends_on=["db"],
            env=[_dsn("AUTH_DATABASE_URL", "db")],
        ),
        JobSpec(
            name="seed",
            image=f"testenv/auth:{tag}",
            command=[*command, "seed"],
            depends_on=["migrate"],
            env=seeded,
        ),
        JobSpec(
            name="reset",
            image=f"testenv/auth:{tag}",
            command=[*command, "reset"],
            depends_on=["db"],
            env=seeded,
            run="reset",
        ),
    ]


def spec_text_size(workloads: Sequence[_Workload]) -> int:
    """Characters of env, command, args and files over all services and jobs."""
    return sum(w.text_size() for w in workloads)


def _cel_text(var: str) -> str:
    return (
        f"(has({var}.env) ? {var}.env.map(e, size(e.name) + (has(e.value) ? size(e.value) : 0))"
        ".sum() : 0)"
        f" + (has({var}.args) ? {var}.args.map(a, size(a)).sum() : 0)"
        f" + (has({var}.command) ? {var}.command.map(a, size(a)).sum() : 0)"
        f" + (has({var}.files) ? {var}.files.map(f, size(f.content)).sum() : 0)"
    )


_SPEC_TEXT_RULE: Final[dict[str, Any]] = {
    "rule": f"(has(self.services) ? self.services.map(s, {_cel_text('s')}).sum() : 0)"
    f" + (has(self.jobs) ? self.jobs.map(j, {_cel_text('j')}).sum() : 0) <= {MAX_SPEC_TEXT}",
    "message": f"env, command, args and files of all services and jobs may hold at most "
    f"{MAX_SPEC_TEXT} characters: put large configuration in the image",
}

# -- the admission policy: references between workloads, and cycles ---------------------------
# These rules compare every workload with every other one: CEL in a CRD has no variables, and
# its cost estimate refuses them. A ValidatingAdmissionPolicy (shipped with the CRD, built by
# the operator's crd.py) has variables, computed once each. The models check the same.
_S = "object.spec"
_SERVICES = f"(has({_S}.services) ? {_S}.services : [])"
_JOBS = f"(has({_S}.jobs) ? {_S}.jobs : [])"
# The ports of a service ``t`` by name (the shorthand port is "http", a preset's its name).
_CEL_PORTS = (
    "(has(t.ports) && size(t.ports) > 0 ? t.ports.map(p, p.name)"
    " : (has(t.preset) && !has(t.port) ? [t.preset] : ['http']))"
)
_BAD_DEPENDS = "has(w.dependsOn) && w.dependsOn.exists(d, !(d in variables.names))"
_BAD_SECRET = "has(e.secret) && !(e.secret in variables.secrets)"
_BAD_SERVICE = (
    f"has(e.service) && !{_SERVICES}.exists(t, t.name == e.service.name"
    f" && (!has(e.service.port) || e.service.port in {_CEL_PORTS})"
    " && (!has(e.service.field) || e.service.field != 'dsn' || has(t.preset)))"
)


def _each_workload(condition: str, describe: str) -> str:
    """A list of ``describe`` (over ``w``) for every service and job where ``condition``."""
    return (
        f"{_SERVICES}.filter(w, {condition}).map(w, {describe})"
        f" + {_JOBS}.filter(w, {condition}).map(w, {describe})"
    )


def _env_problems(bad: str) -> str:
    return _each_workload(
        f"has(w.env) && w.env.exists(e, {bad})",
        f"w.name + ' (env ' + w.env.filter(e, {bad}).map(e, e.name).join(', ') + ')'",
    )


def policy_variables(rounds: int = MAX_SERVICES + MAX_JOBS) -> list[tuple[str, str]]:
    """The policy's variables. ``r0`` .. ``r<rounds>`` find cycles: ``rounds`` times, every
    workload none of whose dependencies is left is peeled off; what remains is on (or behind)
    a cycle. A node is a list of strings: its name, then its dependencies."""
    node = "[w.name] + (has(w.dependsOn) ? w.dependsOn : [])"
    out = [
        ("names", f"{_SERVICES}.map(w, w.name) + {_JOBS}.map(w, w.name)"),
        (
            "secrets",
            f"(has({_S}.secrets) ? {_S}.secrets.map(x, x.name) : [])"
            f" + {_SERVICES}.filter(w, has(w.preset)).map(w, w.name + '-password')",
        ),
        (
            "badDepends",
            _each_workload(
                _BAD_DEPENDS,
                "w.name + ' -> ' + w.dependsOn.filter(d, !(d in variables.names)).join(', ')",
            ),
        ),
        (
            "resetJobs",
            f"{_JOBS}.filter(j, has(j.run) && j.run == 'reset').map(j, j.name)",
        ),
        (
            "onReset",
            _each_workload(
                "has(w.dependsOn) && w.dependsOn.exists(d, d in variables.resetJobs)",
                "w.name + ' -> ' + w.dependsOn.filter(d, d in variables.resetJobs).join(', ')",
            ),
        ),
        ("badSecrets", _env_problems(_BAD_SECRET)),
        ("badServices", _env_problems(_BAD_SERVICE)),
        ("r0", f"{_SERVICES}.map(w, {node}) + {_JOBS}.map(w, {node})"),
    ]
    for i in range(1, rounds + 1):
        prev = f"variables.r{i - 1}"
        out.append(
            (f"r{i}", f"{prev}.filter(n, n.exists(d, d != n[0] && {prev}.exists(m, m[0] == d)))")
        )
    return out


def policy_validations(rounds: int = MAX_SERVICES + MAX_JOBS) -> list[dict[str, str]]:
    return [
        {
            "expression": "variables.names.all(n, variables.names.exists_one(m, m == n))",
            "messageExpression": "'spec: services and jobs share one set of names; repeated: ' "
            "+ variables.names.filter(n, !variables.names.exists_one(m, m == n)).join(', ')",
        },
        {
            "expression": "size(variables.badDepends) == 0",
            "messageExpression": "'spec: dependsOn names unknown services or jobs: ' + "
            "variables.badDepends.join('; ')",
        },
        {
            "expression": "size(variables.onReset) == 0",
            "messageExpression": "'spec: dependsOn names jobs that run only on a reset (run: "
            "reset): ' + variables.onReset.join('; ')",
        },
        {
            "expression": "size(variables.badSecrets) == 0",
            "messageExpression": "'spec: env names unknown secrets (declare them in "
            "spec.secrets): ' + variables.badSecrets.join('; ')",
        },
        {
            "expression": "size(variables.badServices) == 0",
            "messageExpression": "'spec: env takes an address from an unknown service or port, "
            "or a dsn from a service without a preset: ' + variables.badServices.join('; ')",
        },
        {
            "expression": f"size(variables.r{rounds}) == 0",
            "messageExpression": "'spec: dependsOn has a cycle; on it or waiting for it: ' + "
            f"variables.r{rounds}.map(n, n[0]).join(', ')",
        },
    ]


_SPEC_RULES: Final[Any] = [dict(_SPEC_TEXT_RULE)]


def dependency_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of ``graph`` (name -> names it depends on) as ``[a, b, ..., a]``, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done or node not in graph:
            return None
        path.append(node)
        for dep in graph[node]:
            found = visit(dep)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for node in graph:
        found = visit(node)
        if found:
            return found
    return None


_NAMESPACE_MESSAGE: Final = (
    f"namespace must start with {NAMESPACE_PREFIX} and name a namespace that does not exist "
    f"(e.g. {NAMESPACE_PREFIX}my-branch): the operator creates it and never takes one over"
)
_LABELS_MESSAGE: Final = (
    "label keys must be plain names without a prefix (at most 63 alphanumerics, '-', '_', "
    "'.', e.g. team or pr): prefixed keys such as kubernetes.io/ or istio.io/ belong to other "
    "systems"
)


class TestEnvironmentSpec(_Model):
    """What a user declares. Every field has a default: ``spec: {}`` is a valid environment."""

    __test__ = False  # not a pytest test class, despite the name
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    #: The namespace (default ``testenv-<name>``): always starts with ``testenv-``; the
    #: operator creates it and never takes over an existing one.
    namespace: Annotated[
        str | None,
        Field(
            pattern=DNS1123_LABEL,
            max_length=63,
            json_schema_extra={
                "x-kubernetes-validations": [
                    {
                        "rule": f"self.startsWith('{NAMESPACE_PREFIX}') && "
                        f"self.size() > {len(NAMESPACE_PREFIX)}",
                        "message": _NAMESPACE_MESSAGE,
                    }
                ]
            },
        ),
    ] = None
    #: The long-running services (default: the reference auth, backend and frontend).
    services: Annotated[
        list[ServiceSpec],
        Field(
            max_length=MAX_SERVICES,
            json_schema_extra=_list_map(
                **{
                    "x-kubernetes-validations": [
                        {
                            "rule": "self.all(a, !has(a.port) || "
                            "self.exists_one(b, has(b.port) && b.port == a.port))",
                            "message": "service ports must be unique: give every service "
                            "its own port",
                        }
                    ]
                }
            ),
        ),
    ] = Field(default_factory=reference_services)
    #: One-shot containers: migrations, seed data.
    jobs: Annotated[list[JobSpec], Field(max_length=MAX_JOBS, json_schema_extra=_list_map())] = []
    #: Credentials generated per environment.
    secrets: Annotated[list[SecretSpec], Field(max_length=32, json_schema_extra=_list_map())] = []
    #: What the environment's pods may reach beyond each other and DNS.
    network: NetworkSpec = NetworkSpec()
    #: How long the environment lives (e.g. ``90m``, ``2d``).
    ttl: Duration = "1h"
    #: Deleted when not renewed for this long (the plugin renews it while a test session runs).
    lease: Duration | None = None
    #: Labels for the environment's workloads, Services and ConfigMaps (never its
    #: namespace): plain keys without a prefix, e.g. ``team``, ``pr``.
    labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]],
        Field(
            max_length=32,
            json_schema_extra={
                "x-kubernetes-validations": [
                    {
                        "rule": "self.all(k, k.matches(" + _cel_string(LABEL_NAME) + "))",
                        "message": _LABELS_MESSAGE,
                    }
                ]
            },
        ),
    ] = {}

    @model_validator(mode="before")
    @classmethod
    def _reference_stack(cls, data: Any) -> Any:
        """Without ``services``, the reference stack: its services and its jobs (before any
        jobs of the spec's own)."""
        if isinstance(data, dict) and data.get("services") is None:
            data = {k: v for k, v in data.items() if k != "services"}
            data["services"] = reference_services()
            data["jobs"] = [*reference_jobs(), *(data.get("jobs") or [])]
        return data

    @property
    def workloads(self) -> list[ServiceSpec | JobSpec]:
        """Services and setup jobs: what the environment starts, in dependency order."""
        return [*self.services, *self.setup_jobs]

    @property
    def setup_jobs(self) -> list[JobSpec]:
        return [j for j in self.jobs if j.run == "setup"]

    @property
    def reset_jobs(self) -> list[JobSpec]:
        return [j for j in self.jobs if j.run == "reset"]

    def secret_names(self) -> list[str]:
        """Declared secrets, then presets' passwords that are not declared."""
        declared = [s.name for s in self.secrets]
        implied = [password_secret(s.name) for s in self.services if s.preset is not None]
        return declared + [n for n in implied if n not in declared]

    def secret_spec(self, name: str) -> SecretSpec:
        return next((s for s in self.secrets if s.name == name), SecretSpec(name=name))

    @model_validator(mode="after")
    def _text_bounded(self) -> TestEnvironmentSpec:
        total = spec_text_size([*self.services, *self.jobs])
        if total > MAX_SPEC_TEXT:
            raise ValueError(
                f"env, command, args and files of all services and jobs hold {total} "
                f"characters; at most {MAX_SPEC_TEXT}: put large configuration in the image"
            )
        return self

    @model_validator(mode="after")
    def _unique_services(self) -> TestEnvironmentSpec:
        _unique([*self.services, *self.jobs], "name", "service and job names")
        _unique([s for s in self.services if s.port is not None], "port", "service ports")
        _unique(self.secrets, "name", "secret names")
        return self

    @model_validator(mode="after")
    def _references(self) -> TestEnvironmentSpec:
        names = {w.name for w in [*self.services, *self.jobs]}
        reset = {j.name for j in self.reset_jobs}
        services = {s.name: s for s in self.services}
        secrets = set(self.secret_names())
        for w in [*self.services, *self.jobs]:
            on_reset = [d for d in w.depends_on if d in reset]
            if on_reset:
                raise ValueError(
                    f"{w.name}: dependsOn names {', '.join(on_reset)}, which runs only on a "
                    "reset (run: reset)"
                )
            unknown = [d for d in w.depends_on if d not in names]
            if unknown:
                raise ValueError(
                    f"{w.name}: dependsOn names unknown services or jobs: {', '.join(unknown)}"
                )
            for e in w.env:
                if e.secret is not None and e.secret not in secrets:
                    raise ValueError(
                        f"{w.name}: env {e.name} names the unknown secret {e.secret!r}: "
                        "declare it in spec.secrets"
                    )
                if e.service is not None:
                    target = services.get(e.service.name)
                    if target is None:
                        raise ValueError(
                            f"{w.name}: env {e.name} names the unknown service {e.service.name!r}"
                        )
                    try:
                        target.port_named(e.service.port)
                    except KeyError:
                        ports = ", ".join(p.name for p in target.effective_ports())
                        raise ValueError(
                            f"{w.name}: env {e.name}: service {target.name} has no port "
                            f"{e.service.port!r} (its ports: {ports})"
                        ) from None
                    if e.service.field == "dsn" and target.preset is None:
                        raise ValueError(
                            f"{w.name}: env {e.name}: only a preset service (postgres, redis) "
                            f"has a dsn; {target.name} has none"
                        )
        cycle = dependency_cycle({w.name: w.depends_on for w in [*self.services, *self.jobs]})
        if cycle:
            raise ValueError(f"dependsOn has a cycle: {' -> '.join(cycle)}")
        return self

    @field_validator("namespace")
    @classmethod
    def _prefixed(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.startswith(NAMESPACE_PREFIX) or len(value) <= len(NAMESPACE_PREFIX)
        ):
            raise ValueError(f"{_NAMESPACE_MESSAGE}, got {value!r}")
        return value

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in labels if not re.fullmatch(LABEL_NAME, k))
        if bad:
            raise ValueError(f"{_LABELS_MESSAGE}; got {', '.join(bad)}")
        return labels

    def namespace_for(self, env_name: str) -> str:
        """The environment's namespace: ``spec.namespace`` or ``testenv-<name>``."""
        return self.namespace or f"testenv-{env_name}"[:63].rstrip("-")

    def service(self, name: str) -> ServiceSpec:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    def job(self, name: str) -> JobSpec:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)


class Phase(StrEnum):
    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    TERMINATING = "Terminating"


class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


class Condition(_Model):
    type: str
    status: Annotated[str, Field(pattern=r"^(True|False|Unknown)$")]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class ServiceTimings(_Model):
    """Seconds since the environment was created, per step."""

    scheduled: float | None = None
    started: float | None = None
    ready: float | None = None


class ServiceStatus(_Model):
    name: str
    ready: bool = False
    ready_replicas: int = 0
    replicas: int = 0
    reason: str | None = None
    message: str | None = None
    url: str | None = None
    timings: ServiceTimings = ServiceTimings()


class JobPhase(StrEnum):
    WAITING = "Waiting"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class JobStatus(_Model):
    name: str
    phase: JobPhase = JobPhase.WAITING
    reason: str | None = None
    #: Why it waits or failed (with the job's last log lines when it failed).
    message: str | None = None
    #: Seconds since the environment's creation.
    started: float | None = None
    finished: float | None = None


class ResetStatus(_Model):
    """The outcome of the last reset a client asked for (``RESET_ANNOTATION``)."""

    request: str
    phase: JobPhase = JobPhase.RUNNING
    message: str | None = None


class Timings(_Model):
    """Seconds since the environment's creation at which each step completed."""

    namespace_created: float | None = None
    discovery_published: float | None = None
    ready: float | None = None


class TestEnvironmentStatus(_Model):
    __test__ = False

    phase: Phase = Phase.PENDING
    message: str | None = None
    namespace: str | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = []
    services: list[ServiceStatus] = []
    jobs: list[JobStatus] = []
    reset: ResetStatus | None = None
    ready_services: str | None = None  # "2/3", for the printer column
    timings: Timings = Timings()
    expires_at: str | None = None


class PortRecord(BaseModel):
    """One port of a service in a discovery record."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    port: int
    protocol: str = "http"
    #: ``http://host:port`` for an HTTP port, the preset's URL (no password) for its port.
    url: str | None = None


class DiscoveryRecord(_Model):
    """How to reach one service: a value of the discovery ConfigMap (``<service>.json``).

    Records from the operator hold in-cluster addresses; the plugin writes the same record,
    rewritten to its local port-forwards, into ``.service_discovery/<service>.json``.
    ``port``, ``base_url`` and ``health_url`` describe the first port (the plan's fields);
    ``ports`` every port. Credentials are never part of a record: ``password_secret`` only
    names the secret that holds the password.
    """

    model_config = ConfigDict(alias_generator=None, extra="ignore", frozen=True)

    schema_version: int = DISCOVERY_SCHEMA_VERSION
    name: str
    host: str
    port: int
    base_url: str | None = None
    health_url: str | None = None
    ws_url: str | None = None
    ports: list[PortRecord] = []
    #: A preset's connection URL without the password (``postgresql://app@host:5432/app``).
    url: str | None = None
    username: str | None = None
    database: str | None = None
    password_secret: str | None = None

    @classmethod
    def for_service(cls, svc: ServiceSpec, host: str, port: int | None = None) -> DiscoveryRecord:
        """The record of ``svc`` at ``host``; ``port`` replaces its first port (local mode)."""
        ports = svc.effective_ports()
        if port is not None:
            ports = [ports[0].model_copy(update={"port": port}), *ports[1:]]
        defaults = svc.defaults
        username = database = password = None
        if defaults is not None:
            username = svc.env_value(defaults.user_env) if defaults.user_env else None
            database = svc.env_value(defaults.database_env) if defaults.database_env else None
            password = password_secret(svc.name)
            password = next(
                (e.secret for e in svc.effective_env() if e.name == defaults.password_env),
                password,
            )

        def port_url(p: PortSpec) -> str | None:
            if p.protocol == "http":
                return f"http://{host}:{p.port}"
            if defaults is not None and p is ports[0]:
                user = f"{username}@" if username else ""
                path = f"/{database}" if database else ""
                return f"{defaults.scheme}://{user}{host}:{p.port}{path}"
            return None

        main = ports[0]
        records = [
            PortRecord(name=p.name, port=p.port, protocol=p.protocol, url=port_url(p))
            for p in ports
        ]
        base = records[0].url if main.protocol == "http" else None
        probe = svc.effective_probe()
        health = None
        if base is not None:
            http = probe.http
            if http is not None and (http.port is None or http.port == main.name):
                health = f"{base}{http.path}"
            elif http is None:
                health = None
        ws = f"ws://{host}:{main.port}{svc.websocket_path}" if svc.websocket_path else None
        return cls(
            name=svc.name,
            host=host,
            port=main.port,
            base_url=base,
            health_url=health,
            ws_url=ws,
            ports=records,
            url=records[0].url if defaults is not None else None,
            username=username,
            database=database,
            password_secret=password,
        )

    def port_named(self, name: str | None) -> PortRecord:
        """The port called ``name`` (the first for None); KeyError if there is none."""
        if not self.ports:
            return PortRecord(name="http", port=self.port, url=self.base_url)
        if name is None:
            return self.ports[0]
        for port in self.ports:
            if port.name == name:
                return port
        raise KeyError(name)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)


def validation_problems(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field.path: problem; ...`` (``spec`` for the root)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
    )


def spec_hash(spec: TestEnvironmentSpec) -> str:
    """A stable hash of what an environment runs (the lease is not part of it): the key of
    reuse and of pool claims, computed the same way by clients and the operator."""
    wire = spec.model_copy(update={"lease": None}).to_wire()
    canonical = json.dumps(wire, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# -- TestEnvironmentPool ---------------------------------------------------------------------


class TestEnvironmentPoolSpec(_Model):
    """A warm pool: the operator keeps ``size`` environments of ``template`` Ready; a client
    claims one (it leaves the pool) and the pool refills in the background."""

    __test__ = False
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.size <= self.maxSize",
                    "message": "size must not exceed maxSize",
                },
                {
                    "rule": "!has(self.template.lease)",
                    "message": "template.lease must be unset: a pool's environments have no "
                    "lease until a client claims one (the client sets its own)",
                },
                {
                    "rule": "!has(self.template.__namespace__)",
                    "message": "template.namespace must be unset: every environment of the "
                    "pool gets its own namespace",
                },
            ]
        }
    )

    #: How many Ready, unclaimed environments to keep.
    size: Annotated[int, Field(ge=0, le=MAX_POOL_SIZE)] = 1
    #: The most environments the pool may have at once, claimed ones included: a quota on
    #: what its clients can hold (claims beyond it wait for a refill or start fresh).
    max_size: Annotated[int, Field(ge=1, le=MAX_POOL_SIZE)] = 10
    #: The spec of every environment (a TestEnvironment's spec, without lease or namespace).
    template: TestEnvironmentSpec = Field(default_factory=TestEnvironmentSpec)


class TestEnvironmentPoolStatus(_Model):
    __test__ = False

    #: Unclaimed environments that are Ready.
    ready: int = 0
    #: Unclaimed environments still starting (the refill in progress).
    refilling: int = 0
    #: Environments claimed from the pool that still exist.
    claimed: int = 0
    #: The spec hash of the template: a client's spec with this hash can claim.
    spec_hash: str | None = None
    #: Why the pool cannot refill (its maxSize, the operator's limit, a refused creation).
    message: str | None = None
    observed_generation: int | None = None
