"""The reconcile loop of a TestEnvironment (no kopf here: handlers.py only registers it).

One idempotent :meth:`Reconciler.reconcile` serves create, update, resume and healing:

1. the namespace is created (a create: an existing one is never modified or adopted, and a
   conflict makes the environment Failed with ``NamespaceConflict``);
2. every other object is server-side applied (the Secrets first, created once, then the rest
   at once)
   and each service's pods are created (by the operator itself, no Deployment: see
   docs/decisions/0002-services-as-bare-pods.md; outdated and finished ones are deleted);
3. the status is computed from the pods (:mod:`status`), the discovery ConfigMap is published
   once every service is Ready.

It runs in a per-environment monitor task, woken by watch events (the kopf event handlers on
the TestEnvironment and on its Pods, Jobs, Services and ConfigMaps call :meth:`Reconciler.nudge`)
and by its own deadlines (readiness timeouts, expiry) — there is no polling loop. The same
task applies a new environment or a new generation, follows readiness, recreates deleted
objects and deletes the environment once its ttl or lease has run out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

from pydantic import ValidationError

from testenv.api import (
    CREDENTIALS_SECRET,
    DISCOVERY_CONFIGMAP,
    JOB_LABEL,
    RESET_ANNOTATION,
    SERVICE_LABEL,
    SERVICES_SECRET,
    TEMPLATE_HASH_ANNOTATION,
    JobPhase,
    JobStatus,
    Phase,
    ResetStatus,
    TestEnvironmentSpec,
    TestEnvironmentStatus,
    parse_duration,
    validation_problems,
)
from testenv_operator import diagnose, expiry, render
from testenv_operator.cache import ApiReads, Reads
from testenv_operator.kube import Conflict, KubeClient, KubeError
from testenv_operator.pods import (
    controlled_by,
    live_pods,
    name_of,
    plan_pods,
    service_of,
    service_of_name,
    template_hash_of,
    terminating,
)
from testenv_operator.settings import Settings
from testenv_operator.status import (
    STICKY_REASONS,
    JobObservation,
    Observation,
    ServiceObservation,
    compute_status,
    job_verdict,
    labelled,
    parse_status,
    ready_workloads,
    startable,
    status_patch,
    waiting_for,
)
from testenv_operator.timeutil import now, parse_time

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]
# (body of the TestEnvironment, "Normal" | "Warning", reason, message)
EventPoster = Callable[[Obj, str, str, str], None]


#: API errors that mean "this spec cannot be applied as it is": bad request, forbidden (e.g.
#: by an admission policy or a quota), too large, invalid. Others (conflicts, 5xx, timeouts)
#: are retried.
REFUSALS = frozenset({400, 403, 413, 422})
#: The longest API-server message copied into a status or an event.
MAX_REFUSAL_MESSAGE = 1000


def _terminating(namespace: Obj | None) -> bool:
    return bool(namespace and (namespace.get("metadata") or {}).get("deletionTimestamp"))


def _refused(exc: KubeError) -> bool:
    """A refusal of the spec, not a passing state: a namespace being deleted also answers
    403 ("being terminated"), and that one clears once it is gone."""
    return exc.status in REFUSALS and "being terminated" not in exc.message


def missing_workloads(missing: list[str]) -> set[str]:
    """The services and jobs that ``missing`` (``Kind/name``) objects belong to."""
    return {
        (service_of_name(name) or name) if kind == "Pod" else name
        for kind, name in (m.split("/", 1) for m in missing)
    }


def _earliest_created(objs: Iterable[Obj]) -> datetime | None:
    times = [parse_time((o.get("metadata") or {}).get("creationTimestamp")) for o in objs]
    present = [t for t in times if t is not None]
    return min(present) if present else None


class InvalidSpec(ValueError):
    """The stored spec does not validate (the CRD schema should have refused it)."""


@dataclass(frozen=True)
class Environment:
    body: Obj
    name: str
    uid: str
    generation: int | None
    created: datetime
    annotations: Mapping[str, str]
    spec: TestEnvironmentSpec
    #: The last lease renewal by the API server's clock (None: never renewed).
    lease_renewed: datetime | None = None

    @property
    def namespace(self) -> str:
        return self.spec.namespace_for(self.name)


def parse_environment(body: Obj, default_ttl: str = "1h") -> Environment:
    meta = body.get("metadata") or {}
    raw = dict(body.get("spec") or {})
    raw.setdefault("ttl", default_ttl)
    try:
        spec = TestEnvironmentSpec.model_validate(raw)
    except ValidationError as exc:
        errors = validation_problems(exc)
        raise InvalidSpec(f"invalid spec: {errors}") from exc
    created = parse_time(meta.get("creationTimestamp")) or now()
    return Environment(
        body=body,
        name=str(meta["name"]),
        uid=str(meta.get("uid", "")),
        generation=meta.get("generation"),
        created=created,
        annotations=dict(meta.get("annotations") or {}),
        spec=spec,
        lease_renewed=expiry.lease_renewed_at(meta),
    )


@dataclass
class EnvState:
    """What the operator remembers (in memory) about one environment."""

    uid: str
    applied_generation: int | None = None
    applied_at: datetime | None = None
    reapply: bool = False
    #: The status this operator last wrote (it is the only writer): newer than a cache may be.
    written_status: Obj | None = None
    #: When this operator last wrote the status (progress is written at most once a
    #: ``status_interval``: see ``Reconciler._progress_held_until``).
    written_at: datetime | None = None
    #: The discovery data last applied (a cache may not show it yet).
    published: Obj | None = None
    #: Services and jobs whose pods or Job were created (the others wait: dependsOn).
    started: set[str] = field(default_factory=set)
    #: The template hash of each service's pods, for ``hashed_generation`` of the spec.
    template_hashes: dict[str, str] = field(default_factory=dict)
    hashed_generation: int | None = None
    #: Services whose last pod create the API server refused (a quota, a policy): its answer.
    refused_pods: dict[str, str] = field(default_factory=dict)
    #: A spec generation the API server refused, and why (not retried until it changes).
    refused_generation: int | None = None
    refused_message: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None


@dataclass
class RefreshResult:
    status: TestEnvironmentStatus
    missing: list[str]  # objects that should exist but do not (Pod/x-<hash>-0, Service/x)
    wake_at: datetime | None  # the next deadline worth waking up for


#: The status fields whose changes while provisioning are only progress (written at most once
#: a ``status_interval``).
PROGRESS_FIELDS = frozenset({"services", "readyServices", "message", "conditions", "timings"})


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        settings: Settings,
        post: EventPoster,
        clock: Callable[[], datetime] = now,
        reads: Reads | None = None,
    ) -> None:
        self.kube = kube
        #: Where environments and child objects are read from (kopf indexes in the operator).
        self.reads: Reads = reads if reads is not None else ApiReads(kube)
        self.settings = settings
        self.post = post
        self.clock = clock
        self.states: dict[str, EnvState] = {}
        self._applying = asyncio.Semaphore(settings.apply_concurrency)

    # --- state ---------------------------------------------------------------------------

    def state(self, name: str, uid: str) -> EnvState:
        state = self.states.get(name)
        if state is None or state.uid != uid:
            if state is not None and state.task is not None:
                state.task.cancel()
            state = self.states[name] = EnvState(uid=uid)
        return state

    def environment(self, body: Obj) -> Environment:
        return parse_environment(body, self.settings.default_ttl)

    def _event(self, env: Environment, type_: str, reason: str, message: str) -> None:
        try:
            self.post(env.body, type_, reason, message)
        except Exception:  # events are best effort
            log.debug("could not post event %s for %s", reason, env.name, exc_info=True)

    # --- namespace -------------------------------------------------------------------------

    async def namespace_conflict(self, env: Environment) -> tuple[Obj | None, str | None]:
        """The namespace (if it exists) and why it cannot be used (None if it can)."""
        ns = await self.reads.namespace(env.namespace)
        if ns is None:
            return None, None
        owners = (ns.get("metadata") or {}).get("ownerReferences") or []
        if any(o.get("uid") == env.uid for o in owners):
            return ns, None
        return ns, (
            f"namespace {env.namespace} already exists and does not belong to this "
            "TestEnvironment; it is never adopted: delete it or choose another spec.namespace"
        )

    async def _create_namespace(self, env: Environment, namespace: render.Obj) -> bool:
        """Create the namespace: a create, never an apply, so that an existing namespace is
        never modified (no read-then-write race: the API server decides). False if one of that
        name exists that is not this environment's (the status then says so)."""
        if await self.kube.create(namespace) is not None:
            return True
        current = await self.kube.get("Namespace", env.namespace)
        owners = ((current or {}).get("metadata") or {}).get("ownerReferences") or []
        return any(o.get("uid") == env.uid for o in owners)

    # --- apply -----------------------------------------------------------------------------

    async def apply(self, env: Environment, state: EnvState) -> bool:
        """Apply every object; False (and nothing applied) on a namespace conflict, or while
        the namespace is being deleted (``reapply`` stays set: the namespace's DELETED event
        wakes the monitor, which then recreates everything). A few environments at a time:
        in a burst, the others wait their turn instead of all holding their rendered objects
        and waiting for the same API requests (bench/scale.py: memory and fairness)."""
        async with self._applying:
            return await self._apply(env, state)

    async def _apply(self, env: Environment, state: EnvState) -> bool:
        ns, conflict = await self.namespace_conflict(env)
        if conflict:
            return False
        if _terminating(ns):
            state.reapply = True
            return False
        children, jobs = await self._workloads(env)
        ready = ready_workloads(env.spec, self._template_hashes(env, state), jobs, children)
        with_pods = {s for p in children if (s := service_of(p))}
        started = startable(env.spec, with_pods | set(jobs), ready)
        objects = render.render_environment(
            env.name, env.uid, env.spec, started, self.settings.render_options
        )
        namespace, rest = objects[0], objects[1:]
        if ns is None and not await self._create_namespace(env, namespace):
            return False
        # The Secrets exist before any pod that reads them, or the kubelet reports
        # CreateContainerConfigError ("secret not found") for pods created in between.
        secret = render.render_secret(env.name, env.uid, env.spec, secrets.token_urlsafe(32))
        created_secret = await self.kube.create(secret) is not None
        await self._ensure_credentials(env)
        rest = await self._without_current_jobs(env, rest, jobs)
        wanted_pods = [obj for obj in rest if obj["kind"] == "Pod"]
        await asyncio.gather(*(self.kube.apply(obj) for obj in rest if obj["kind"] != "Pod"))
        # After the files' ConfigMaps: a pod created before its files waits for them.
        await self._sync_pods(env, state, started, wanted_pods, children)
        state.started = started
        first = state.applied_generation is None
        state.applied_generation = env.generation
        state.applied_at = self.clock()
        state.reapply = False
        state.published = None
        what = f"applied {len(objects) + 1} objects in namespace {env.namespace}"
        if created_secret:  # one event, not two: each is an API write
            what = f"created namespace {env.namespace}; {what}"
        self._event(env, "Normal", "Applied" if first else "Reapplied", what)
        return True

    async def _workloads(self, env: Environment) -> tuple[list[Obj], dict[str, Obj]]:
        """The environment's pods (its services' and its jobs') and its Jobs by name. A pod
        labelled as a service's that this environment does not control (a Deployment's, left
        by an operator before docs/decisions/0002; anyone's) is not the service's: it is
        neither counted nor deleted."""
        children, jobs = await asyncio.gather(
            self.reads.children("Pod", env.name, env.namespace),
            self.reads.children("Job", env.name, env.namespace),
        )
        ours = [p for p in children if not service_of(p) or controlled_by(p, env.uid)]
        return ours, {str(j["metadata"]["name"]): j for j in jobs}

    def _template_hashes(self, env: Environment, state: EnvState) -> dict[str, str]:
        """Each service's pod template hash (rendered once per generation of the spec)."""
        if env.generation is None or state.hashed_generation != env.generation:
            state.template_hashes = {
                svc.name: render.pod_template_hash(
                    env.name, env.uid, env.spec, svc, self.settings.render_options
                )
                for svc in env.spec.services
            }
            state.hashed_generation = env.generation
        return state.template_hashes

    async def _sync_pods(
        self,
        env: Environment,
        state: EnvState,
        started: set[str],
        wanted: list[render.Obj],
        children: list[Obj],
    ) -> None:
        """Make the pods of each started service those ``wanted`` (rendered, one per slot)
        as :func:`plan_pods` says: create what is missing; delete what is outdated, a
        replica too many or finished, and the pods of a service no longer in the spec. A
        create the API server refuses for a quota or a policy (403) is recorded as the
        service's ``FailedCreate`` and tried again on later passes."""
        hashes = self._template_hashes(env, state)
        creates: list[render.Obj] = []
        deletes: list[str] = []
        for svc in env.spec.services:
            if svc.name not in started:
                continue
            rendered = [p for p in wanted if p["metadata"]["labels"][SERVICE_LABEL] == svc.name]
            current = labelled(children, SERVICE_LABEL, svc.name)
            plan = plan_pods(svc.name, hashes[svc.name], len(rendered), current)
            for slot, name in plan.create:
                pod = copy.deepcopy(rendered[slot])
                pod["metadata"]["name"] = name
                creates.append(pod)
            deletes += plan.delete
        in_spec = {svc.name for svc in env.spec.services}
        deletes += [
            name_of(p)
            for p in children
            if (service := service_of(p)) and service not in in_spec and not terminating(p)
        ]
        results = await asyncio.gather(
            *(self._create_pod(env, state, pod) for pod in creates),
            *(self.kube.delete("Pod", name, env.namespace) for name in deletes),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _sync_started_pods(self, env: Environment, state: EnvState) -> None:
        """Replace the started services' missing pods, nothing else (a pod being deleted or
        evicted, not a whole environment's objects to apply again)."""
        children, _ = await self._workloads(env)
        wanted = [
            pod
            for svc in env.spec.services
            if svc.name in state.started
            for pod in render.render_pods(
                env.name, env.uid, env.spec, svc, self.settings.render_options
            )
        ]
        await self._sync_pods(env, state, state.started, wanted, children)

    async def _create_pod(self, env: Environment, state: EnvState, pod: render.Obj) -> None:
        service = str(pod["metadata"]["labels"][SERVICE_LABEL])
        try:
            await self.kube.create(pod)  # None: it exists (its DELETED event wakes us)
        except KubeError as exc:
            if exc.status != 403 or not _refused(exc):
                raise
            message = exc.message
            if len(message) > MAX_REFUSAL_MESSAGE:
                message = message[:MAX_REFUSAL_MESSAGE] + "…"
            if state.refused_pods.get(service) != message:
                self._event(env, "Warning", diagnose.FAILED_CREATE, message)
            state.refused_pods[service] = message
            return
        state.refused_pods.pop(service, None)

    async def _without_current_jobs(
        self, env: Environment, objects: list[render.Obj], jobs: Mapping[str, Obj]
    ) -> list[render.Obj]:
        """``objects`` without the Jobs that exist already. A Job's template cannot change: an
        existing Job rendered from something else is deleted (its deletion wakes the monitor,
        which then creates it anew)."""
        kept = []
        for obj in objects:
            existing = jobs.get(obj["metadata"]["name"]) if obj["kind"] == "Job" else None
            if existing is None:
                kept.append(obj)
                continue
            want = obj["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]
            have = ((existing.get("metadata") or {}).get("annotations") or {}).get(
                TEMPLATE_HASH_ANNOTATION
            )
            if have != want and not (existing.get("metadata") or {}).get("deletionTimestamp"):
                self._event(
                    env,
                    "Normal",
                    "JobChanged",
                    f"job {obj['metadata']['name']} changed: rerunning it",
                )
                await self.kube.delete("Job", obj["metadata"]["name"], env.namespace)
        return kept

    async def _ensure_credentials(self, env: Environment) -> None:
        """Generate the secrets the spec names that the Secret does not hold yet (values are
        generated once and never changed; they are never logged)."""
        names = env.spec.secret_names()
        if not names:
            return
        existing = await self.kube.get("Secret", CREDENTIALS_SECRET, env.namespace)
        data = {
            key: base64.b64decode(value).decode()
            for key, value in ((existing or {}).get("data") or {}).items()
        }
        missing = [n for n in names if n not in data]
        if not missing:
            return
        values = {**data, **{n: render.generate_secret(env.spec.secret_spec(n)) for n in missing}}
        obj = render.render_credentials(env.name, env.uid, env.spec, values)
        if existing is None:
            if await self.kube.create(obj) is None:  # created meanwhile: add to that one
                await self._ensure_credentials(env)
        else:
            await self.kube.apply(obj)
        self._event(env, "Normal", "SecretsGenerated", "generated " + ", ".join(missing))

    # --- observe & status ------------------------------------------------------------------

    async def _details(
        self,
        env: Environment,
        so: ServiceObservation,
        finding: diagnose.Finding | None,
        secrets: list[str],
    ) -> tuple[list[str], list[str]]:
        """Last events and log lines of a failing service (``secrets`` redacted)."""
        pods = live_pods(so.pods)
        pod_name = (
            finding.pod if finding else (str(pods[0]["metadata"]["name"]) if pods else so.spec.name)
        )
        events_raw = await self.kube.list(
            "Event", env.namespace, field_selector=f"involvedObject.name={pod_name}"
        )
        events = diagnose.last_events(events_raw, secrets=secrets)
        lines: list[str] = []
        if pods and self.settings.log_tail_lines:
            container = finding.container if finding else so.spec.name
            logs = await self.kube.pod_logs(
                env.namespace,
                pod_name,
                container,
                previous=bool(finding and finding.previous_logs),
                tail=self.settings.log_tail_lines,
            )
            lines = diagnose.last_lines(logs, self.settings.log_tail_lines, secrets)
        return events, lines

    async def _reset(self, env: Environment, previous: ResetStatus | None) -> ResetStatus | None:
        """Run the ``run: reset`` jobs once per value of the reset annotation (a client sets
        a new one to ask for clean data); a Job left from an earlier reset is deleted first."""
        request = env.annotations.get(RESET_ANNOTATION)
        if not request:
            return None
        if (
            previous is not None
            and previous.request == request
            and previous.phase
            in (
                JobPhase.SUCCEEDED,
                JobPhase.FAILED,
            )
        ):
            return previous
        jobs = env.spec.reset_jobs
        if not jobs:
            return ResetStatus(
                request=request,
                phase=JobPhase.FAILED,
                message="nothing to run: the spec has no job with run: reset",
            )
        if previous is None or previous.request != request:
            names = ", ".join(j.name for j in jobs)
            self._event(env, "Normal", "Resetting", f"a client asked for a reset: running {names}")
        pods, existing = await self._workloads(env)
        verdicts: list[JobStatus] = []
        for job in jobs:
            obj = existing.get(job.name)
            meta = (obj or {}).get("metadata") or {}
            if obj is not None and (meta.get("annotations") or {}).get(RESET_ANNOTATION) != request:
                if not meta.get("deletionTimestamp"):
                    await self.kube.delete("Job", job.name, env.namespace)
                verdicts.append(JobStatus(name=job.name, phase=JobPhase.WAITING))
                continue
            if obj is None:
                objects = render.render_workload(
                    env.name, env.uid, env.spec, job, self.settings.render_options
                )
                objects[-1]["metadata"]["annotations"][RESET_ANNOTATION] = request
                for obj_ in objects:
                    await self.kube.apply(obj_)
                verdicts.append(JobStatus(name=job.name, phase=JobPhase.RUNNING))
                continue
            jo = JobObservation(
                spec=job,
                job=obj,
                pods=[
                    p
                    for p in pods
                    if ((p.get("metadata") or {}).get("labels") or {}).get(JOB_LABEL) == job.name
                ],
            )
            verdict = job_verdict(jo, created=env.created)
            if verdict.phase is JobPhase.FAILED:
                secrets = await self._secret_values(env)
                jo.events, jo.log_lines = await self._job_details(env, jo, secrets)
                verdict = job_verdict(jo, created=env.created)
            verdicts.append(verdict)
        failed = [v for v in verdicts if v.phase is JobPhase.FAILED]
        if failed:
            message = "; ".join(v.message or v.name for v in failed)
            self._event(env, "Warning", "ResetFailed", message)
            return ResetStatus(request=request, phase=JobPhase.FAILED, message=message)
        if all(v.phase is JobPhase.SUCCEEDED for v in verdicts):
            self._event(env, "Normal", "ResetDone", "the reset jobs succeeded")
            return ResetStatus(request=request, phase=JobPhase.SUCCEEDED, message="done")
        running = ", ".join(v.name for v in verdicts if v.phase is not JobPhase.SUCCEEDED)
        return ResetStatus(request=request, phase=JobPhase.RUNNING, message=f"running {running}")

    async def _secret_values(self, env: Environment) -> list[str]:
        """The environment's secret values, to redact from what is copied out of it (read
        only when a failure is diagnosed; the operator may read these two Secrets only)."""
        found = await asyncio.gather(
            *(
                self.kube.get("Secret", n, env.namespace)
                for n in (CREDENTIALS_SECRET, SERVICES_SECRET)
            )
        )
        return [
            base64.b64decode(value).decode(errors="replace")
            for secret in found
            for value in ((secret or {}).get("data") or {}).values()
        ]

    async def _job_details(
        self, env: Environment, jo: JobObservation, secrets: list[str]
    ) -> tuple[list[str], list[str]]:
        """Last events and log lines of a failed job's newest pod (``secrets`` redacted)."""
        pods = sorted(
            jo.pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or "")
        )
        target = str(pods[-1]["metadata"]["name"]) if pods else jo.spec.name
        events_raw = await self.kube.list(
            "Event", env.namespace, field_selector=f"involvedObject.name={target}"
        )
        lines: list[str] = []
        if pods and self.settings.log_tail_lines:
            logs = await self.kube.pod_logs(
                env.namespace,
                target,
                jo.spec.name,
                previous=False,
                tail=self.settings.log_tail_lines,
            )
            lines = diagnose.last_lines(logs, self.settings.log_tail_lines, secrets)
        return diagnose.last_events(events_raw, secrets=secrets), lines

    async def observe(self, env: Environment, state: EnvState) -> tuple[Observation, list[str]]:
        ns, conflict = await self.namespace_conflict(env)
        obs = Observation(
            name=env.name,
            generation=state.applied_generation or env.generation,
            created=env.created,
            now=self.clock(),
            spec=env.spec,
            namespace=ns,
            conflict=conflict,
        )
        if _terminating(ns):
            obs.terminating = True
            return obs, []
        if conflict or ns is None:
            return obs, [] if conflict else ["Namespace/" + env.namespace]
        (pods, jobs), services, configmaps = await asyncio.gather(
            self._workloads(env),
            self.reads.children("Service", env.name, env.namespace),
            self.reads.children("ConfigMap", env.name, env.namespace),
        )
        discovery = next(
            (c for c in configmaps if c["metadata"]["name"] == DISCOVERY_CONFIGMAP), None
        )
        service_names = {str(s["metadata"]["name"]) for s in services}
        applied = state.applied_at or env.created
        hashes = self._template_hashes(env, state)
        ready = ready_workloads(env.spec, hashes, jobs, pods)
        missing: list[str] = []

        def pods_labelled(label: str, value: str) -> list[Obj]:
            return labelled(pods, label, value)

        for svc in env.spec.services:
            svc_pods = pods_labelled(SERVICE_LABEL, svc.name)
            waits = waiting_for(svc, ready) if not svc_pods else []
            if not waits:
                plan = plan_pods(svc.name, hashes[svc.name], svc.replicas, svc_pods)
                missing += [f"Pod/{name}" for _, name in plan.create]
            if svc.name not in service_names:
                missing.append(f"Service/{svc.name}")
            # The readiness timeout counts from its first current pod's creation (dependsOn).
            created = _earliest_created(
                p for p in svc_pods if template_hash_of(p) == hashes[svc.name]
            )
            since = max(applied, created) if created is not None else applied
            obs.services.append(
                ServiceObservation(
                    spec=svc,
                    template_hash=hashes[svc.name],
                    pods=svc_pods,
                    deadline=None if waits else since + parse_duration(svc.readiness_timeout),
                    waiting_for=waits,
                    refused=state.refused_pods.get(svc.name),
                )
            )
        for job in env.spec.setup_jobs:
            existing = jobs.get(job.name)
            waits = waiting_for(job, ready) if existing is None else []
            if existing is None and not waits:
                missing.append(f"Job/{job.name}")
            obs.jobs.append(
                JobObservation(
                    spec=job,
                    job=existing,
                    pods=pods_labelled(JOB_LABEL, job.name),
                    waiting_for=waits,
                )
            )
        wanted = render.render_discovery(env.name, env.uid, env.spec)["data"]
        obs.discovery_published = state.published == wanted or (
            discovery is not None and (discovery.get("data") or {}) == wanted
        )
        return obs, missing

    async def refresh(self, env: Environment, state: EnvState) -> RefreshResult:
        previous = parse_status(env.body.get("status") or {})
        obs, missing = await self.observe(env, state)
        if obs.namespace is not None and not (obs.conflict or obs.terminating):
            obs.reset = await self._reset(env, previous.reset if previous else None)
        status = compute_status(obs, previous)

        # Evidence for new failures: last events and log lines of the failing pods.
        prev_services = {s.name: s for s in (previous.services if previous else [])}
        needs_details = [
            so
            for so, st in zip(obs.services, status.services, strict=True)
            if st.reason in {*diagnose.FATAL_REASONS, diagnose.CRASH_REASON, "ReadinessTimeout"}
            and (
                prev_services.get(so.spec.name) is None
                or prev_services[so.spec.name].reason != st.reason
            )
        ]
        prev_jobs = {j.name: j for j in (previous.jobs if previous else [])}
        failed_jobs = [
            jo
            for jo, st in zip(obs.jobs, status.jobs, strict=True)
            if st.phase is JobPhase.FAILED
            and (
                prev_jobs.get(jo.spec.name) is None
                or prev_jobs[jo.spec.name].phase is not JobPhase.FAILED
            )
        ]
        if needs_details or failed_jobs:
            secrets = await self._secret_values(env)  # once, for every failure's evidence
            details = await asyncio.gather(
                *(
                    self._details(env, so, diagnose.diagnose_pods(live_pods(so.pods)), secrets)
                    for so in needs_details
                )
            )
            for so, (events, lines) in zip(needs_details, details, strict=True):
                so.events, so.log_lines = events, lines
            job_details = await asyncio.gather(
                *(self._job_details(env, jo, secrets) for jo in failed_jobs)
            )
            for jo, (events, lines) in zip(failed_jobs, job_details, strict=True):
                jo.events, jo.log_lines = events, lines
            status = compute_status(obs, previous)

        jobs_done = all(j.phase is JobPhase.SUCCEEDED for j in status.jobs)
        all_ready = bool(status.services) and all(s.ready for s in status.services) and jobs_done
        if not env.spec.services:
            all_ready = obs.namespace is not None and not obs.conflict and jobs_done
        if all_ready and not obs.discovery_published and not missing:
            discovery = render.render_discovery(env.name, env.uid, env.spec)
            await self.kube.apply(discovery)
            state.published = discovery["data"]
            obs.discovery_published = True
            status = compute_status(obs, previous)  # its Ready event says "discovery published"

        # The stored status and the new one, serialized once for both comparisons (a stored
        # status that is absent or not understood counts as changed: it is rewritten).
        old_wire, new_wire = (previous.to_wire() if previous else None), status.to_wire()
        changed = old_wire != new_wire
        held_until = (
            self._progress_held_until(state, previous, status, old_wire, new_wire)
            if changed
            else None
        )
        if changed and held_until is None:
            written = await self.kube.patch_status(env.name, status_patch(status))
            state.written_status = (written or {}).get("status") or new_wire
            state.written_at = self.clock()
            self._post_transitions(env, previous, status)

        deadlines = [
            so.deadline
            for so, st in zip(obs.services, status.services, strict=True)
            if not st.ready and so.deadline is not None and so.deadline > obs.now
        ]
        if held_until is not None:
            deadlines.append(held_until)
        if missing and state.applied_at is not None and not self._settled(state):
            # Look again once the reads can be trusted (a dependency just became Ready).
            deadlines.append(state.applied_at + self.reads.lag)
        return RefreshResult(status, missing, min(deadlines) if deadlines else None)

    def _progress_held_until(
        self,
        state: EnvState,
        previous: TestEnvironmentStatus | None,
        status: TestEnvironmentStatus,
        old_wire: Obj | None,
        new_wire: Obj,
    ) -> datetime | None:
        """When a changed status that only reports progress may be written (None: now).
        ``old_wire``, ``new_wire``: ``previous`` and ``status`` as stored.

        Every status write is an API write, a watch event for each watcher of the
        TestEnvironment and a pass of the operator; a provisioning pod changes the status
        three or four times a second apart. A new phase (Ready, Failed...), a failure reason
        (sticky, with its evidence), a new generation and the first status are never held."""
        interval = timedelta(seconds=self.settings.status_interval)
        if (
            not interval
            or previous is None
            or old_wire is None
            or state.written_at is None
            or previous.phase is not Phase.PROVISIONING
            or status.phase is not Phase.PROVISIONING
            or any(s.reason in STICKY_REASONS for s in status.services)
        ):
            return None
        keys = (old_wire.keys() | new_wire.keys()) - PROGRESS_FIELDS
        if any(old_wire.get(key) != new_wire.get(key) for key in keys):
            return None  # a reset, a job, a new generation...: at once
        due = state.written_at + interval
        return due if due > self.clock() else None

    def _post_transitions(
        self, env: Environment, old: TestEnvironmentStatus | None, new: TestEnvironmentStatus
    ) -> None:
        before = {s.name: s for s in (old.services if old else [])}
        # A service that turns Ready with its environment is told by the environment's event.
        all_ready_now = new.phase is Phase.READY and (old is None or old.phase is not Phase.READY)
        for svc in new.services:
            prev = before.get(svc.name)
            if svc.ready and not (prev and prev.ready):
                if all_ready_now:
                    continue
                self._event(env, "Normal", "ServiceReady", f"service {svc.name} is Ready")
            elif svc.reason and svc.message and (prev is None or prev.reason != svc.reason):
                if svc.reason in {
                    *diagnose.FATAL_REASONS,
                    diagnose.CRASH_REASON,
                    "ReadinessTimeout",
                }:
                    self._event(env, "Warning", svc.reason, svc.message)
        old_phase = old.phase if old else None
        if new.phase != old_phase:
            if new.phase is Phase.READY:
                reason = "Recovered" if old_phase is Phase.DEGRADED else "Ready"
                self._event(env, "Normal", reason, new.message or "")
            elif new.phase in (Phase.FAILED, Phase.DEGRADED):
                ready = next((c for c in new.conditions if c.type == "Ready"), None)
                reason = ready.reason if ready is not None else new.phase.value
                self._event(env, "Warning", reason, new.message or "")
            else:
                self._event(env, "Normal", new.phase.value, new.message or "")

    # --- the reconcile ---------------------------------------------------------------------

    async def reconcile(self, body: Obj) -> RefreshResult | None:
        """Apply (when needed) and refresh the status. Idempotent.

        The TestEnvironment is read again under the environment's lock, so that concurrent
        callers each see the status the previous one wrote.
        None if the environment is gone.
        """
        meta = body.get("metadata") or {}
        name, uid = str(meta["name"]), str(meta.get("uid", ""))
        state = self.state(name, uid)
        async with state.lock:
            fresh = await self._environment(name, state)
            if fresh is None or (fresh.get("metadata") or {}).get("uid") != uid:
                return None
            try:
                env = self.environment(fresh)
            except InvalidSpec as exc:
                await self._fail_invalid(fresh, str(exc))
                raise
            if state.refused_generation == env.generation:
                raise InvalidSpec(state.refused_message or "refused by the API server")
            needs_apply = state.reapply or state.applied_generation != env.generation
            if needs_apply:
                await self._apply_or_fail(env, state)
            result = await self._refresh_or_fail(env, state)
            names = missing_workloads(result.missing)
            # Start what became startable at once; recreate what vanished once reads settled
            # and the API confirms it (a busy operator's watch cache lags: re-applying
            # everything on its word made a burst of environments slower still).
            if (
                result.missing
                and state.applied_generation is not None
                and names <= state.started
                and self._settled(state)
            ):
                result.missing = await self._confirmed_missing(env, result.missing)
                names = missing_workloads(result.missing)
            if (
                result.missing
                and state.applied_generation is not None
                and (self._settled(state) or not names <= state.started)
            ):
                if names <= state.started:
                    # Not again and again for pods a quota keeps refusing (FailedCreate says it).
                    again = [
                        m
                        for m in result.missing
                        if missing_workloads([m]) - state.refused_pods.keys()
                    ]
                    if again:
                        self._event(env, "Normal", "Recreating", "recreating " + ", ".join(again))
                else:
                    self._event(
                        env,
                        "Normal",
                        "Starting",
                        "starting "
                        + ", ".join(sorted(names - state.started))
                        + ": what they depend on is Ready",
                    )
                if names <= state.started and all(m.startswith("Pod/") for m in result.missing):
                    await self._apply_or_fail(env, state, pods_only=True)
                else:
                    await self._apply_or_fail(env, state)
                fresh = await self._environment(name, state)
                if fresh is None:
                    return None
                result = await self._refresh_or_fail(self.environment(fresh), state)
            return result

    async def _confirmed_missing(self, env: Environment, missing: list[str]) -> list[str]:
        """Those of ``missing`` (``Kind/name``) that the API server does not have either."""
        found = await asyncio.gather(
            *(self.kube.get(m.split("/", 1)[0], m.split("/", 1)[1], env.namespace) for m in missing)
        )
        return [m for m, obj in zip(missing, found, strict=True) if obj is None]

    def _settled(self, state: EnvState) -> bool:
        """Whether the reads can be trusted to show what was applied: a watch cache shows a
        write a moment later, so an object missing right after an apply is not yet missing
        (a deletion wakes the monitor with ``reapply`` anyway)."""
        return state.applied_at is None or self.clock() - state.applied_at >= self.reads.lag

    async def _environment(self, name: str, state: EnvState) -> Obj | None:
        """The TestEnvironment from the reads, with the status this operator last wrote (a
        cache may not show that write yet; nobody else writes the status)."""
        body = await self.reads.environment(name)
        if body is None or state.written_status is None:
            return body
        return {**body, "status": state.written_status}

    async def _apply_or_fail(
        self, env: Environment, state: EnvState, *, pods_only: bool = False
    ) -> None:
        """Apply (``pods_only``: only make the started services' pods what they should be);
        an object the API server refuses (a 4xx other than a conflict or a missing object)
        makes this generation of the spec Failed, with the server's reason, instead of being
        retried forever. A new generation (an edited spec) is tried again."""
        try:
            if pods_only:
                await self._sync_started_pods(env, state)
            else:
                await self.apply(env, state)
        except KubeError as exc:
            if not _refused(exc):
                raise
            await self._refuse(env, state, "the environment's objects", exc)

    async def _refresh_or_fail(self, env: Environment, state: EnvState) -> RefreshResult:
        """Refresh; a refusal of what it writes (the discovery ConfigMap, a reset Job, the
        status) fails this generation like a refused apply does."""
        try:
            return await self.refresh(env, state)
        except KubeError as exc:
            if not _refused(exc):
                raise
            await self._refuse(env, state, "what the environment publishes", exc)

    async def _refuse(
        self, env: Environment, state: EnvState, what: str, exc: KubeError
    ) -> NoReturn:
        """Record the refusal of this generation, write Failed with the server's reason (cut
        to :data:`MAX_REFUSAL_MESSAGE`), post it once and raise :class:`InvalidSpec`."""
        reason = exc.message
        if len(reason) > MAX_REFUSAL_MESSAGE:
            reason = reason[:MAX_REFUSAL_MESSAGE] + "…"
        message = f"the API server refused {what}: {reason}"
        state.refused_generation, state.refused_message = env.generation, message
        state.written_status = await self._fail_invalid(env.body, message)
        self._event(env, "Warning", "Refused", message)
        raise InvalidSpec(message) from exc

    async def _fail_invalid(self, body: Obj, message: str) -> Obj | None:
        """Write a Failed status holding only ``message``; the status written (None if the
        environment is gone)."""
        name = str((body.get("metadata") or {})["name"])
        status = TestEnvironmentStatus(phase=Phase.FAILED, message=message)
        written = await self.kube.patch_status(name, status_patch(status))
        return (written or {}).get("status")

    async def expire_if_due(self, env: Environment) -> expiry.Deadline | None:
        due = expiry.expired(self.clock(), env.created, env.spec, env.lease_renewed)
        if due is None:
            return None
        meta = env.body.get("metadata") or {}
        preconditions = {"uid": env.uid, "resourceVersion": meta.get("resourceVersion")}
        try:
            # Only the object this decision was made on: a renewed (or re-created) one has
            # another resourceVersion (or uid) and the API server refuses the deletion.
            await self.kube.delete(
                "TestEnvironment",
                env.name,
                preconditions={k: v for k, v in preconditions.items() if v},
            )
        except Conflict:
            log.info("%s changed while expiring it; looking again", env.name)
            return None
        self._event(env, "Normal", due.reason, f"deleted the environment: {due.message}")
        return due

    # --- the monitor -----------------------------------------------------------------------

    def ensure_monitor(self, name: str, uid: str) -> EnvState:
        state = self.state(name, uid)
        if state.task is None or state.task.done():
            state.task = asyncio.create_task(self._monitor(name, state), name=f"monitor/{name}")
        return state

    def nudge(self, name: str, *, reapply: bool = False) -> None:
        state = self.states.get(name)
        if state is None:
            return
        if reapply:
            state.reapply = True
        state.wake.set()

    async def stop(self, name: str) -> None:
        state = self.states.pop(name, None)
        if state is not None and state.task is not None:
            state.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await state.task

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self.states)))

    def environment_for_expiry(self, body: Obj) -> Environment:
        """The environment, or for a spec the operator cannot use, one with its ttl and lease
        where those are valid (else the default ttl): every environment ends."""
        try:
            return self.environment(body)
        except InvalidSpec:
            raw = body.get("spec") or {}
            times: dict[str, Any] = {"ttl": self.settings.default_ttl}
            for key in ("ttl", "lease"):
                try:
                    TestEnvironmentSpec(services=[], **{key: raw.get(key)})
                except (ValidationError, TypeError):
                    continue
                if raw.get(key) is not None:
                    times[key] = raw[key]
            spec = TestEnvironmentSpec(services=[], **times)
            meta = body.get("metadata") or {}
            return Environment(
                body=body,
                name=str(meta["name"]),
                uid=str(meta.get("uid", "")),
                generation=meta.get("generation"),
                created=parse_time(meta.get("creationTimestamp")) or now(),
                annotations=dict(meta.get("annotations") or {}),
                spec=spec,
                lease_renewed=expiry.lease_renewed_at(meta),
            )

    async def _monitor(self, name: str, state: EnvState) -> None:
        backoff = 1.0
        while True:
            state.wake.clear()
            wake_at: datetime | None = None
            due_at: datetime | None = None
            try:
                body = await self.reads.environment(name)
                meta = (body or {}).get("metadata") or {}
                if body is None or meta.get("uid") != state.uid or meta.get("deletionTimestamp"):
                    self.states.pop(name, None)
                    return
                env = self.environment_for_expiry(body)
                if await self.expire_if_due(env):
                    self.states.pop(name, None)
                    return
                due_at = expiry.deadline(env.created, env.spec, env.lease_renewed).at
                result = await self.reconcile(body)
                if result is None:
                    self.states.pop(name, None)
                    return
                due = expiry.deadline(env.created, env.spec, env.lease_renewed).at
                wake_at = min(d for d in (result.wake_at, due) if d is not None)
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except InvalidSpec:
                wake_at = due_at  # a Failed environment still ends at its ttl
            except (KubeError, OSError, Exception) as exc:  # keep monitoring whatever happens
                log.warning("reconcile of %s failed (retrying in %.0fs): %s", name, backoff, exc)
                wake_at = self.clock() + timedelta(seconds=backoff)
                backoff = min(backoff * 2, 30.0)
            timeout = self.settings.resync_interval
            if wake_at is not None:
                timeout = min(timeout, max(0.05, (wake_at - self.clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.wake.wait(), timeout)
