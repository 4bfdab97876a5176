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

import re
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
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
MANAGED_BY: Final = "testenv-operator"
FIELD_MANAGER: Final = "testenv-operator"

# Annotation a client (the pytest plugin) refreshes to keep a leased environment alive.
LEASE_RENEWED_ANNOTATION: Final = f"{GROUP}/lease-renewed-at"
# Label on every object the operator creates, naming its environment.
ENVIRONMENT_LABEL: Final = f"{GROUP}/environment"
# Label with a hash of the spec, used by the plugin to reuse an identical environment.
SPEC_HASH_LABEL: Final = f"{GROUP}/spec-hash"
# Label on a service's pods, Deployment and Service, naming the service.
SERVICE_LABEL: Final = f"{GROUP}/service"


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
# [prefix/]name: the prefix a DNS subdomain (at most 253 characters, LABEL_KEY_PREFIX_SIZE),
# the name at most 63 characters.
LABEL_KEY: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_KEY_PREFIX_SIZE: Final = r"^([^/]{1,253}/)?[^/]*$"
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
# Namespaces an environment may never take over.
PROTECTED_NAMESPACES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")
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


class EnvVar(_Model):
    """A plain environment variable for a service's container."""

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
    value: Annotated[str, Field(max_length=4096, pattern=ENV_VALUE)] = ""

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if _reserved_env_name(name):
            raise ValueError(
                f"env name {name!r} is reserved: the operator sets PORT and TESTENV_* itself"
            )
        return name


class ResourceList(_Model):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(_Model):
    requests: ResourceList = ResourceList(cpu="50m", memory="64Mi")
    limits: ResourceList = ResourceList(cpu="500m", memory="256Mi")


class ServiceSpec(_Model):
    """One service of an environment: a Deployment plus a Service of the same name."""

    name: Annotated[str, Field(pattern=DNS1035_LABEL, min_length=1, max_length=40)]
    image: Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE)]
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    health_path: Annotated[str, Field(pattern=r"^/\S*$", max_length=256)] = "/health"
    websocket_path: Annotated[str | None, Field(pattern=r"^/\S*$", max_length=256)] = None
    env: Annotated[
        list[EnvVar],
        Field(
            max_length=64,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ] = []
    args: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(max_length=64)] = []
    replicas: Annotated[int, Field(ge=0, le=10)] = 1
    resources: Resources = Resources()
    readiness_timeout: Duration = "120s"

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [e.name for e in env]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate env names: {', '.join(dupes)}")
        return env


def reference_services(tag: str = REFERENCE_IMAGE_TAG) -> list[ServiceSpec]:
    """The default set: the reference auth, backend and frontend services.

    Ports are distinct (8080, 8081, 8082): service ports must be unique in an environment,
    so the same environment also runs as local processes on one host.
    """
    return [
        ServiceSpec(
            name="auth",
            image=f"testenv/auth:{tag}",
            env=[EnvVar(name="AUTH_SEED_USERS", value="test@example.com:password")],
        ),
        ServiceSpec(
            name="backend", image=f"testenv/backend:{tag}", port=8081, websocket_path="/ws"
        ),
        ServiceSpec(name="frontend", image=f"testenv/frontend:{tag}", port=8082),
    ]


def spec_text_size(services: list[ServiceSpec]) -> int:
    """Characters of env names, env values and args over all services (MAX_SPEC_TEXT)."""
    return sum(
        sum(len(e.name) + len(e.value) for e in s.env) + sum(len(a) for a in s.args)
        for s in services
    )


_SPEC_TEXT_RULE: Final[dict[str, Any]] = {
    "rule": "!has(self.services) || self.services.map(s, "
    "(has(s.env) ? s.env.map(e, size(e.name) + (has(e.value) ? size(e.value) : 0)).sum() : 0)"
    " + (has(s.args) ? s.args.map(a, size(a)).sum() : 0)).sum() <= " + str(MAX_SPEC_TEXT),
    "message": f"env names, env values and args of all services may hold at most "
    f"{MAX_SPEC_TEXT} characters: put large configuration in the image",
}


