"""Render the objects of an environment from the Jinja2 templates (pure functions, no I/O).

Templates live in ``templates/*.yaml.j2`` (package data). Every value is emitted through the
``tojson`` filter (JSON is YAML), so no value can break the YAML structure; the templates only
carry the shape of the objects.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import secrets
import string
from collections.abc import Collection
from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2
import yaml

from testenv.api import (
    API_VERSION,
    CREDENTIALS_SECRET,
    DISCOVERY_CONFIGMAP,
    ENV_PORT,
    ENV_SECRET_KEY,
    ENVIRONMENT_LABEL,
    JOB_LABEL,
    KIND,
    MANAGED_BY,
    PROJECT_VERSION,
    SECRETS_MOUNT_PATH,
    SERVICE_LABEL,
    SERVICES_SECRET,
    TEMPLATE_HASH_ANNOTATION,
    DiscoveryRecord,
    JobSpec,
    SecretSpec,
    ServiceRef,
    ServiceSpec,
    TestEnvironmentSpec,
    contract_env,
    parse_duration,
    pod_selector,
)
from testenv_operator.pods import pod_name

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


#: An escaped backslash, or a character beyond the BMP as JSON escapes it (a surrogate pair).
_JSON_ESCAPE = re.compile(r"(\\\\)|\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def _yaml_escape(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1)
    high, low = int(match.group(2), 16), int(match.group(3), 16)
    return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}"


def _tojson(value: Any) -> str:
    """JSON that YAML reads back exactly: every character outside printable ASCII escaped
    (YAML refuses raw DEL, C1 controls and some Unicode that JSON leaves alone), those beyond
    the BMP as YAML's ``\\U`` escapes (YAML refuses JSON's surrogate pairs)."""
    text = json.dumps(value, ensure_ascii=True, separators=(", ", ": ")).replace("\x7f", "\\u007f")
    return _JSON_ESCAPE.sub(_yaml_escape, text)


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


_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def render_template(template: str, **context: Any) -> Obj:
    """Render one template into one object."""
    text = _environment().get_template(template).render(**context)
    # libyaml's loader: the pure-Python one was a quarter of the operator's CPU under load.
    obj = yaml.load(text, Loader=_SAFE_LOADER)
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
    """The in-cluster URL of a service's first port (a preset's without its password)."""
    record = DiscoveryRecord.for_service(service, service_host(service, namespace))
    port = record.ports[0]
    return port.url or f"tcp://{record.host}:{port.port}"


def _password_variable(service: str) -> str:
    return f"TESTENV_PASSWORD_{service.upper().replace('-', '_')}"


def _secret_ref(secret: str) -> Obj:
    return {"secretKeyRef": {"name": CREDENTIALS_SECRET, "key": secret}}


def _literal(value: str) -> str:
    """A literal env value as the kubelet reads it: ``$(X)`` would expand another variable."""
    return value.replace("$(", "$$(")


def _service_value(
    ref: ServiceRef, spec: TestEnvironmentSpec, namespace: str, env: list[Obj]
) -> str:
    target = spec.service(ref.name)
    record = DiscoveryRecord.for_service(target, service_host(target, namespace))
    port = record.port_named(ref.port)
    if ref.field == "host":
        return record.host
    if ref.field == "port":
        return str(port.port)
    if ref.field == "address":
        return f"{record.host}:{port.port}"
    if ref.field == "dsn":
        defaults = target.defaults
        assert defaults is not None  # the models refuse a dsn of a service without a preset
        variable = _password_variable(target.name)
        if not any(e["name"] == variable for e in env):
            env.append({"name": variable, "valueFrom": _secret_ref(record.password_secret or "")})
        user = record.username or ""
        path = f"/{record.database}" if record.database else ""
        return f"{defaults.scheme}://{user}:$({variable})@{record.host}:{port.port}{path}"
    return port.url or f"tcp://{record.host}:{port.port}"


def container_env(
    name: str, namespace: str, spec: TestEnvironmentSpec, workload: ServiceSpec | JobSpec
) -> list[Obj]:
    """The environment contract of ARCHITECTURE.md, then the workload's own env."""
    plain = contract_env(
        environment=name,
        namespace=namespace,
        service=workload.name,
        port=workload.main_port.port if isinstance(workload, ServiceSpec) else 0,
        urls={other.name: service_url(other, namespace) for other in spec.services},
    )
    if not isinstance(workload, ServiceSpec):
        plain.pop(ENV_PORT)
    env: list[Obj] = [{"name": k, "value": v} for k, v in plain.items()]
    if workload.secret_key:
        env.append(
            {
                "name": ENV_SECRET_KEY,
                "valueFrom": {"secretKeyRef": {"name": SERVICES_SECRET, "key": SECRET_KEY}},
            }
        )
    for var in workload.effective_env():
        if var.secret is not None:
            env.append({"name": var.name, "valueFrom": _secret_ref(var.secret)})
        elif var.service is not None:
            value = _service_value(var.service, spec, namespace, env)
            env.append({"name": var.name, "value": value})
        else:
            env.append({"name": var.name, "value": _literal(var.value or "")})
    return env


