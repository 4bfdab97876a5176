"""The Kubernetes side of the client: one kr8s resource class for TestEnvironments, connecting
with clear errors, deleting and confirming, forensics. Everything client-side talks to the
cluster through here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import kr8s
import kr8s.asyncio
from kr8s.asyncio.objects import (
    CustomResourceDefinition,
    Event,
    Namespace,
    Pod,
    Secret,
    new_class,
)
from pydantic import ValidationError

from ._errors import ClusterUnreachableError, OperatorNotInstalledError
from .api import (
    API_VERSION,
    CREDENTIALS_SECRET,
    GROUP,
    KIND,
    PLURAL,
    POOL_KIND,
    POOL_PLURAL,
    Phase,
    TestEnvironmentStatus,
)
from .redaction import redact_lines

CRD_NAME = f"{PLURAL}.{GROUP}"
INSTALL_HINT = (
    "install the operator: helm install testenv charts/testenv-operator "
    "(or kubectl apply -f manifests/)"
)


def _resource_class(asyncio: bool) -> Any:
    return new_class(
        kind=KIND, version=API_VERSION, namespaced=False, plural=PLURAL, asyncio=asyncio
    )


#: The TestEnvironment resource for kr8s (async API), and its synchronous twin for scripts.
TestEnvironment: Any = _resource_class(asyncio=True)
SyncTestEnvironment: Any = _resource_class(asyncio=False)
#: The TestEnvironmentPool resource (warm pools).
TestEnvironmentPool: Any = new_class(
    kind=POOL_KIND, version=API_VERSION, namespaced=False, plural=POOL_PLURAL, asyncio=True
)


def parse_status(raw: dict[str, Any]) -> TestEnvironmentStatus:
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


def server_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


_HINT = (
    "--testenv-kubeconfig/KUBECONFIG and --testenv-context, "
    "or run without a cluster: --testenv-mode=local"
)


async def connect(kubeconfig: str | None, context: str | None, hint: str = _HINT) -> Any:
    """A kr8s API client, checked: the cluster answers and the CRD is installed. ``hint``:
    the options that choose the cluster, for the error message."""
    api, where = await _client(kubeconfig, context, hint)
    await _require_crd(api, where)
    return api


async def connect_as_user(
    kubeconfig: str | None, context: str | None, hint: str = _HINT
) -> tuple[Any, str | None]:
    """:func:`connect` and :func:`whoami` at once (the CRD check and the review run
    side by side: one round trip less before a session's first request)."""
    api, where = await _client(kubeconfig, context, hint)
    _, user = await asyncio.gather(_require_crd(api, where), whoami(api))
    return api, user


async def _client(kubeconfig: str | None, context: str | None, hint: str) -> tuple[Any, str]:
    where = f"kubeconfig={kubeconfig or '$KUBECONFIG or ~/.kube/config'}"
    if context:
        where += f", context={context}"
    try:
        async with asyncio.timeout(15):  # creating the client reads /version: it answers
            api = await kr8s.asyncio.api(kubeconfig=kubeconfig, context=context)
    except Exception as exc:
        raise ClusterUnreachableError(
            f"cannot reach the Kubernetes API ({where}): {type(exc).__name__}: {exc}. Check {hint}"
        ) from exc
    return api, where


async def _require_crd(api: Any, where: str) -> None:
    found: list[Any]
    try:
        found = [c async for c in api.async_get(CustomResourceDefinition, CRD_NAME)]
    except kr8s.NotFoundError:
        found = []
    except kr8s.ServerError as exc:
        if server_status(exc) == 404:
            found = []
        elif server_status(exc) == 403:  # may not read CRDs: try the resource itself
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


async def whoami(api: Any) -> str | None:
    """The user name the cluster knows us by (a SelfSubjectReview); None if it cannot say."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        async with api.call_api(
            "POST",
            base="/apis",
            version="authentication.k8s.io/v1",
            url="selfsubjectreviews",
            content=json.dumps(body),
        ) as response:
            user = response.json().get("status", {}).get("userInfo", {}).get("username")
    except (kr8s.ServerError, httpx.HTTPError, OSError, ValueError):
        return None
    return str(user) if user else None


async def delete_environment(api: Any, name: str) -> bool:
    """Delete a TestEnvironment by name (False if it was already gone)."""
    try:
        await TestEnvironment({"metadata": {"name": name}}, api=api).async_delete()
    except kr8s.NotFoundError:
        return False
    except kr8s.ServerError as exc:
        if server_status(exc) == 404:
            return False
        raise
    return True


async def delete_and_confirm(
    api: Any, name: str, namespace: str | None, *, budget_s: float, wait_gone: bool = False
) -> str:
    """Delete the environment and confirm its namespace goes too; with ``wait_gone``, wait
    (by watching) until the namespace is gone.

    Without ``wait_gone`` nobody waits for the garbage collector: one read of the namespace
    confirms that it is terminating, gone, or owned by the environment (an ownerReference the
    garbage collector acts on even while the operator is down). Only a namespace that is none
    of these is watched until it starts terminating. Returns the line for the terminal
    summary: a confirmation, or a warning naming what is still there.
    """
    started = time.monotonic()
    if not await delete_environment(api, name):
        return f"testenv: TestEnvironment {name} was already gone"
    if namespace and not wait_gone:
        state = await _namespace_state(api, namespace, owner=name)
        took = time.monotonic() - started
        if state == "owned":
            return (
                f"testenv: deleted TestEnvironment {name}; the garbage collector removes "
                f"namespace {namespace}, its dependent ({took:.1f}s)"
            )
        if state in ("gone", "terminating"):
            return (
                f"testenv: deleted TestEnvironment {name}; namespace {namespace} is {state} "
                f"({took:.1f}s)"
            )
    pending = f"TestEnvironment {name}"
    ns_state = "gone"
    try:
        async with asyncio.timeout(budget_s):
            await _wait_gone(TestEnvironment({"metadata": {"name": name}}, api=api))
            if namespace:
                pending = f"namespace {namespace}"
                ns = Namespace({"metadata": {"name": namespace}}, api=api)
                if wait_gone:
                    await _wait_gone(ns)
                else:
                    ns_state = await _wait_terminating(ns)
    except TimeoutError:
        return (
            f"testenv: WARNING: {pending} still exists {budget_s:.0f}s after deleting the "
            f"environment; see `kubectl get namespace {namespace} -o yaml` (its conditions "
            "say what blocks it)"
        )
    took = time.monotonic() - started
    if not namespace:
        return f"testenv: deleted TestEnvironment {name} ({took:.1f}s)"
    if ns_state == "gone":
        return f"testenv: deleted TestEnvironment {name} and namespace {namespace} ({took:.1f}s)"
    return (
        f"testenv: deleted TestEnvironment {name}; namespace {namespace} is terminating "
        f"({took:.1f}s)"
    )


async def object_events(obj: Any) -> AsyncGenerator[tuple[str, dict[str, Any] | None]]:
    """``("SYNC", raw or None)`` with the object as it is now, then ``(type, raw)`` of each
    change (``ADDED``, ``MODIFIED``, ``DELETED``), for as long as the caller iterates.

    The watch starts at the resourceVersion of a fresh *list*, never at the object's own: an
    object that has not changed for a while has a version older than the API server's watch
    window, and a watch from it ends in "410 Gone" (which kr8s answers by watching again from
    the same version, forever). After a 410 or a server-side timeout: list again, go on.
    """
    api = obj.api
    params = {"fieldSelector": f"metadata.name={obj.name}"}
    namespace = obj.namespace if obj.namespaced else None
    while True:
        async with api.call_api(
            "GET", version=obj.version, url=obj.endpoint, namespace=namespace, params=params
        ) as response:
            listed = response.json()
        items = listed.get("items") or []
        yield "SYNC", (items[0] if items else None)
        watch = {
            **params,
            "watch": "true",
            "resourceVersion": listed["metadata"]["resourceVersion"],
            "timeoutSeconds": "300",
        }
        async with api.call_api(
            "GET",
            version=obj.version,
            url=obj.endpoint,
            namespace=namespace,
            params=watch,
            stream=True,
            timeout=None,
        ) as response:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":  # 410 Gone and the like: list again
                    break
                yield str(event.get("type")), event.get("object")


async def _namespace_state(api: Any, namespace: str, *, owner: str) -> str:
    """``gone``, ``terminating``, ``owned`` (an ownerReference to TestEnvironment ``owner``:
    the garbage collector deletes it once its owner is gone) or ``kept``."""
    async with api.call_api(
        "GET", version="v1", url=f"namespaces/{namespace}", raise_for_status=False
    ) as response:
        if response.status_code == 404:
            return "gone"
        response.raise_for_status()
        meta = response.json().get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "terminating"
    owners = meta.get("ownerReferences") or []
    if any(o.get("kind") == KIND and o.get("name") == owner for o in owners):
        return "owned"
    return "kept"


async def _wait_gone(obj: Any) -> None:
    """Return once ``obj`` no longer exists (a watch, no polling)."""
    # aclosing: returning from the loop closes the watch now, not at interpreter exit.
    async with contextlib.aclosing(object_events(obj)) as events:
        async for event, raw in events:
            if raw is None or event == "DELETED":
                return


async def _wait_terminating(obj: Any) -> str:
    """Wait until the namespace ``obj`` is being deleted ("terminating") or gone ("gone"):
    the garbage collector deletes it shortly after its TestEnvironment."""
    async with contextlib.aclosing(object_events(obj)) as events:
        async for event, raw in events:
            if raw is None or event == "DELETED":
                return "gone"
            if (raw.get("metadata") or {}).get("deletionTimestamp"):
                return "terminating"
    return "gone"


async def recent_events(api: Any, namespace: str, limit: int) -> list[str]:
    """``time type Kind/name reason: message`` of the namespace's last events, oldest first."""
    events = [e.raw async for e in api.async_get(Event, namespace=namespace)]

    def when(raw: dict[str, Any]) -> str:
        return str(
            raw.get("lastTimestamp")
            or raw.get("eventTime")
            or (raw.get("metadata") or {}).get("creationTimestamp")
            or ""
        )

    events.sort(key=when)
    lines = []
    for raw in events[-limit:]:
        involved = raw.get("involvedObject") or {}
        lines.append(
            f"{when(raw)} {raw.get('type', '')} {involved.get('kind', '')}/"
            f"{involved.get('name', '')} {raw.get('reason', '')}: {raw.get('message', '')}".rstrip()
        )
    return lines


async def collect_forensics(api: Any, name: str, *, log_lines: int = 20, events: int = 15) -> str:
    """Status, conditions, recent events and the last log lines of every pod."""
    out: list[str] = []
    secrets: list[str] = []
    try:
        async with asyncio.timeout(20):
            await _forensics(api, name, out, secrets, log_lines, events)
    except Exception as exc:
        out.append(f"(forensics incomplete: {type(exc).__name__}: {exc})")
    # What is printed and reported never shows a credential (pod logs may print them).
    return "\n".join(redact_lines(out, secrets, limit=None))


async def _secret_values(api: Any, namespace: str) -> list[str]:
    """The environment's generated secret values, when we may read them (else none: the
    pattern-based redaction still applies)."""
    try:
        found = [s async for s in api.async_get(Secret, CREDENTIALS_SECRET, namespace=namespace)]
    except Exception:  # forbidden, gone, unreachable: nothing more to redact by value
        return []
    return [
        base64.b64decode(v).decode(errors="replace")
        for secret in found
        for v in (secret.raw.get("data") or {}).values()
    ]


async def _forensics(
    api: Any, name: str, out: list[str], secrets: list[str], log_lines: int, n_events: int
) -> None:
    """Append what is known to ``out``; the environment's secret values to ``secrets``."""
    try:
        obj = await TestEnvironment.get(name, api=api)
    except kr8s.NotFoundError:
        out.append(f"TestEnvironment {name}: not found")
        return
    status = parse_status(obj.raw)
    # The cause first, once; then what else is known, without repeating it.
    out.append(
        f"TestEnvironment {name}: {status.phase.value} "
        f"({status.ready_services or '?'} services ready)"
    )
    said = {status.message} if status.message else set()
    if status.message:
        out.append(f"  cause: {status.message}")
    if status.phase in (Phase.PENDING, None) and not obj.raw.get("status"):
        out.append(
            "  no status at all: is the operator running? "
            "(kubectl get pods -A -l app.kubernetes.io/name=testenv-operator)"
        )
    for cond in status.conditions:
        line = f"  condition {cond.type}={cond.status} ({cond.reason})"
        if cond.message and not any(cond.message in s for s in said):
            line += f": {cond.message}"
            said.add(cond.message)
        out.append(line)
    for svc in status.services:
        line = f"  service {svc.name}: ready {svc.ready_replicas}/{svc.replicas}"
        if svc.reason:
            line += f" ({svc.reason})"
        if svc.message and not any(svc.message in s for s in said):
            line += f": {svc.message}"
            said.add(svc.message)
        out.append(line)
    for job in status.jobs:
        line = f"  job {job.name}: {job.phase.value}"
        if job.message and not any(job.message in s for s in said):
            line += f": {job.message}"
        out.append(line)
    ns = status.namespace
    if not ns:
        return
    secrets += await _secret_values(api, ns)
    out.append(f"events in {ns} (last {n_events}):")
    out += [f"  {line}" for line in await recent_events(api, ns, n_events)]
    async for pod in api.async_get(Pod, namespace=ns):
        out.append(f"logs of pod {pod.name} (last {log_lines} lines):")
        try:
            async for line in pod.async_logs(tail_lines=log_lines, timeout=10):
                out.append(f"  {line}")
        except Exception as exc:
            out.append(f"  (no logs: {type(exc).__name__}: {exc})")