class TestEnvironmentSpec(_Model):
    """What a user declares. Every field has a default: ``spec: {}`` is a valid environment."""

    __test__ = False  # not a pytest test class, despite the name
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [dict(_SPEC_TEXT_RULE)]},
    )

    namespace: Annotated[
        str | None,
        Field(
            pattern=DNS1123_LABEL,
            max_length=63,
            json_schema_extra={
                "x-kubernetes-validations": [
                    {
                        "rule": "!(self in " + repr(list(PROTECTED_NAMESPACES)) + ")",
                        "message": "namespace must not be a system namespace "
                        "(default, kube-system, kube-public, kube-node-lease)",
                    }
                ]
            },
        ),
    ] = None
    services: Annotated[
        list[ServiceSpec],
        Field(
            max_length=20,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "x-kubernetes-validations": [
                    {
                        "rule": "self.all(a, self.exists_one(b, b.port == a.port))",
                        "message": "service ports must be unique: give every service its own port",
                    }
                ],
            },
        ),
    ] = Field(default_factory=reference_services)
    ttl: Duration = "1h"
    lease: Duration | None = None
    labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]],
        Field(
            max_length=32,
            json_schema_extra={
                "x-kubernetes-validations": [
                    {
                        "rule": "self.all(k, k.matches("
                        + _cel_string(LABEL_KEY_PREFIX_SIZE)
                        + ") && k.matches("
                        + _cel_string(LABEL_KEY)
                        + "))",
                        "message": "label keys must be valid Kubernetes label keys "
                        "([prefix/]name; prefix: a DNS subdomain of at most 253 characters; "
                        "name: at most 63 alphanumerics, '-', '_', '.')",
                    }
                ]
            },
        ),
    ] = {}

    @model_validator(mode="after")
    def _text_bounded(self) -> TestEnvironmentSpec:
        total = spec_text_size(self.services)
        if total > MAX_SPEC_TEXT:
            raise ValueError(
                f"env names, env values and args of all services hold {total} characters; "
                f"at most {MAX_SPEC_TEXT}: put large configuration in the image"
            )
        return self

    @model_validator(mode="after")
    def _unique_services(self) -> TestEnvironmentSpec:
        for attr in ("name", "port"):
            values = [getattr(s, attr) for s in self.services]
            dupes = sorted({str(v) for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"service {attr}s must be unique; repeated: {', '.join(dupes)}")
        return self

    @field_validator("namespace")
    @classmethod
    def _not_protected(cls, value: str | None) -> str | None:
        if value in PROTECTED_NAMESPACES:
            raise ValueError(f"namespace must not be a system namespace, got {value!r}")
        return value

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        bad = sorted(
            k
            for k in labels
            if not re.fullmatch(LABEL_KEY_PREFIX_SIZE, k) or not re.fullmatch(LABEL_KEY, k)
        )
        if bad:
            raise ValueError(f"invalid label keys: {', '.join(bad)}")
        return labels

    def namespace_for(self, env_name: str) -> str:
        """The environment's namespace: ``spec.namespace`` or ``testenv-<name>``."""
        return self.namespace or f"testenv-{env_name}"[:63].rstrip("-")

    def service(self, name: str) -> ServiceSpec:
        for svc in self.services:
            if svc.name == name:
                return svc
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
    ready_services: str | None = None  # "2/3", for the printer column
    timings: Timings = Timings()
    expires_at: str | None = None


class DiscoveryRecord(_Model):
    """How to reach one service: a value of the discovery ConfigMap (``<service>.json``).

    Records from the operator hold in-cluster addresses; the plugin writes the same record,
    rewritten to its local port-forward, into ``.service_discovery/<service>.json``.
    """

    model_config = ConfigDict(alias_generator=None, extra="ignore", frozen=True)

    schema_version: int = DISCOVERY_SCHEMA_VERSION
    name: str
    host: str
    port: int
    base_url: str
    health_url: str
    ws_url: str | None = None

    @classmethod
    def for_service(cls, svc: ServiceSpec, host: str, port: int | None = None) -> DiscoveryRecord:
        port = port or svc.port
        base = f"http://{host}:{port}"
        ws = f"ws://{host}:{port}{svc.websocket_path}" if svc.websocket_path else None
        return cls(
            name=svc.name,
            host=host,
            port=port,
            base_url=base,
            health_url=f"{base}{svc.health_path}",
            ws_url=ws,
        )

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)