def _probe(service: ServiceSpec) -> Obj:
    probe = service.effective_probe()
    timing = {
        "periodSeconds": probe.period_seconds,
        "timeoutSeconds": probe.timeout_seconds,
        "failureThreshold": probe.failure_threshold,
    }
    if probe.http is not None:
        port = service.port_named(probe.http.port).name
        return {"httpGet": {"path": probe.http.path, "port": port}, **timing}
    if probe.tcp is not None:
        return {"tcpSocket": {"port": service.port_named(probe.tcp.port).name}, **timing}
    assert probe.exec is not None
    return {"exec": {"command": list(probe.exec.command)}, **timing}


DEFAULT_WAIT_IMAGE = f"testenv/operator:{PROJECT_VERSION}"
#: Addresses an environment never reaches, even with ``network.egress: internet``: private
#: networks (pods, Services, nodes), loopback, link-local (cloud metadata), shared address
#: space, documentation ranges (the local cluster's node), multicast and reserved.
PRIVATE_CIDRS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/3",
)
#: Prefixes of the images loaded into the nodes by `make images` (never pulled).
LOCAL_IMAGE_PREFIXES = ("testenv/", "docker.io/testenv/")


@dataclass(frozen=True)
class RenderOptions:
    """What rendering needs from the operator's settings: the images it uses itself, how
    images are pulled, which addresses "the outside world" excludes."""

    #: The init container that waits for dependencies (the operator's image).
    wait: str = DEFAULT_WAIT_IMAGE
    #: Mount the Secret keys a container's env reads (see testenv.api.SECRETS_MOUNT_PATH).
    mount_secrets: bool = True
    #: Images loaded into the nodes: ``IfNotPresent``. Every other image is pulled
    #: ``Always``, so that an image cached on a node for someone else cannot be run without
    #: the registry's say (its credentials are checked on every pull).
    local: tuple[str, ...] = LOCAL_IMAGE_PREFIXES

    #: Never reachable through ``network.egress: internet``: the cluster's, the nodes' and
    #: every other private or special-purpose range.
    private_cidrs: tuple[str, ...] = PRIVATE_CIDRS

    def pull_policy(self, image: str) -> str:
        return "IfNotPresent" if image.startswith(self.local) else "Always"


DEFAULT_OPTIONS = RenderOptions()
#: The init container's program: wait until every ``host:port`` argument accepts a TCP
#: connection. A pod being Ready is not enough: its Service routes to it a moment later.
WAIT_PROGRAM = """\
import socket, sys, time
for address in sys.argv[1:]:
    host, _, port = address.rpartition(":")
    attempt = 0
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            break
        except OSError as exc:
            if attempt % 25 == 0:
                print(f"waiting for {address}: {exc}", flush=True)
            attempt += 1
            time.sleep(0.2)
    print(f"{address} accepts connections", flush=True)
"""
WAIT_CONTAINER = "wait-for-dependencies"


