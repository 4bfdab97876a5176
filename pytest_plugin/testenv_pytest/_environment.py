"""Real mode: a TestEnvironment custom resource, watched until Ready, then port-forwarded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kr8s
import kr8s.asyncio
import yaml
from kr8s.asyncio.objects import Namespace, new_class
from pydantic import ValidationError
from testenv_operator.api import (
    API_VERSION,
    DISCOVERY_CONFIGMAP,
    GROUP,
    KIND,
    LEASE_RENEWED_ANNOTATION,
    PLURAL,
    SPEC_HASH_LABEL,
    DiscoveryRecord,
    Phase,
    TestEnvironmentSpec,
    TestEnvironmentStatus,
    parse_duration,
)

from ._context import EnvironmentInfo, Progress, StartResult
from ._errors import (
    ClusterUnreachableError,
    EnvironmentFailedError,
    OperatorNotInstalledError,
)
from ._portforward import ServiceForward, verify

CRD_NAME = f"{PLURAL}.{GROUP}"
CREATED_BY_LABEL = f"{GROUP}/created-by"
REUSABLE_LABEL = f"{GROUP}/reusable"
CREATED_BY = "pytest-plugin"
INSTALL_HINT = (
    "install the operator: helm install testenv charts/testenv-operator "
    "(or kubectl apply -f manifests/)"
)

TestEnvironment: Any = new_class(
    kind=KIND, version=API_VERSION, namespaced=False, plural=PLURAL, asyncio=True
)
# How long teardown waits for the environment and its namespace to be gone before warning.
TEARDOWN_TIMEOUT = 90.0


def load_spec(path: Path | None) -> tuple[TestEnvironmentSpec, dict[str, str]]:
    """The spec (and extra metadata labels) from ``--testenv-spec``: a whole TestEnvironment
    resource or only its spec. ``None``: the default spec (the reference services)."""
    if path is None:
        return TestEnvironmentSpec(), {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise EnvironmentFailedError(f"cannot read --testenv-spec {path}: {exc}") from exc
    labels: dict[str, str] = {}
    if isinstance(data, dict) and ("kind" in data or "apiVersion" in data or "spec" in data):
        labels = dict((data.get("metadata") or {}).get("labels") or {})
        data = data.get("spec") or {}
    try:
        return TestEnvironmentSpec.model_validate(data), labels
    except ValidationError as exc:
        raise EnvironmentFailedError(f"invalid spec in {path}:\n{exc}") from exc


def spec_hash(spec: TestEnvironmentSpec) -> str:
    """A stable hash of what the environment runs (the lease is not part of it)."""
    wire = spec.model_copy(update={"lease": None}).to_wire()
    canonical = json.dumps(wire, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def unique_name(prefix: str = "pytest") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(raw: dict[str, Any]) -> TestEnvironmentStatus:
    try:
        return TestEnvironmentStatus.model_validate(raw.get("status") or {})
    except ValidationError:
        # An operator newer than this plugin: read what we understand.
        status = raw.get("status") or {}
        return TestEnvironmentStatus.model_construct(
            phase=status.get("phase", Phase.PENDING),
            message=status.get("message"),
            namespace=status.get("namespace"),
            conditions=[],
            services=[],
        )


def _server_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


async def connect(kubeconfig: str | None, context: str | None) -> Any:
    """A kr8s API client, checked: the cluster answers and the CRD is installed."""
    where = f"kubeconfig={kubeconfig or '$KUBECONFIG or ~/.kube/config'}"
    if context:
        where += f", context={context}"
    try:
        api = await kr8s.asyncio.api(kubeconfig=kubeconfig, context=context)
        async with asyncio.timeout(15):
            await api.async_version()
    except Exception as exc:
        raise ClusterUnreachableError(
            f"cannot reach the Kubernetes API ({where}): {type(exc).__name__}: {exc}. "
            "Check --testenv-kubeconfig/KUBECONFIG and --testenv-context, "
            "or run without a cluster: --testenv-mode=local"
        ) from exc
    found: list[Any]
    try:
        found = [c async for c in api.async_get("customresourcedefinitions", CRD_NAME)]
    except kr8s.NotFoundError:
        found = []
    except kr8s.ServerError as exc:
        if _server_status(exc) == 404:
            found = []
        elif _server_status(exc) == 403:  # may not read CRDs: try the resource itself
            try:
                [e async for e in api.async_get(TestEnvironment, params={"limit": 1})]
                found = [True]
            except (kr8s.NotFoundError, kr8s.ServerError):
                found = []
        else:
            raise
    if not found:
        raise OperatorNotInstalledError(
            f"the CRD {CRD_NAME} is not installed in the cluster ({where}); {INSTALL_HINT}"
        )
    return api


class KubeEnvironment:
    """Provisions one TestEnvironment (or attaches to a reused/shared one)."""

    def __init__(
        self,
        spec: TestEnvironmentSpec,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        extra_labels: dict[str, str] | None = None,
        name: str | None = None,
        shared: bool = False,
        reuse: bool = False,
        keep: bool = False,
        lease: str = "2m",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.hash = spec_hash(spec)
        self.reuse = reuse
        self.keep = keep
        self.shared = shared
        # Environments that outlive the session carry no lease (their ttl still applies).
        self.spec = (
            spec.model_copy(update={"lease": None})
            if reuse or keep
            else spec
            if spec.lease
            else spec.model_copy(update={"lease": lease})
        )
        self.labels = {
            **(extra_labels or {}),
            CREATED_BY_LABEL: CREATED_BY,
            SPEC_HASH_LABEL: self.hash,
        }
        if reuse:
            self.labels[REUSABLE_LABEL] = "true"
        self.name = name or unique_name()
        self.api: Any = None
        self.obj: Any = None
        self.created = False
        self.reused = False
        self.namespace: str | None = None
        self.forwards: dict[str, ServiceForward] = {}
        self._renewer: asyncio.Task[None] | None = None
        self.renew_errors: list[str] = []
        self.teardown_message: str | None = None

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, progress: Progress) -> StartResult:
        started = time.monotonic()
        self.api = await connect(self.kubeconfig, self.context)
        if self.reuse:
            self.obj = await self._find_reusable()
            if self.obj is not None:
                self.name, self.reused = self.obj.name, True
                progress(f"testenv: reusing TestEnvironment {self.name} (spec {self.hash})")
        if self.obj is None:
            await self._create_or_get(progress)
        if self.spec.lease:
            await self._renew()
            self._renewer = asyncio.create_task(self._renew_forever())
        status = await self._wait_ready(progress, started)
        self.namespace = status.namespace
        records = await self._discovery()
        health = await self._forward_all(records, progress)
        startup = round(time.monotonic() - started, 3)
        progress(
            f"testenv: environment {self.name} ready in {startup:.1f}s (namespace {self.namespace})"
        )
        timings = {k: v for k, v in status.timings.model_dump().items() if v is not None}
        for svc in status.services:
            if svc.timings.ready is not None:
                timings[f"{svc.name}_ready"] = svc.timings.ready
        info = EnvironmentInfo(
            mode="real",
            name=self.name,
            namespace=self.namespace,
            context=self.context,
            reused=self.reused,
            kept=self.keep or self.reuse,
            shared=self.shared,
            spec_hash=self.hash,
            startup_time=startup,
            timings=timings,
        )
        return StartResult(
            records={n: f.record() for n, f in self.forwards.items()},
            environment=info,
            health=health,
        )

    def _manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": self.name,
                "labels": self.labels,
                "annotations": {LEASE_RENEWED_ANNOTATION: now_rfc3339()},
            },
            "spec": self.spec.to_wire(),
        }

    async def _create_or_get(self, progress: Progress) -> None:
        obj = TestEnvironment(self._manifest(), api=self.api)
        try:
            await obj.async_create()
            self.created = True
            lease = f", lease {self.spec.lease}" if self.spec.lease else ""
            progress(
                f"testenv: created TestEnvironment {self.name} "
                f"({len(self.spec.services)} services{lease})"
            )
        except kr8s.ServerError as exc:
            if _server_status(exc) != 409 or not self.shared:
                raise EnvironmentFailedError(
                    f"cannot create TestEnvironment {self.name}: {exc}", reason="CreateFailed"
                ) from exc
            obj = await TestEnvironment.get(self.name, api=self.api)
            progress(f"testenv: using shared TestEnvironment {self.name}")
        self.obj = obj

    async def _find_reusable(self) -> Any:
        candidates = [
            o
            async for o in self.api.async_get(
                TestEnvironment, label_selector={SPEC_HASH_LABEL: self.hash, REUSABLE_LABEL: "true"}
            )
        ]
        usable = [
            o
            for o in candidates
            if not o.metadata.get("deletionTimestamp")
            and _status(o.raw).phase not in (Phase.FAILED, Phase.TERMINATING)
        ]
        usable.sort(
            key=lambda o: (
                _status(o.raw).phase != Phase.READY,
                o.metadata.get("creationTimestamp", ""),
            )
        )
        return usable[0] if usable else None

    async def _wait_ready(self, progress: Progress, started: float) -> TestEnvironmentStatus:
        total = len(self.spec.services)
        announced: set[str] = set()

        def check(raw: dict[str, Any]) -> TestEnvironmentStatus | None:
            status = _status(raw)
            for svc in status.services:
                if svc.ready and svc.name not in announced:
                    announced.add(svc.name)
                    took = svc.timings.ready or (time.monotonic() - started)
                    progress(
                        f"testenv: {svc.name} ready ({took:.1f}s) "
                        f"[{len(announced)}/{max(total, len(status.services))}]"
                    )
            if status.phase == Phase.FAILED:
                raise EnvironmentFailedError(
                    f"TestEnvironment {self.name} failed: {status.message or 'no message'}",
                    reason=status.message,
                )
            if status.phase == Phase.READY and status.namespace:
                return status
            return None

        obj = self.obj
        await obj.async_refresh()
        while True:
            ready = check(obj.raw)
            if ready is not None:
                return ready
            # aclosing: leaving the loop early closes the watch now, not at interpreter exit.
            async with contextlib.aclosing(obj.async_watch()) as events:
                async for event, changed in events:
                    if event == "DELETED":
                        raise EnvironmentFailedError(
                            f"TestEnvironment {self.name} was deleted while waiting for it "
                            "(lease expired or deleted by someone else)",
                            reason="Deleted",
                        )
                    ready = check(changed.raw)
                    if ready is not None:
                        return ready
            await obj.async_refresh()  # the watch ended (server timeout): look again

    async def _discovery(self) -> dict[str, DiscoveryRecord]:
        assert self.namespace
        cms = [
            c
            async for c in self.api.async_get(
                "configmaps", DISCOVERY_CONFIGMAP, namespace=self.namespace
            )
        ]
        if not cms:
            raise EnvironmentFailedError(
                f"TestEnvironment {self.name} is Ready but ConfigMap {DISCOVERY_CONFIGMAP} is "
                f"missing in namespace {self.namespace}",
                reason="NoDiscovery",
            )
        data: dict[str, str] = cms[0].raw.get("data") or {}
        records = {}
        for key, value in sorted(data.items()):
            if key.endswith(".json"):
                record = DiscoveryRecord.model_validate_json(value)
                records[record.name] = record
        return records

    async def _forward_all(
        self, records: dict[str, DiscoveryRecord], progress: Progress
    ) -> dict[str, dict[str, Any]]:
        assert self.namespace
        health: dict[str, dict[str, Any]] = {}

        async def one(name: str, remote: DiscoveryRecord) -> None:
            forward = ServiceForward(self.api, self.namespace or "", self.name, remote)
            self.forwards[name] = forward
            await forward.start()
            health[name] = await verify(forward.record())
            health[name]["remote_port"] = remote.port
            health[name]["pod"] = forward.pods.current
            progress(f"testenv: {name} forwarded to 127.0.0.1:{forward.local_port}")

        await asyncio.gather(*(one(n, r) for n, r in records.items()))
        return health

    async def _renew(self) -> None:
        await self.obj.async_patch(
            {"metadata": {"annotations": {LEASE_RENEWED_ANNOTATION: now_rfc3339()}}},
            type="merge",
        )

    async def _renew_forever(self) -> None:
        assert self.spec.lease
        interval = max(parse_duration(self.spec.lease).total_seconds() / 3, 1.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep trying: a transient API error must not end it
                self.renew_errors.append(f"{now_rfc3339()} {type(exc).__name__}: {exc}")

    @property
    def deletes_on_stop(self) -> bool:
        return self.created and not (self.keep or self.reuse or self.shared)

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewer
        for forward in self.forwards.values():
            with contextlib.suppress(Exception):
                await forward.stop()
        if self.deletes_on_stop and self.obj is not None:
            self.teardown_message = await delete_and_confirm(
                self.api,
                self.name,
                self.namespace or self.spec.namespace_for(self.name),
                budget_s=TEARDOWN_TIMEOUT,
            )

    async def check_forwards(self) -> None:
        """Raise PortForwardLostError if a service no longer answers through its forward."""
        for forward in self.forwards.values():
            await verify(forward.record(), seconds=10)

    def how_to_reach(self) -> list[str]:
        ns = self.namespace or f"testenv-{self.name}"
        ctx = f" --context {self.context}" if self.context else ""
        lines = [
            f"testenv: kept TestEnvironment {self.name} (namespace {ns})",
            f"  kubectl{ctx} get testenvironment {self.name}",
        ]
        for name, forward in sorted(self.forwards.items()):
            lines.append(
                f"  kubectl{ctx} -n {ns} port-forward svc/{name} "
                f"{forward.remote.port}:{forward.remote.port}"
            )
        lines.append(f"  delete it: kubectl{ctx} delete testenvironment {self.name}")
        return lines

    async def forensics(self) -> str:
        if self.api is None or self.obj is None:
            return ""
        return await collect_forensics(self.api, self.name)


async def delete_environment(api: Any, name: str) -> bool:
    """Delete a TestEnvironment by name (False if it was already gone)."""
    try:
        await TestEnvironment({"metadata": {"name": name}}, api=api).async_delete()
    except kr8s.NotFoundError:
        return False
    except kr8s.ServerError as exc:
        if _server_status(exc) == 404:
            return False
        raise
    return True


async def delete_and_confirm(api: Any, name: str, namespace: str | None, *, budget_s: float) -> str:
    """Delete the environment, then wait (by watching) until it and its namespace are gone.

    Returns the line for the terminal summary: a confirmation that nothing leaked, or a
    warning naming what is still there.
    """
    started = time.monotonic()
    if not await delete_environment(api, name):
        return f"testenv: TestEnvironment {name} was already gone"
    pending = f"TestEnvironment {name}"
    try:
        async with asyncio.timeout(budget_s):
            await _wait_gone(TestEnvironment({"metadata": {"name": name}}, api=api))
            if namespace:
                pending = f"namespace {namespace}"
                await _wait_gone(Namespace({"metadata": {"name": namespace}}, api=api))
    except TimeoutError:
        return (
            f"testenv: WARNING: {pending} still exists {budget_s:.0f}s after deleting the "
            f"environment; see `kubectl get namespace {namespace} -o yaml` (its conditions "
            "say what blocks it)"
        )
    took = time.monotonic() - started
    return f"testenv: deleted TestEnvironment {name} and namespace {namespace} ({took:.1f}s)"


async def _wait_gone(obj: Any) -> None:
    """Return once ``obj`` no longer exists: a watch from its last version, no polling."""
    while True:
        try:
            await obj.async_refresh()
        except kr8s.NotFoundError:
            return
        # aclosing: returning from the loop closes the watch now, not at interpreter exit.
        async with contextlib.aclosing(obj.async_watch()) as events:
            async for event, _ in events:
                if event == "DELETED":
                    return
        # the watch ended (server-side timeout): look again


async def collect_forensics(api: Any, name: str, *, log_lines: int = 20, events: int = 15) -> str:
    """Status, conditions, recent events and the last log lines of every pod."""
    out: list[str] = []
    try:
        async with asyncio.timeout(20):
            await _forensics(api, name, out, log_lines, events)
    except Exception as exc:
        out.append(f"(forensics incomplete: {type(exc).__name__}: {exc})")
    return "\n".join(out)


async def _forensics(api: Any, name: str, out: list[str], log_lines: int, n_events: int) -> None:
    try:
        obj = await TestEnvironment.get(name, api=api)
    except kr8s.NotFoundError:
        out.append(f"TestEnvironment {name}: not found")
        return
    status = _status(obj.raw)
    out.append(
        f"TestEnvironment {name}: phase={status.phase} "
        f"ready={status.ready_services or '?'} message={status.message or ''}"
    )
    if status.phase in (Phase.PENDING, None) and not obj.raw.get("status"):
        out.append(
            "  no status at all: is the operator running? "
            "(kubectl get pods -A -l app.kubernetes.io/name=testenv-operator)"
        )
    for cond in status.conditions:
        out.append(f"  condition {cond.type}={cond.status} ({cond.reason}) {cond.message}")
    for svc in status.services:
        out.append(
            f"  service {svc.name}: ready={svc.ready} {svc.ready_replicas}/{svc.replicas}"
            f" {svc.reason or ''} {svc.message or ''}".rstrip()
        )
    ns = status.namespace
    if not ns:
        return
    events = [e async for e in api.async_get("events", namespace=ns)]

    def when(e: Any) -> str:
        raw = e.raw
        return str(
            raw.get("lastTimestamp")
            or raw.get("eventTime")
            or raw.get("metadata", {}).get("creationTimestamp")
            or ""
        )

    events.sort(key=when)
    out.append(f"events in {ns} (last {n_events}):")
    for e in events[-n_events:]:
        raw = e.raw
        involved = raw.get("involvedObject", {})
        out.append(
            f"  {when(e)} {raw.get('type', '')} {involved.get('kind', '')}/"
            f"{involved.get('name', '')} {raw.get('reason', '')}: "
            f"{raw.get('message', '')}".rstrip()
        )
    async for pod in api.async_get("pods", namespace=ns):
        out.append(f"logs of pod {pod.name} (last {log_lines} lines):")
        try:
            async for line in pod.async_logs(tail_lines=log_lines, timeout=10):
                out.append(f"  {line}")
        except Exception as exc:
            out.append(f"  (no logs: {type(exc).__name__}: {exc})")
