"""Real mode: a TestEnvironment custom resource, watched until Ready, kept alive by its lease,
then port-forwarded."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from typing import Any

import kr8s
from kr8s.asyncio.objects import ConfigMap, Secret

from ._context import EnvironmentInfo, Progress, StartResult
from ._errors import ConfigurationError, EnvironmentFailedError
from ._kube import (
    TestEnvironment,
    collect_forensics,
    connect_as_user,
    delete_and_confirm,
    object_events,
    parse_status,
    server_status,
)
from ._pool import claim, matching_pools
from ._portforward import ServiceForward, pods_of, verify
from ._settings import DEFAULT_POOL_IDENTITY
from ._spec import now_rfc3339, spec_hash, unique_name
from ._tls import client_tls
from .api import (
    API_VERSION,
    CREATOR_ANNOTATION,
    CREDENTIALS_SECRET,
    DISCOVERY_CONFIGMAP,
    ENVIRONMENT_LABEL,
    GROUP,
    KIND,
    LEASE_RENEWED_ANNOTATION,
    RESET_ANNOTATION,
    SPEC_HASH_LABEL,
    DiscoveryRecord,
    JobPhase,
    Phase,
    ResetStatus,
    TestEnvironmentSpec,
    TestEnvironmentStatus,
    parse_duration,
)

log = logging.getLogger("testenv")

CREATED_BY_LABEL = f"{GROUP}/created-by"
REUSABLE_LABEL = f"{GROUP}/reusable"
CREATED_BY = "testenv"
# How long teardown waits for the environment and its namespace to be gone before warning.
TEARDOWN_TIMEOUT = 90.0
# How long a reset (the spec's run: reset jobs) may take.
RESET_TIMEOUT = 120.0


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
        wait_deleted: bool = False,
        pool: bool = True,
        pool_identity: str = DEFAULT_POOL_IDENTITY,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.hash = spec_hash(spec)
        self.reuse = reuse
        self.keep = keep
        #: At teardown, wait until the namespace is gone (not only terminating).
        self.wait_deleted = wait_deleted
        self.shared = shared
        #: Claim a Ready environment of a matching warm pool before creating one.
        self.pool = pool
        self.pool_identity = pool_identity
        #: The pool the environment was claimed from.
        self.claimed_from: str | None = None
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
        #: A name given by the user: an existing environment of that name is used, not
        #: replaced (and not deleted afterwards: this session did not create it).
        self.named = name is not None
        self.api: Any = None
        #: Who the cluster says we are (None if it cannot tell): recorded as the creator.
        self.user: str | None = None
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
        self.api, self.user = await connect_as_user(self.kubeconfig, self.context)
        if self.reuse:
            self.obj = await self._find_reusable()
            if self.obj is not None:
                self.name, self.reused = self.obj.name, True
                progress(f"testenv: reusing TestEnvironment {self.name} (spec {self.hash})")
        if self.obj is None and self.pool and not (self.named or self.reuse):
            await self._claim(progress)
        if self.obj is None:
            await self._create_or_get(progress)
        if self.spec.lease:
            if not self.created:  # a created or claimed one was renewed by that very write
                await self._renew()
            self._renewer = asyncio.create_task(self._renew_forever())
        # The clients' TLS context is built while the cluster works (off the loop: it
        # reads the CA bundle), not by the first test's client.
        tls = asyncio.ensure_future(asyncio.to_thread(client_tls))
        status = await self._wait_ready(progress, started)
        self.namespace = status.namespace
        records, pods = await asyncio.gather(self._discovery(), self._pods())
        health = await self._forward_all(records, pods, progress)
        await tls
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
            pool=self.claimed_from,
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
                "annotations": {
                    LEASE_RENEWED_ANNOTATION: now_rfc3339(),
                    **({CREATOR_ANNOTATION: self.user} if self.user else {}),
                },
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
            if server_status(exc) != 409 or not (self.shared or self.named):
                raise EnvironmentFailedError(
                    f"cannot create TestEnvironment {self.name}: {exc}", reason="CreateFailed"
                ) from exc
            obj = await TestEnvironment.get(self.name, api=self.api)
            which = "shared" if self.shared else "existing"
            progress(f"testenv: using {which} TestEnvironment {self.name}")
        self.obj = obj

    async def _claim(self, progress: Progress) -> None:
        """Take an environment of a warm pool with our spec, if there is one (and say so)."""
        started = time.monotonic()
        labels = {k: v for k, v in self.labels.items() if k != SPEC_HASH_LABEL}
        # The pools are read alongside, only to say why none had one: no added wait.
        got, pools = await asyncio.gather(
            claim(
                self.api,
                self.hash,
                identity=self.pool_identity,
                user=self.user,
                lease=self.spec.lease,
                labels=labels,
            ),
            matching_pools(self.api, self.hash),
        )
        if got is None:
            for pool, status in pools:
                progress(
                    f"testenv: pool {pool} has no environment to claim (ready {status.ready}, "
                    f"refilling {status.refilling}, claimed {status.claimed}); creating one"
                )
            return
        self.obj, self.name, self.created, self.claimed_from = got.obj, got.obj.name, True, got.pool
        state = "Ready" if got.ready else "still starting"
        progress(
            f"testenv: claimed TestEnvironment {self.name} from pool {got.pool} "
            f"({state}, {time.monotonic() - started:.2f}s)"
        )

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
            and parse_status(o.raw).phase not in (Phase.FAILED, Phase.TERMINATING)
            and self._trusted(o.raw)
        ]
        usable.sort(
            key=lambda o: (
                parse_status(o.raw).phase != Phase.READY,
                o.metadata.get("creationTimestamp", ""),
            )
        )
        return usable[0] if usable else None

    def _trusted(self, raw: dict[str, Any]) -> bool:
        """Whether a candidate for reuse is what we asked for and ours: its actual spec hashes
        to ours (recomputed: the label is only a lookup key anyone can set) and we created it
        (the admission policy guarantees the creator annotation)."""
        annotations = (raw.get("metadata") or {}).get("annotations") or {}
        if self.user is None or annotations.get(CREATOR_ANNOTATION) != self.user:
            return False
        try:
            actual = TestEnvironmentSpec.model_validate(raw.get("spec") or {})
        except ValueError:
            return False
        return spec_hash(actual) == self.hash

    async def _wait_ready(self, progress: Progress, started: float) -> TestEnvironmentStatus:
        total = len(self.spec.services)
        announced: set[str] = set()

        def check(raw: dict[str, Any]) -> TestEnvironmentStatus | None:
            status = parse_status(raw)
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

        # Claimed or reused: what the claim's patch or the lookup returned may be Ready.
        if (self.obj.raw or {}).get("status") and (ready := check(self.obj.raw)) is not None:
            return ready
        # aclosing: leaving the loop early closes the watch now, not at interpreter exit.
        async with contextlib.aclosing(object_events(self.obj)) as events:
            async for event, raw in events:
                if raw is None or event == "DELETED":
                    raise EnvironmentFailedError(
                        f"TestEnvironment {self.name} was deleted while waiting for it "
                        "(lease expired or deleted by someone else)",
                        reason="Deleted",
                    )
                ready = check(raw)
                if ready is not None:
                    return ready
        raise AssertionError("object_events never ends")

    async def _discovery(self) -> dict[str, DiscoveryRecord]:
        assert self.namespace
        cms = [
            c
            async for c in self.api.async_get(
                ConfigMap, DISCOVERY_CONFIGMAP, namespace=self.namespace
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

    async def _pods(self) -> list[dict[str, Any]]:
        """The environment's pods (read alongside discovery: the forwards pick from them)."""
        return await pods_of(self.api, self.namespace, {ENVIRONMENT_LABEL: self.name})

    async def _forward_all(
        self, records: dict[str, DiscoveryRecord], pods: list[dict[str, Any]], progress: Progress
    ) -> dict[str, dict[str, Any]]:
        assert self.namespace
        health: dict[str, dict[str, Any]] = {}

        async def one(name: str, remote: DiscoveryRecord) -> None:
            forward = ServiceForward(self.api, self.namespace or "", self.name, remote)
            self.forwards[name] = forward
            await forward.start(pods)
            health[name] = await verify(forward.record())
            health[name]["remote_port"] = remote.port
            health[name]["pod"] = forward.pods.current
            health[name]["forward"] = forward.mode
            ends = ", ".join(
                f"{port} -> 127.0.0.1:{local}"
                if len(forward.local_ports) > 1
                else f"127.0.0.1:{local}"
                for port, local in forward.local_ports.items()
            )
            progress(f"testenv: {name} forwarded to {ends}")

        await asyncio.gather(*(one(n, r) for n, r in records.items()))
        return health

    async def reset(self, progress: Progress, timeout: float = RESET_TIMEOUT) -> None:  # noqa: ASYNC109
        """Run the spec's ``run: reset`` jobs and wait until they are done (clean data)."""
        if self.obj is None:
            raise ConfigurationError("the environment is not running: nothing to reset")
        request = uuid.uuid4().hex
        started = time.monotonic()
        await self.obj.async_patch(
            {"metadata": {"annotations": {RESET_ANNOTATION: request}}}, type="merge"
        )

        def outcome(raw: dict[str, Any]) -> ResetStatus | None:
            status = parse_status(raw)
            reset = status.reset
            if reset is None or reset.request != request:
                return None
            if reset.phase is JobPhase.FAILED:
                raise EnvironmentFailedError(
                    f"resetting TestEnvironment {self.name} failed: {reset.message}",
                    reason="ResetFailed",
                )
            return reset if reset.phase is JobPhase.SUCCEEDED else None

        async def done() -> None:
            assert self.obj is not None
            async with contextlib.aclosing(object_events(self.obj)) as events:
                async for _, raw in events:
                    if raw is None:
                        raise EnvironmentFailedError(
                            f"TestEnvironment {self.name} was deleted during its reset",
                            reason="Deleted",
                        )
                    if outcome(raw) is not None:
                        return

        try:
            async with asyncio.timeout(timeout):
                await done()
        except TimeoutError:
            raise EnvironmentFailedError(
                f"resetting TestEnvironment {self.name} took longer than {timeout:.0f}s",
                reason="ResetTimeout",
            ) from None
        progress(f"testenv: reset {self.name} ({time.monotonic() - started:.1f}s)")

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
                message = f"{now_rfc3339()} {type(exc).__name__}: {exc}"
                self.renew_errors.append(message)
                log.warning(
                    "testenv: renewing the lease of TestEnvironment %s failed (%s); "
                    "retrying in %.0fs",
                    self.name,
                    message,
                    interval,
                )

    @property
    def deletes_on_stop(self) -> bool:
        return self.created and not (self.keep or self.reuse or self.shared)

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewer

        async def delete() -> None:
            if self.deletes_on_stop and self.obj is not None:
                self.teardown_message = await delete_and_confirm(
                    self.api,
                    self.name,
                    self.namespace or self.spec.namespace_for(self.name),
                    budget_s=TEARDOWN_TIMEOUT,
                    wait_gone=self.wait_deleted,
                )

        # The forwards close and the environment goes at once (neither needs the other).
        stops = [forward.stop() for forward in self.forwards.values()]
        *_, deleted = await asyncio.gather(*stops, delete(), return_exceptions=True)
        if isinstance(deleted, BaseException):
            raise deleted

    def how_to_reach(self) -> list[str]:
        ns = self.namespace or f"testenv-{self.name}"
        ctx = f" --context {self.context}" if self.context else ""
        lines = [
            f"testenv: kept TestEnvironment {self.name} (namespace {ns})",
            f"  kubectl{ctx} get testenvironment {self.name}",
        ]
        for name, forward in sorted(self.forwards.items()):
            ports = " ".join(f"{p.port}:{p.port}" for p in forward.remote.ports) or str(
                forward.remote.port
            )
            lines.append(f"  kubectl{ctx} -n {ns} port-forward svc/{name} {ports}")
        lines.append(f"  delete it: kubectl{ctx} delete testenvironment {self.name}")
        return lines

    async def secret(self, name: str) -> str:
        """A generated secret of the environment, read from its Secret."""
        if self.api is None or self.namespace is None:
            raise ConfigurationError("the environment is not running: no secrets to read")
        found = [
            s
            async for s in self.api.async_get(Secret, CREDENTIALS_SECRET, namespace=self.namespace)
        ]
        data: dict[str, str] = (found[0].raw.get("data") or {}) if found else {}
        if name not in data:
            raise ConfigurationError(
                f"environment {self.name} has no secret {name!r}; it has: "
                f"{', '.join(sorted(data)) or 'none'} (declare secrets in spec.secrets)"
            )
        return base64.b64decode(data[name]).decode()

    async def forensics(self) -> str:
        if self.api is None or self.obj is None:
            return ""
        return await collect_forensics(self.api, self.name)