def _wait_container(
    spec: TestEnvironmentSpec, namespace: str, workload: ServiceSpec | JobSpec, image: str
) -> Obj | None:
    """An init container that waits for the addresses of the services ``workload`` depends
    on (None without such dependencies)."""
    services = {s.name: s for s in spec.services}
    addresses = [
        f"{service_host(services[d], namespace)}:{services[d].main_port.port}"
        for d in workload.depends_on
        if d in services
    ]
    if not addresses:
        return None
    return {
        "name": WAIT_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",  # the operator's own image
        "command": ["python3", "-c", WAIT_PROGRAM, *addresses],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


SECRETS_VOLUME = "testenv-secrets"


def secrets_volume(env: list[Obj]) -> Obj | None:
    """A projected volume of exactly the Secret keys ``env`` reads, each at
    ``<secret>/<key>``: mounted at SECRETS_MOUNT_PATH, it has the kubelet fetch them before it
    creates the container (see testenv.api.SECRETS_MOUNT_PATH for why). None if it reads
    none."""
    keys: dict[str, set[str]] = {}
    for var in env:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref is not None:
            keys.setdefault(ref["name"], set()).add(ref["key"])
    sources = [
        {
            "secret": {
                "name": secret,
                "items": [{"key": k, "path": f"{secret}/{k}"} for k in sorted(names)],
            }
        }
        for secret, names in sorted(keys.items())
    ]
    if not sources:
        return None
    return {"name": SECRETS_VOLUME, "projected": {"defaultMode": 0o440, "sources": sources}}


def files_configmap_name(workload: ServiceSpec | JobSpec) -> str:
    return f"{workload.name}-files"


def _file_key(index: int) -> str:
    return f"file-{index}"


def _container(
    name: str,
    namespace: str,
    spec: TestEnvironmentSpec,
    workload: ServiceSpec | JobSpec,
    options: RenderOptions = DEFAULT_OPTIONS,
) -> dict[str, Any]:
    """What the pod template needs beyond the workload itself."""
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    for i, dir_ in enumerate(workload.effective_scratch()):
        mounts.append({"name": f"scratch-{i}", "mountPath": dir_.path})
        volumes.append({"name": f"scratch-{i}", "emptyDir": {"sizeLimit": dir_.size_limit}})
    for i, file in enumerate(workload.files):
        mounts.append(
            {"name": "files", "mountPath": file.path, "subPath": _file_key(i), "readOnly": True}
        )
    if workload.files:
        volumes.append({"name": "files", "configMap": {"name": files_configmap_name(workload)}})
    env = container_env(name, namespace, spec, workload)
    secrets = secrets_volume(env) if options.mount_secrets else None
    if secrets is not None:
        mounts.append({"name": SECRETS_VOLUME, "mountPath": SECRETS_MOUNT_PATH, "readOnly": True})
        volumes.append(secrets)
    container: dict[str, Any] = {
        "env": env,
        "mounts": mounts,
        "volumes": volumes,
        "ports": [],
        "probe": None,
        "restart_policy": None,
        "init": _wait_container(spec, namespace, workload, options.wait),
    }
    if isinstance(workload, ServiceSpec):
        container["image"] = workload.effective_image()
        container["ports"] = [
            {"name": p.name, "containerPort": p.port, "protocol": "TCP"}
            for p in workload.effective_ports()
        ]
        container["probe"] = _probe(workload)
    else:
        container["image"] = workload.image
        container["restart_policy"] = "Never"
    container["pull_policy"] = options.pull_policy(container["image"])
    return container


def _template_hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pod_annotations(workload: ServiceSpec | JobSpec) -> dict[str, str]:
    """A hash of the files: pods restart when a file changes (subPath mounts never update)."""
    if not workload.files:
        return {}
    return {TEMPLATE_HASH_ANNOTATION: _template_hash([f.to_wire() for f in workload.files])}


def _context(name: str, uid: str, spec: TestEnvironmentSpec) -> dict[str, Any]:
    namespace = spec.namespace_for(name)
    labels = base_labels(name, spec)
    return {
        "owner": owner_reference(name, uid),
        "namespace": namespace,
        "labels": labels,
    }


def render_namespace(name: str, uid: str, spec: TestEnvironmentSpec) -> Obj:
    """The namespace: only the operator's labels (never the spec's: a namespace label can
    switch on Pod Security exemptions, sidecar injection and the like)."""
    ctx = _context(name, uid, spec)
    ns_labels = {
        **base_labels(name, spec.model_copy(update={"labels": {}})),
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    return render_template("namespace.yaml.j2", namespace_labels=ns_labels, **ctx)


def render_service(name: str, uid: str, spec: TestEnvironmentSpec, service: ServiceSpec) -> Obj:
    ctx = _context(name, uid, spec)
    ports = [
        {"name": p.name, "protocol": "TCP", "port": p.port, "targetPort": p.name}
        for p in service.effective_ports()
    ]
    return render_template(
        "service.yaml.j2",
        service=service,
        service_labels=_service_labels(name, spec, service),
        selector=service_selector(name, service),
        ports=ports,
        **ctx,
    )


def _service_labels(name: str, spec: TestEnvironmentSpec, service: ServiceSpec) -> dict[str, str]:
    return {
        **base_labels(name, spec),
        "app.kubernetes.io/name": service.name,
        "app.kubernetes.io/instance": name,
        SERVICE_LABEL: service.name,
    }


def job_labels(name: str, spec: TestEnvironmentSpec, job: JobSpec) -> dict[str, str]:
    return {
        **base_labels(name, spec),
        "app.kubernetes.io/name": job.name,
        "app.kubernetes.io/instance": name,
        JOB_LABEL: job.name,
    }


def render_pods(
    name: str,
    uid: str,
    spec: TestEnvironmentSpec,
    service: ServiceSpec,
    options: RenderOptions = DEFAULT_OPTIONS,
) -> list[Obj]:
    """The ``replicas`` pods of a service (docs/decisions/0002-services-as-bare-pods.md), one
    per slot (see :mod:`pods`), each carrying ``TEMPLATE_HASH_ANNOTATION``, a hash of the pod
    as rendered (files included), which its name holds too: the reconciler tells current pods
    from outdated ones by it (see ``status.pods_ready``)."""
    ctx = _context(name, uid, spec)
    template = render_template(
        "pod.yaml.j2",
        service=service,
        service_labels=_service_labels(name, spec, service),
        container=_container(name, ctx["namespace"], spec, service, options),
        pod_annotations=_pod_annotations(service),
        **ctx,
    )
    meta = template["metadata"]
    template_hash = _template_hash(meta["labels"], meta.get("annotations"), template["spec"])
    meta.setdefault("annotations", {})[TEMPLATE_HASH_ANNOTATION] = template_hash
    pods = []
    for index in range(service.replicas):
        pod = copy.deepcopy(template)
        pod["metadata"]["name"] = pod_name(service.name, template_hash, index)
        pods.append(pod)
    return pods


def pod_template_hash(
    name: str,
    uid: str,
    spec: TestEnvironmentSpec,
    service: ServiceSpec,
    options: RenderOptions = DEFAULT_OPTIONS,
) -> str:
    """The template hash of a service's pods (what :func:`render_pods` puts on them)."""
    one = render_pods(name, uid, spec, service.model_copy(update={"replicas": 1}), options)[0]
    return str(one["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION])


def render_job(
    name: str,
    uid: str,
    spec: TestEnvironmentSpec,
    job: JobSpec,
    options: RenderOptions = DEFAULT_OPTIONS,
) -> Obj:
    """A Job; its ``TEMPLATE_HASH_ANNOTATION`` changes with anything it is rendered from."""
    ctx = _context(name, uid, spec)
    labels = job_labels(name, spec, job)
    container = _container(name, ctx["namespace"], spec, job, options)
    obj = render_template(
        "job.yaml.j2",
        job=job,
        job_labels=labels,
        container=container,
        pod_annotations=_pod_annotations(job),
        deadline_seconds=int(parse_duration(job.timeout).total_seconds()),
        **ctx,
    )
    obj["metadata"].setdefault("annotations", {})[TEMPLATE_HASH_ANNOTATION] = _template_hash(
        obj["spec"]
    )
    return obj


def render_files(
    name: str, uid: str, spec: TestEnvironmentSpec, workload: ServiceSpec | JobSpec
) -> Obj | None:
    """The ConfigMap of a workload's files (None without files)."""
    if not workload.files:
        return None
    ctx = _context(name, uid, spec)
    labels = {**base_labels(name, spec), "app.kubernetes.io/name": workload.name}
    return render_template(
        "files.yaml.j2",
        configmap_name=files_configmap_name(workload),
        configmap_labels=labels,
        files={_file_key(i): f.content for i, f in enumerate(workload.files)},
        **ctx,
    )


def render_workload(
    name: str,
    uid: str,
    spec: TestEnvironmentSpec,
    workload: ServiceSpec | JobSpec,
    options: RenderOptions = DEFAULT_OPTIONS,
) -> list[Obj]:
    """The objects that start a service (its files, pods) or a job (files, Job)."""
    files = render_files(name, uid, spec, workload)
    main = (
        render_pods(name, uid, spec, workload, options)
        if isinstance(workload, ServiceSpec)
        else [render_job(name, uid, spec, workload, options)]
    )
    return [files, *main] if files is not None else main


def render_environment(
    name: str,
    uid: str,
    spec: TestEnvironmentSpec,
    started: Collection[str] | None = None,
    options: RenderOptions = DEFAULT_OPTIONS,
) -> list[Obj]:
    """Everything server-side applied on every reconcile, the Namespace first.

    ``started``: the services and jobs whose pods or Job may exist (the others wait for
    their dependencies); None: all. Not included: the Secrets (created once, see
    :func:`render_secret`, :func:`render_credentials`) and the discovery ConfigMap
    (published once all services are Ready, see :func:`render_discovery`).
    """
    ctx = _context(name, uid, spec)
    objects = [
        render_namespace(name, uid, spec),
        render_template("resourcequota.yaml.j2", quota=QUOTA, **ctx),
        render_template("limitrange.yaml.j2", limits=LIMITS, **ctx),
        render_template("networkpolicy-default-deny.yaml.j2", **ctx),
        render_template("networkpolicy-allow.yaml.j2", **ctx),
    ]
    if spec.network.egress == "internet":
        objects.append(
            render_template(
                "networkpolicy-internet.yaml.j2", private_cidrs=options.private_cidrs, **ctx
            )
        )
    for service in spec.services:
        objects.append(render_service(name, uid, spec, service))
    for workload in spec.workloads:
        if started is None or workload.name in started:
            objects += render_workload(name, uid, spec, workload, options)
    return objects


ALPHABETS: dict[str, str] = {
    "alphanumeric": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
    "urlsafe": string.ascii_letters + string.digits + "-_",
}


def generate_secret(spec: SecretSpec) -> str:
    alphabet = ALPHABETS[spec.alphabet]
    return "".join(secrets.choice(alphabet) for _ in range(spec.length))


def render_credentials(name: str, uid: str, spec: TestEnvironmentSpec, values: Obj) -> Obj:
    """The Secret of generated credentials holding ``values`` (secret name -> value)."""
    ctx = _context(name, uid, spec)
    return render_template(
        "credentials.yaml.j2", secret_name=CREDENTIALS_SECRET, values=dict(values), **ctx
    )


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
