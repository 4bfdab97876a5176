"""Render the objects of an environment from the Jinja2 templates (pure functions, no I/O).

Templates live in ``templates/*.yaml.j2`` (package data). Every value is emitted through the
``tojson`` filter (JSON is YAML), so no value can break the YAML structure; the templates only
carry the shape of the objects.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jinja2
import yaml

from testenv.api import (
    API_VERSION,
    DISCOVERY_CONFIGMAP,
    ENV_SECRET_KEY,
    ENVIRONMENT_LABEL,
    KIND,
    MANAGED_BY,
    SERVICE_LABEL,
    SERVICES_SECRET,
    DiscoveryRecord,
    ServiceSpec,
    TestEnvironmentSpec,
    contract_env,
    pod_selector,
)

Obj = dict[str, Any]

SECRET_KEY = "secret-key"

QUOTA: dict[str, str] = {
    "pods": "100",
    "services": "40",
    "services.nodeports": "0",
    "services.loadbalancers": "0",
    "requests.cpu": "8",
    "requests.memory": "16Gi",
    "limits.cpu": "32",
    "limits.memory": "32Gi",
}
LIMITS: dict[str, dict[str, str]] = {
    "default": {"cpu": "500m", "memory": "256Mi"},
    "defaultRequest": {"cpu": "50m", "memory": "64Mi"},
    "max": {"cpu": "4", "memory": "4Gi"},
}


def _tojson(value: Any) -> str:
    """JSON that YAML reads back exactly: every character outside printable ASCII escaped
    (YAML refuses raw DEL, C1 controls and some Unicode that JSON leaves alone)."""
    return json.dumps(value, ensure_ascii=True, separators=(", ", ": ")).replace("\x7f", "\\u007f")


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("testenv_operator", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["tojson"] = _tojson
    return env


def render_template(template: str, **context: Any) -> Obj:
    """Render one template into one object."""
    text = _environment().get_template(template).render(**context)
    obj = yaml.safe_load(text)
    if not isinstance(obj, dict):
        raise ValueError(f"template {template} did not render a mapping")
    return obj


def owner_reference(name: str, uid: str) -> Obj:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid}


def base_labels(name: str, spec: TestEnvironmentSpec) -> dict[str, str]:
    """Labels on every object of the environment (the spec's labels first, ours win)."""
    return {
        **spec.labels,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "testenv",
        ENVIRONMENT_LABEL: name,
    }


def service_selector(name: str, service: ServiceSpec) -> dict[str, str]:
    return pod_selector(name, service.name)


def service_host(service: ServiceSpec, namespace: str) -> str:
    return f"{service.name}.{namespace}.svc.cluster.local"


def service_url(service: ServiceSpec, namespace: str) -> str:
    return f"http://{service_host(service, namespace)}:{service.port}"


def container_env(
    name: str, namespace: str, spec: TestEnvironmentSpec, service: ServiceSpec
) -> list[Obj]:
    """The environment contract of ARCHITECTURE.md, then the service's own env."""
    plain = contract_env(
        environment=name,
        namespace=namespace,
        service=service.name,
        port=service.port,
        urls={other.name: service_url(other, namespace) for other in spec.services},
    )
    env: list[Obj] = [{"name": k, "value": v} for k, v in plain.items()]
    env.append(
        {
            "name": ENV_SECRET_KEY,
            "valueFrom": {"secretKeyRef": {"name": SERVICES_SECRET, "key": SECRET_KEY}},
        }
    )
    env += [{"name": var.name, "value": var.value} for var in service.env]
    return env


def _context(name: str, uid: str, spec: TestEnvironmentSpec) -> dict[str, Any]:
    namespace = spec.namespace_for(name)
    labels = base_labels(name, spec)
    return {
        "owner": owner_reference(name, uid),
        "namespace": namespace,
        "labels": labels,
    }


def render_namespace(name: str, uid: str, spec: TestEnvironmentSpec) -> Obj:
    ctx = _context(name, uid, spec)
    ns_labels = {
        **ctx["labels"],
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    return render_template("namespace.yaml.j2", namespace_labels=ns_labels, **ctx)


def render_service(name: str, uid: str, spec: TestEnvironmentSpec, service: ServiceSpec) -> Obj:
    ctx = _context(name, uid, spec)
    return render_template(
        "service.yaml.j2",
        service=service,
        service_labels=_service_labels(name, spec, service),
        selector=service_selector(name, service),
        **ctx,
    )


def _service_labels(name: str, spec: TestEnvironmentSpec, service: ServiceSpec) -> dict[str, str]:
    return {
        **base_labels(name, spec),
        "app.kubernetes.io/name": service.name,
        "app.kubernetes.io/instance": name,
        SERVICE_LABEL: service.name,
    }


def render_deployment(name: str, uid: str, spec: TestEnvironmentSpec, service: ServiceSpec) -> Obj:
    ctx = _context(name, uid, spec)
    return render_template(
        "deployment.yaml.j2",
        service=service,
        service_labels=_service_labels(name, spec, service),
        selector=service_selector(name, service),
        env=container_env(name, ctx["namespace"], spec, service),
        resources=service.resources.to_wire(),
        **ctx,
    )


def render_environment(name: str, uid: str, spec: TestEnvironmentSpec) -> list[Obj]:
    """Everything server-side applied on every reconcile, the Namespace first.

    Not included: the Secret (created once, see :func:`render_secret`) and the discovery
    ConfigMap (published once all services are Ready, see :func:`render_discovery`).
    """
    ctx = _context(name, uid, spec)
    objects = [
        render_namespace(name, uid, spec),
        render_template("resourcequota.yaml.j2", quota=QUOTA, **ctx),
        render_template("limitrange.yaml.j2", limits=LIMITS, **ctx),
        render_template("networkpolicy-default-deny.yaml.j2", **ctx),
        render_template(
            "networkpolicy-allow.yaml.j2",
            service_ports=sorted({s.port for s in spec.services}),
            **ctx,
        ),
    ]
    for service in spec.services:
        objects.append(render_deployment(name, uid, spec, service))
        objects.append(render_service(name, uid, spec, service))
    return objects


def render_secret(name: str, uid: str, spec: TestEnvironmentSpec, secret_key: str) -> Obj:
    ctx = _context(name, uid, spec)
    return render_template(
        "secret.yaml.j2", secret_name=SERVICES_SECRET, secret_key=secret_key, **ctx
    )


def discovery_records(name: str, spec: TestEnvironmentSpec) -> dict[str, DiscoveryRecord]:
    namespace = spec.namespace_for(name)
    return {
        svc.name: DiscoveryRecord.for_service(svc, service_host(svc, namespace))
        for svc in spec.services
    }


def render_discovery(name: str, uid: str, spec: TestEnvironmentSpec) -> Obj:
    ctx = _context(name, uid, spec)
    records = {f"{svc}.json": rec.to_json() for svc, rec in discovery_records(name, spec).items()}
    return render_template(
        "discovery.yaml.j2", discovery_name=DISCOVERY_CONFIGMAP, records=records, **ctx
    )
