"""Environments by name: list, inspect, apply and wait, extend, delete, forward, follow
logs, collect garbage. What the ``testenv`` command does, for any program (async; one
:class:`Environments` per cluster connection).

Everything here is also possible with plain kubectl (the README shows both): these are
reads and writes of TestEnvironments, their namespaces, pods and discovery ConfigMaps.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import math
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kr8s
from kr8s.asyncio.objects import ConfigMap, Namespace, Pod
from pydantic import BaseModel, ConfigDict

from ._errors import EnvironmentFailedError, EnvironmentNotFoundError, ProvisioningTimeoutError
from ._kube import (
    TestEnvironment,
    connect,
    delete_and_confirm,
    object_events,
    parse_status,
    recent_events,
    whoami,
)
from ._pool import claim, matching_pools
from ._portforward import ServiceForward
from ._settings import DEFAULT_POOL_IDENTITY
from ._spec import spec_hash
from .api import (
    API_VERSION,
    CREATOR_ANNOTATION,
    DISCOVERY_CONFIGMAP,
    KIND,
    MANAGED_BY,
    PLURAL,
    DiscoveryRecord,
    Phase,
    TestEnvironmentPoolStatus,
    TestEnvironmentSpec,
    TestEnvironmentStatus,
    parse_duration,
    pod_selector,
)
from .redaction import redact_lines

StatusCallback = Callable[[TestEnvironmentStatus], None]
#: The field manager of what the ``testenv`` command applies.
CLI_FIELD_MANAGER = "testenv-cli"


class EnvironmentView(BaseModel):
    """One TestEnvironment as a person or a script wants to see it."""

    model_config = ConfigDict(frozen=True)

    name: str
    namespace: str | None
    phase: str
    ready: str | None  # "3/5"
    message: str | None
    created: str | None
    expires_at: str | None
    labels: dict[str, str]
    status: TestEnvironmentStatus

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> EnvironmentView:
        meta = raw.get("metadata") or {}
        status = parse_status(dict(raw))
        return cls(
            name=str(meta.get("name")),
            namespace=status.namespace,
            phase=status.phase.value if raw.get("status") else "Pending",
            ready=status.ready_services,
            message=status.message,
            created=meta.get("creationTimestamp"),
            expires_at=status.expires_at,
            labels=dict(meta.get("labels") or {}),
            status=status,
        )

    def to_wire(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"status"})
        data["status"] = self.status.to_wire()
        return data


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class Environments:
    """TestEnvironments of one cluster, by name."""

    def __init__(self, api: Any) -> None:
        self.api = api

    @classmethod
    async def connect(
        cls, kubeconfig: str | None = None, context: str | None = None
    ) -> Environments:
        """Connect (the cluster must answer and have the CRD), else a clear error."""
        return cls(await connect(kubeconfig, context, hint="--kubeconfig / --context"))

    async def _raw(self, name: str) -> Any:
        try:
            return await TestEnvironment.get(name, api=self.api)
        except kr8s.NotFoundError:
            raise EnvironmentNotFoundError(
                f"no TestEnvironment {name!r}; `testenv ls` lists them"
            ) from None

    async def list(self, label_selector: str | None = None) -> builtins.list[EnvironmentView]:
        objs = [
            o
            async for o in self.api.async_get(
                TestEnvironment, label_selector=label_selector or None
            )
        ]
        return sorted((EnvironmentView.of(o.raw) for o in objs), key=lambda v: v.name)

    async def get(self, name: str) -> EnvironmentView:
        return EnvironmentView.of((await self._raw(name)).raw)

    async def apply(
        self,
        name: str,
        spec: TestEnvironmentSpec,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> tuple[EnvironmentView, bool]:
        """Create the environment, or bring an existing one to ``spec`` and ``labels``
        (server-side apply, field manager ``testenv-cli``); (view, created). A new one names
        its creator (the current user); an existing one keeps whatever creator it has."""
        try:
            existing = (await TestEnvironment.get(name, api=self.api)).raw
        except kr8s.NotFoundError:
            existing = None
        annotations: dict[str, str] = {}
        if existing is None:
            user = await whoami(self.api)
            if user:
                annotations[CREATOR_ANNOTATION] = user
        else:
            current = ((existing.get("metadata") or {}).get("annotations") or {}).get(
                CREATOR_ANNOTATION
            )
            if current:
                annotations[CREATOR_ANNOTATION] = current
        manifest = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "labels": dict(labels or {}), "annotations": annotations},
            "spec": spec.to_wire(),
        }
        async with self.api.call_api(
            "PATCH",
            version=API_VERSION,
            url=f"{PLURAL}/{name}",
            params={"fieldManager": CLI_FIELD_MANAGER, "force": "true"},
            content=json.dumps(manifest),
            headers={"Content-Type": "application/apply-patch+yaml"},
        ) as response:
            raw = response.json()
        return EnvironmentView.of(raw), existing is None

    async def claim(
        self,
        spec: TestEnvironmentSpec,
        *,
        labels: Mapping[str, str] | None = None,
        lease: str | None = None,
        pool_identity: str = DEFAULT_POOL_IDENTITY,
    ) -> tuple[str, str] | None:
        """Claim an environment of a warm pool (TestEnvironmentPool) running ``spec``:
        (environment, pool), or None when no pool has one. It is then the caller's: no
        longer the pool's, with ``lease`` if given (else only its ttl ends it)."""
        got = await claim(
            self.api,
            spec_hash(spec),
            identity=pool_identity,
            user=await whoami(self.api),
            lease=lease,
            labels=dict(labels or {}),
        )
        return (str(got.obj.name), got.pool) if got is not None else None

    async def pools(
        self, spec: TestEnvironmentSpec
    ) -> builtins.list[tuple[str, TestEnvironmentPoolStatus]]:
        """The warm pools whose template is ``spec``, with their counts."""
        return await matching_pools(self.api, spec_hash(spec))

    async def wait(
        self,
        name: str,
        *,
        timeout: float,  # noqa: ASYNC109
        on_status: StatusCallback | None = None,
    ) -> TestEnvironmentStatus:
        """Follow the environment on a watch until it is Ready; every status change goes to
        ``on_status``. Failed raises :class:`EnvironmentFailedError`; the timeout
        :class:`ProvisioningTimeoutError`."""
        obj = await self._raw(name)
        last: dict[str, Any] | None = None

        def seen(raw: Mapping[str, Any]) -> TestEnvironmentStatus | None:
            nonlocal last
            status = parse_status(dict(raw))
            wire = status.to_wire()
            if wire != last:
                last = wire
                if on_status is not None:
                    on_status(status)
            generation = (raw.get("metadata") or {}).get("generation")
            current = (
                generation is None
                or status.observed_generation is None
                or status.observed_generation >= generation
            )
            if status.phase is Phase.READY and current:  # Ready for this spec, not the last
                return status
            if status.phase is Phase.FAILED and current:
                raise EnvironmentFailedError(
                    f"TestEnvironment {name} failed: {status.message or 'no message'}",
                    reason=status.message,
                )
            return None

        try:
            async with asyncio.timeout(timeout):
                async with contextlib.aclosing(object_events(obj)) as events:
                    async for event, raw in events:
                        if raw is None or event == "DELETED":
                            raise EnvironmentFailedError(
                                f"TestEnvironment {name} was deleted while waiting",
                                reason="Deleted",
                            )
                        obj.raw = raw
                        done = seen(raw)
                        if done is not None:
                            return done
            raise AssertionError("object_events never ends")
        except TimeoutError:
            status = parse_status(obj.raw)
            raise ProvisioningTimeoutError(
                f"TestEnvironment {name} was not Ready after {timeout:g}s "
                f"(phase {status.phase.value}: {status.message or 'no message'})",
                reason="Timeout",
            ) from None

    async def discovery(self, name: str) -> dict[str, DiscoveryRecord]:
        """The in-cluster discovery records of a Ready environment, by service name."""
        view = await self.get(name)
        if not view.namespace:
            return {}
        found = [
            c
            async for c in self.api.async_get(
                ConfigMap, DISCOVERY_CONFIGMAP, namespace=view.namespace
            )
        ]
        data: dict[str, str] = (found[0].raw.get("data") or {}) if found else {}
        records = (
            DiscoveryRecord.model_validate_json(v) for k, v in data.items() if k.endswith(".json")
        )
        return {r.name: r for r in sorted(records, key=lambda r: r.name)}

    async def extend(self, name: str, ttl: str, *, now: datetime | None = None) -> tuple[str, str]:
        """Let the environment live ``ttl`` from now: its ``spec.ttl`` becomes its age plus
        ``ttl``, rounded up to a minute. The new ``spec.ttl`` and the expiry it gives."""
        obj = await self._raw(name)
        created = _parse_time(obj.metadata.get("creationTimestamp")) or datetime.now(UTC)
        age = (now or datetime.now(UTC)) - created
        minutes = max(1, math.ceil((age + parse_duration(ttl)).total_seconds() / 60))
        days, rest = divmod(minutes, 24 * 60)
        hours, mins = divmod(rest, 60)
        new_ttl = "".join(f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (mins, "m")) if n)
        TestEnvironmentSpec(ttl=new_ttl)  # bounded like any spec's (raises beyond 99999d)
        await obj.async_patch({"spec": {"ttl": new_ttl}})
        expires = created + parse_duration(new_ttl)
        return new_ttl, expires.strftime("%Y-%m-%dT%H:%M:%SZ")

    async def delete(
        self,
        name: str,
        *,
        wait: bool = True,
        timeout: float = 180.0,  # noqa: ASYNC109
    ) -> str:
        """Delete; with ``wait``, until it and its namespace are gone. One line saying so."""
        view = await self.get(name)
        if not wait:
            await TestEnvironment({"metadata": {"name": name}}, api=self.api).async_delete()
            return f"deleting TestEnvironment {name}"
        return await delete_and_confirm(
            self.api, name, view.namespace, budget_s=timeout, wait_gone=True
        )

    async def events(self, name: str, limit: int = 10) -> builtins.list[str]:
        """The most recent events of the environment's namespace, oldest first."""
        view = await self.get(name)
        if not view.namespace:
            return []
        return redact_lines(await recent_events(self.api, view.namespace, limit), limit=None)

    async def logs(
        self,
        name: str,
        service: str | None = None,
        *,
        follow: bool = False,
        tail: int | None = None,
    ) -> AsyncIterator[tuple[str, str]]:
        """``(pod, line)`` of the environment's pods (of one service), interleaved as they
        come; with ``follow`` until interrupted."""
        view = await self.get(name)
        if not view.namespace:
            return
        if service is not None:
            selector: str | dict[str, str] = pod_selector(name, service)
        else:
            selector = {"testenv.dev/environment": name}
        pods = [
            p
            async for p in self.api.async_get(
                Pod, namespace=view.namespace, label_selector=selector
            )
        ]
        if service is not None and not pods:
            raise EnvironmentNotFoundError(
                f"no pods of service {service!r} in TestEnvironment {name}"
            )
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

        async def pump(pod: Any) -> None:
            try:
                async for line in pod.async_logs(follow=follow, tail_lines=tail):
                    await queue.put((pod.name, line))
            except Exception as exc:  # one pod's logs failing must not stop the others
                await queue.put((pod.name, f"(no logs: {type(exc).__name__}: {exc})"))

        async def all_pods() -> None:
            await asyncio.gather(*(pump(p) for p in pods))
            await queue.put(None)

        task = asyncio.create_task(all_pods())
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def forward(self, name: str) -> dict[str, ServiceForward]:
        """Port-forwards of every port of every service of a Ready environment, to free local
        ports; each new connection goes to a ready pod (so they survive pod restarts). Stop
        them with ``await f.stop()``."""
        view = await self.get(name)
        if view.status.phase is not Phase.READY or not view.namespace:
            raise EnvironmentFailedError(
                f"TestEnvironment {name} is {view.phase}, not Ready: nothing to forward",
                reason=view.message,
            )
        forwards: dict[str, ServiceForward] = {}
        try:
            for svc, record in (await self.discovery(name)).items():
                forwards[svc] = ServiceForward(self.api, view.namespace, name, record)
                await forwards[svc].start()
        except BaseException:
            for forward in forwards.values():
                await forward.stop()
            raise
        return forwards

    async def gc(self, *, dry_run: bool = False) -> builtins.list[str]:
        """Remove what should be gone: environments past their expiry (when no operator
        deleted them) and namespaces of the product whose TestEnvironment no longer exists.
        One line per object removed (or that would be, with ``dry_run``)."""
        removed: builtins.list[str] = []
        now = datetime.now(UTC)
        for view in await self.list():
            expires = _parse_time(view.expires_at)
            if expires is not None and expires <= now:
                removed.append(f"TestEnvironment {view.name} (expired at {view.expires_at})")
                if not dry_run:
                    with contextlib.suppress(kr8s.NotFoundError):
                        await TestEnvironment(
                            {"metadata": {"name": view.name}}, api=self.api
                        ).async_delete()
        selector = {"app.kubernetes.io/managed-by": MANAGED_BY}
        async for ns in self.api.async_get(Namespace, label_selector=selector):
            if ns.metadata.get("deletionTimestamp") or await self._owned(ns.raw):
                continue
            owner = (ns.metadata.get("labels") or {}).get("testenv.dev/environment", "?")
            removed.append(f"namespace {ns.name} (its TestEnvironment {owner} is gone)")
            if not dry_run:
                with contextlib.suppress(kr8s.NotFoundError):
                    await ns.async_delete()
        return removed

    async def _owned(self, namespace: Mapping[str, Any]) -> bool:
        """Whether a TestEnvironment that owns the namespace exists (same name and uid: one
        re-created under the same name does not own its predecessor's namespace)."""
        for ref in (namespace.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("kind") != KIND:
                continue
            try:
                env = await TestEnvironment.get(ref.get("name"), api=self.api)
            except kr8s.NotFoundError:
                continue
            if env.metadata.get("uid") == ref.get("uid"):
                return True
        return False
