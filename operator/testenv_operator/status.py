"""Compute a TestEnvironment's status from what the cluster shows (pure functions).

The reconciler gathers an :class:`Observation` (the pods of each service and their template, the
namespace, whether discovery is published, readiness deadlines) and the previous status;
:func:`compute_status` returns the new status. Previous values matter for three things only:
timings are kept once recorded, ``lastTransitionTime`` changes only with a condition's
status, and a failure stays a failure for the same generation until the service is Ready.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from testenv.api import (
    SERVICE_LABEL,
    Condition,
    ConditionType,
    JobPhase,
    JobSpec,
    JobStatus,
    Phase,
    ResetStatus,
    ServiceSpec,
    ServiceStatus,
    ServiceTimings,
    TestEnvironmentSpec,
    TestEnvironmentStatus,
    Timings,
)
from testenv_operator import diagnose
from testenv_operator.expiry import expires_at
from testenv_operator.pods import live_pods, template_hash_of
from testenv_operator.render import service_url
from testenv_operator.timeutil import format_time, parse_time, seconds_since

Obj = Mapping[str, Any]

NAMESPACE_CONFLICT = "NamespaceConflict"
NAMESPACE_DELETED = "NamespaceDeleted"
WAITING_FOR_DEPENDENCIES = "WaitingForDependencies"
JOB_FAILED = "JobFailed"
READINESS_TIMEOUT = "ReadinessTimeout"
# Reasons that keep a service Failed (for the same generation) until it is Ready.
STICKY_REASONS = diagnose.FATAL_REASONS | {READINESS_TIMEOUT, diagnose.CRASH_REASON}


@dataclass
class ServiceObservation:
    spec: ServiceSpec
    #: The template hash its pods should have (None: unknown, none counts as current).
    template_hash: str | None = None
    #: Every pod of the service (outdated, terminating and finished ones included).
    pods: Sequence[Obj] = ()
    deadline: datetime | None = None  # readiness timeout of the current generation
    #: Dependencies not Ready yet, while the service has no pod (dependsOn).
    waiting_for: Sequence[str] = ()
    #: Why the API server refused to create one of its pods (a quota, a policy), if it did.
    refused: str | None = None
    # Evidence for a failure message (last events, last log lines), fetched on failure.
    events: Sequence[str] = ()
    log_lines: Sequence[str] = ()


@dataclass
class JobObservation:
    spec: JobSpec
    job: Obj | None = None
    pods: Sequence[Obj] = ()
    waiting_for: Sequence[str] = ()
    events: Sequence[str] = ()
    log_lines: Sequence[str] = ()


@dataclass
class Observation:
    name: str
    generation: int | None
    created: datetime
    now: datetime
    spec: TestEnvironmentSpec
    namespace: Obj | None = None
    services: list[ServiceObservation] = field(default_factory=list)
    jobs: list[JobObservation] = field(default_factory=list)
    discovery_published: bool = False
    conflict: str | None = None  # why the namespace cannot be used
    #: The namespace is being deleted (by someone else: the operator never deletes it).
    terminating: bool = False
    #: The last reset a client asked for (run: reset jobs), if any.
    reset: ResetStatus | None = None


# --- per service ---------------------------------------------------------------------------


def pods_ready(template_hash: str | None, replicas: int, pods: Sequence[Obj]) -> tuple[bool, int]:
    """(ready, ready replicas) of a service: ``replicas`` Ready live pods of the current
    template (``template_hash``) and no other live pod (an outdated one not yet deleted, a
    replica too many)."""
    if template_hash is None:
        return False, 0
    live = live_pods(pods)
    ready = [
        p
        for p in live
        if template_hash_of(p) == template_hash and _pod_condition_time(p, "Ready") is not None
    ]
    return len(ready) >= replicas and len(live) <= replicas, len(ready)


def _earliest(values: Sequence[datetime | None]) -> datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _pod_condition_time(pod: Obj, kind: str) -> datetime | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return parse_time(cond.get("lastTransitionTime"))
    return None


def _pod_started(pod: Obj) -> datetime | None:
    times = [
        parse_time(((cs.get("state") or {}).get("running") or {}).get("startedAt"))
        for cs in (pod.get("status") or {}).get("containerStatuses") or []
    ]
    return _earliest(times)


def service_timings(
    created: datetime, pods: Sequence[Obj], previous: ServiceTimings | None, *, ready: bool
) -> ServiceTimings:
    """Seconds to each step. ``ready`` is taken from the pods only once the service is Ready
    (all its replicas): a ``ready`` time means "was Ready" (a later not-ready is Degraded,
    not Provisioning)."""
    prev = previous or ServiceTimings()
    return ServiceTimings(
        scheduled=prev.scheduled
        if prev.scheduled is not None
        else seconds_since(
            created, _earliest([_pod_condition_time(p, "PodScheduled") for p in pods])
        ),
        started=prev.started
        if prev.started is not None
        else seconds_since(created, _earliest([_pod_started(p) for p in pods])),
        ready=prev.ready
        if prev.ready is not None or not ready
        else seconds_since(created, _earliest([_pod_condition_time(p, "Ready") for p in pods])),
    )


@dataclass(frozen=True)
class ServiceVerdict:
    status: ServiceStatus
    state: str  # "ready" | "progressing" | "degraded" | "failed"


def service_verdict(
    obs: ServiceObservation,
    *,
    namespace: str,
    created: datetime,
    now: datetime,
    previous: ServiceStatus | None,
    same_generation: bool,
) -> ServiceVerdict:
    svc = obs.spec
    ready, ready_replicas = pods_ready(obs.template_hash, svc.replicas, obs.pods)
    timings = service_timings(
        created, obs.pods, previous.timings if previous else None, ready=ready
    )
    if ready and timings.ready is None:
        timings = timings.model_copy(update={"ready": seconds_since(created, now)})
    was_ready = previous is not None and (previous.ready or previous.timings.ready is not None)
    base: dict[str, Any] = {
        "name": svc.name,
        "ready": ready,
        "ready_replicas": ready_replicas,
        "replicas": svc.replicas,
        "url": service_url(svc, namespace),
        "timings": timings,
    }
    if ready:
        return ServiceVerdict(ServiceStatus(**base), "ready")
    if obs.waiting_for:
        message = f"service {svc.name} waits for {', '.join(obs.waiting_for)} (dependsOn)"
        return ServiceVerdict(
            ServiceStatus(**base, reason=WAITING_FOR_DEPENDENCIES, message=message), "progressing"
        )

    finding = diagnose.diagnose_pods(live_pods(obs.pods))
    if finding is not None:
        message = diagnose.describe(svc.name, finding, obs.events, obs.log_lines)
        if (
            previous is not None
            and previous.reason == finding.reason
            and previous.message
            and not (obs.events or obs.log_lines)
        ):
            # The evidence (events, log lines) is fetched once, when the failure appears.
            message = previous.message
        state = "degraded" if finding.crash and was_ready else "failed"
        return ServiceVerdict(ServiceStatus(**base, reason=finding.reason, message=message), state)
    if (
        previous is not None
        and same_generation
        and previous.reason in STICKY_REASONS
        and not previous.ready
    ):
        # A crash-looping container is briefly "running" between restarts; an image error
        # does not heal by itself: stay failed until the service is Ready or the spec changes.
        state = "degraded" if was_ready else "failed"
        return ServiceVerdict(
            ServiceStatus(**base, reason=previous.reason, message=previous.message), state
        )
    reason, detail = diagnose.pending_reason(live_pods(obs.pods), obs.refused)
    outdated = [p for p in live_pods(obs.pods) if template_hash_of(p) != obs.template_hash]
    if outdated and reason == "NotReady" and ready_replicas >= svc.replicas:
        reason, detail = "Replacing", f"deleting {len(outdated)} pod(s) of its previous spec"
    if was_ready:
        return ServiceVerdict(
            ServiceStatus(**base, reason=reason, message=f"service {svc.name}: {detail}"),
            "degraded",
        )
    if obs.deadline is not None and now >= obs.deadline:
        message = (
            f"service {svc.name}: not Ready within readinessTimeout {svc.readiness_timeout}: "
            f"{reason}: {detail}"
        )
        if obs.events:
            message += "; last events: " + " | ".join(obs.events)
        if obs.log_lines:
            message += "; last log lines: " + " | ".join(obs.log_lines)
        return ServiceVerdict(
            ServiceStatus(**base, reason=READINESS_TIMEOUT, message=message), "failed"
        )
    return ServiceVerdict(
        ServiceStatus(**base, reason=reason, message=f"service {svc.name}: {detail}"),
        "progressing",
    )


# --- start order (dependsOn) ----------------------------------------------------------------


def ready_workloads(
    spec: TestEnvironmentSpec,
    template_hashes: Mapping[str, str],
    jobs: Mapping[str, Obj],
    pods: Sequence[Obj] = (),
) -> set[str]:
    """Services whose pods of the current template (``template_hashes``: by service) are all
    Ready, and jobs that succeeded."""
    ready = {
        svc.name
        for svc in spec.services
        if pods_ready(
            template_hashes.get(svc.name), svc.replicas, labelled(pods, SERVICE_LABEL, svc.name)
        )[0]
    }
    return ready | {job.name for job in spec.setup_jobs if job_succeeded(jobs.get(job.name))}


def labelled(objs: Sequence[Obj], label: str, value: str) -> list[Obj]:
    return [o for o in objs if ((o.get("metadata") or {}).get("labels") or {}).get(label) == value]


def waiting_for(workload: ServiceSpec | JobSpec, ready: set[str]) -> list[str]:
    return [d for d in workload.depends_on if d not in ready]


def startable(spec: TestEnvironmentSpec, present: set[str], ready: set[str]) -> set[str]:
    """Services and jobs whose pods or Job may exist: those that exist already (a
    dependency that is no longer Ready stops nothing) and those whose dependencies are all
    Ready (services) or succeeded (jobs)."""
    return {w.name for w in spec.workloads if w.name in present or not waiting_for(w, ready)}


# --- per job -------------------------------------------------------------------------------


def _job_condition(job: Obj, kind: str) -> Obj | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def job_succeeded(job: Obj | None) -> bool:
    return job is not None and _job_condition(job, "Complete") is not None


def job_verdict(
    obs: JobObservation, *, created: datetime, previous: JobStatus | None = None
) -> JobStatus:
    """Waiting (for dependencies, or to be created), Running, Succeeded or Failed. A failure's
    message (with the evidence fetched when it happened) is kept while it lasts."""
    name = obs.spec.name
    if obs.job is None:
        message = (
            f"job {name} waits for {', '.join(obs.waiting_for)} (dependsOn)"
            if obs.waiting_for
            else f"job {name} is being created"
        )
        reason = WAITING_FOR_DEPENDENCIES if obs.waiting_for else "Creating"
        return JobStatus(name=name, phase=JobPhase.WAITING, reason=reason, message=message)
    status = obs.job.get("status") or {}
    times = {
        "started": seconds_since(created, parse_time(status.get("startTime"))),
        "finished": seconds_since(created, parse_time(status.get("completionTime"))),
    }
    if job_succeeded(obs.job):
        return JobStatus(name=name, phase=JobPhase.SUCCEEDED, reason="Succeeded", **times)
    failed = _job_condition(obs.job, "Failed")
    finding = diagnose.diagnose_pods(obs.pods)
    fatal = finding is not None and finding.reason in diagnose.FATAL_REASONS
    if failed is None and not fatal:
        return JobStatus(
            name=name,
            phase=JobPhase.RUNNING,
            reason="Running",
            message=f"job {name} is running",
            **times,
        )
    if failed is not None:
        why = f"{failed.get('reason') or 'Failed'}: {failed.get('message') or 'the job failed'}"
    else:
        assert finding is not None
        why = f"{finding.reason}: {finding.message}"
    if (
        previous is not None
        and previous.phase is JobPhase.FAILED
        and previous.message
        and not (obs.events or obs.log_lines)
    ):
        return JobStatus(
            name=name, phase=JobPhase.FAILED, reason=JOB_FAILED, message=previous.message, **times
        )
    message = f"job {name} failed ({why})"
    if obs.events:
        message += "; last events: " + " | ".join(obs.events)
    if obs.log_lines:
        message += "; last log lines: " + " | ".join(obs.log_lines)
    return JobStatus(name=name, phase=JobPhase.FAILED, reason=JOB_FAILED, message=message, **times)


# --- conditions ----------------------------------------------------------------------------


def set_condition(
    previous: Sequence[Condition],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> Condition:
    value = "True" if status else "False"
    old = next((c for c in previous if c.type == type_), None)
    since = (
        old.last_transition_time if old is not None and old.status == value else format_time(now)
    )
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def conditions_for(
    phase: Phase,
    reason: str,
    message: str,
    previous: Sequence[Condition],
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    ready = phase is Phase.READY
    progressing = phase in (Phase.PENDING, Phase.PROVISIONING)
    degraded = phase in (Phase.DEGRADED, Phase.FAILED)
    return [
        set_condition(previous, ConditionType.READY, ready, reason, message, now, generation),
        set_condition(
            previous,
            ConditionType.PROGRESSING,
            progressing,
            reason,
            message,
            now,
            generation,
        ),
        set_condition(
            previous,
            ConditionType.DEGRADED,
            degraded,
            reason if degraded else "AsExpected",
            message if degraded else "",
            now,
            generation,
        ),
    ]


# --- the environment -----------------------------------------------------------------------


def ready_count(services: Sequence[ServiceStatus]) -> str:
    return f"{sum(1 for s in services if s.ready)}/{len(services)}"


def compute_status(
    obs: Observation, previous: TestEnvironmentStatus | None
) -> TestEnvironmentStatus:
    prev = previous or TestEnvironmentStatus()
    spec = obs.spec
    namespace = spec.namespace_for(obs.name)
    expires = format_time(expires_at(obs.created, spec))
    ns_created = prev.timings.namespace_created
    if ns_created is None and obs.namespace is not None and not obs.conflict:
        ns_created = seconds_since(
            obs.created, parse_time((obs.namespace.get("metadata") or {}).get("creationTimestamp"))
        )

    namespace_problem: tuple[Phase, str, str] | None = None
    if obs.conflict:
        namespace_problem = (Phase.FAILED, NAMESPACE_CONFLICT, obs.conflict)
    elif obs.terminating:
        namespace_problem = (
            Phase.DEGRADED,
            NAMESPACE_DELETED,
            f"namespace {namespace} was deleted behind the operator's back; the environment is "
            "recreated in a new namespace once it is gone (data in it is lost)",
        )
    if namespace_problem is not None:
        # No services to report while the namespace cannot be used.
        phase, reason, message = namespace_problem
        return TestEnvironmentStatus(
            phase=phase,
            message=message,
            namespace=namespace,
            observed_generation=obs.generation,
            conditions=conditions_for(
                phase, reason, message, prev.conditions, obs.now, obs.generation
            ),
            services=[],
            jobs=[],
            ready_services=f"0/{len(spec.services)}",
            timings=prev.timings,
            expires_at=expires,
        )

    same_generation = prev.observed_generation == obs.generation
    previous_services = {s.name: s for s in prev.services}
    verdicts = [
        service_verdict(
            so,
            namespace=namespace,
            created=obs.created,
            now=obs.now,
            previous=previous_services.get(so.spec.name),
            same_generation=same_generation,
        )
        for so in obs.services
    ]
    statuses = [v.status for v in verdicts]
    failed = [v.status for v in verdicts if v.state == "failed"]
    degraded = [v.status for v in verdicts if v.state == "degraded"]
    waiting = [v.status for v in verdicts if v.state == "progressing"]
    previous_jobs = {j.name: j for j in prev.jobs}
    jobs = [
        job_verdict(jo, created=obs.created, previous=previous_jobs.get(jo.spec.name))
        for jo in obs.jobs
    ]
    failed_jobs = [j for j in jobs if j.phase is JobPhase.FAILED]
    pending_jobs = [j for j in jobs if j.phase in (JobPhase.WAITING, JobPhase.RUNNING)]
    all_ready = not (failed or degraded or waiting or failed_jobs or pending_jobs)
    count = ready_count(statuses)
    jobs_done = f"; {len(jobs) - len(pending_jobs)}/{len(jobs)} jobs done" if jobs else ""

    if failed or failed_jobs:
        first = failed[0].reason if failed else JOB_FAILED
        phase, reason = Phase.FAILED, first or "Failed"
        message = "; ".join(
            [*(s.message or s.name for s in failed), *(j.message or j.name for j in failed_jobs)]
        )
    elif degraded:
        phase, reason = Phase.DEGRADED, degraded[0].reason or "Degraded"
        message = "; ".join(s.message or s.name for s in degraded)
    elif all_ready and obs.discovery_published:
        phase, reason = Phase.READY, "AllServicesReady"
        message = f"{count} services ready{jobs_done}; discovery published"
    elif all_ready:
        phase, reason = Phase.PROVISIONING, "PublishingDiscovery"
        message = f"{count} services ready{jobs_done}; publishing discovery"
    else:
        phase, reason = Phase.PROVISIONING, "WaitingForServices"
        message = f"{count} services ready{jobs_done}; waiting for " + ", ".join(
            [
                *(f"{s.name} ({s.reason})" for s in waiting),
                *(f"job {j.name} ({j.reason})" for j in pending_jobs),
            ]
        )

    discovery_published = prev.timings.discovery_published
    if discovery_published is None and obs.discovery_published:
        discovery_published = seconds_since(obs.created, obs.now)
    ready_at = prev.timings.ready
    if ready_at is None and phase is Phase.READY:
        ready_at = seconds_since(obs.created, obs.now)

    return TestEnvironmentStatus(
        phase=phase,
        message=message,
        namespace=namespace,
        observed_generation=obs.generation,
        conditions=conditions_for(phase, reason, message, prev.conditions, obs.now, obs.generation),
        services=statuses,
        jobs=jobs,
        reset=obs.reset,
        ready_services=count,
        timings=Timings(
            namespace_created=ns_created,
            discovery_published=discovery_published,
            ready=ready_at,
        ),
        expires_at=expires,
    )


def status_patch(status: TestEnvironmentStatus) -> dict[str, Any]:
    """A JSON merge patch body that replaces the whole status (unset fields become null)."""
    wire = status.to_wire()
    for name, info in TestEnvironmentStatus.model_fields.items():
        key = info.alias or name
        wire.setdefault(key, None)
    timings = wire.get("timings") or {}
    for name, info in Timings.model_fields.items():
        timings.setdefault(info.alias or name, None)
    wire["timings"] = timings
    return {"status": wire}


def parse_status(raw: object) -> TestEnvironmentStatus | None:
    """The stored status, or None if absent or not understood (then it is recomputed)."""
    if not isinstance(raw, Mapping) or not raw:
        return None
    try:
        return TestEnvironmentStatus.model_validate(
            {k: v for k, v in raw.items() if k in _STATUS_KEYS and v is not None}
        )
    except ValueError:
        return None


_STATUS_KEYS = {info.alias or name for name, info in TestEnvironmentStatus.model_fields.items()}
