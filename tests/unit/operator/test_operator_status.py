"""Status computation from fake Pods (a service's pods are the operator's own, no
Deployment: docs/decisions/0002-services-as-bare-pods.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from operator_factories import pod
from operator_fake_kube import TRIO

from testenv.api import Phase, ServiceStatus, TestEnvironmentSpec, TestEnvironmentStatus
from testenv_operator import diagnose
from testenv_operator.status import (
    Observation,
    ServiceObservation,
    compute_status,
    live_pods,
    pods_ready,
    ready_workloads,
    service_verdict,
    status_patch,
    template_hash_of,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = TestEnvironmentSpec.model_validate({"services": TRIO})
NS = {"metadata": {"name": "testenv-demo", "creationTimestamp": "2026-01-01T00:00:02Z"}}
#: The template hash of every service's current pods in these tests.
HASH = "h1"
QUOTA = (
    'pods "auth-h1-0" is forbidden: exceeded quota: testenv, requested: pods=1, used: pods=100, '
    "limited: pods=100"
)


def current(name: str, service: str, **kwargs: Any) -> dict[str, Any]:
    """A pod of the service's current template."""
    return pod(name, service, template_hash=HASH, **kwargs)


def observe(
    states: dict[str, list[dict[str, Any]]],
    *,
    now: datetime = T0 + timedelta(seconds=30),
    published: bool = False,
    generation: int = 1,
    deadline: datetime | None = None,
    refused: dict[str, str] | None = None,
    waiting: dict[str, list[str]] | None = None,
) -> Observation:
    """``states``: the pods of each service (none for the others)."""
    services = [
        ServiceObservation(
            spec=svc,
            template_hash=HASH,
            pods=states.get(svc.name, []),
            deadline=deadline or T0 + timedelta(seconds=120),
            waiting_for=(waiting or {}).get(svc.name, []),
            refused=(refused or {}).get(svc.name),
        )
        for svc in SPEC.services
    ]
    return Observation(
        name="demo",
        generation=generation,
        created=T0,
        now=now,
        spec=SPEC,
        namespace=NS,
        services=services,
        discovery_published=published,
    )


def ready_all() -> dict[str, list[dict[str, Any]]]:
    return {s.name: [current(f"{s.name}-1", s.name, ready=True)] for s in SPEC.services}


def cond(status: TestEnvironmentStatus, type_: str) -> tuple[str, str]:
    c = next(c for c in status.conditions if c.type == type_)
    return c.status, c.reason


def service(status: TestEnvironmentStatus, name: str) -> ServiceStatus:
    return next(s for s in status.services if s.name == name)


def verdict(obs: ServiceObservation, previous: ServiceStatus | None = None) -> ServiceStatus:
    return service_verdict(
        obs,
        namespace="testenv-demo",
        created=T0,
        now=T0 + timedelta(seconds=30),
        previous=previous,
        same_generation=True,
    ).status


# --- readiness from the pods ---------------------------------------------------------------


def test_a_ready_pod_of_the_current_template_makes_the_service_ready() -> None:
    assert pods_ready(HASH, 1, [current("a-0", "a", ready=True)]) == (True, 1)
    assert pods_ready(HASH, 1, [current("a-0", "a")]) == (False, 0)  # running, not Ready
    assert pods_ready(HASH, 1, []) == (False, 0)
    # No replicas wanted, none there: nothing to wait for.
    assert pods_ready(HASH, 0, []) == (True, 0)
    # Another template's Ready pod is not this template's.
    assert pods_ready(HASH, 1, [pod("a-0", "a", ready=True, template_hash="old")]) == (False, 0)
    assert pods_ready(HASH, 1, [pod("a-0", "a", ready=True)]) == (False, 0)  # no hash at all
    # The template not known yet: no pod counts as current.
    assert pods_ready(None, 1, [current("a-0", "a", ready=True)]) == (False, 0)


def test_not_ready_while_an_outdated_pod_is_still_live() -> None:
    """After a spec change the new pod may be Ready before the old one is gone: the service
    is not Ready (clients could still reach the old one) until the old pod is being deleted."""
    new = current("a-h1-0", "a", ready=True)
    old = pod("a-h0-0", "a", ready=True, template_hash="h0")
    assert pods_ready(HASH, 1, [old, new]) == (False, 1)
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:20Z"
    assert pods_ready(HASH, 1, [old, new]) == (True, 1)


def test_finished_pods_do_not_count() -> None:
    """An evicted pod (Failed, its node lost) or one that exited (Succeeded) neither makes the
    service Ready nor keeps it from being Ready; only its replacement does."""
    for phase in ("Failed", "Succeeded"):
        gone = current("a-0", "a", ready=True, phase=phase)
        assert pods_ready(HASH, 1, [gone]) == (False, 0)
        old_gone = pod("a-h0-0", "a", ready=True, template_hash="h0", phase=phase)
        replacement = current("a-h1-0", "a", ready=True, phase="Running")
        assert pods_ready(HASH, 1, [old_gone, replacement]) == (True, 1)


def test_ready_replicas_counts_ready_pods_of_the_current_template() -> None:
    one = current("a-0", "a", ready=True)
    two = current("a-1", "a", ready=True)
    starting = current("a-1", "a")
    assert pods_ready(HASH, 2, [one]) == (False, 1)
    assert pods_ready(HASH, 2, [one, starting]) == (False, 1)
    assert pods_ready(HASH, 2, [one, two]) == (True, 2)
    # A replica too many (scaled down, not deleted yet): not rolled out.
    assert pods_ready(HASH, 1, [one, two]) == (False, 2)


def test_live_pods_and_template_hash() -> None:
    running = current("a-0", "a", phase="Running")
    pending = current("a-1", "a", phase="Pending")
    unreported = current("a-2", "a")  # no phase yet
    deleting = current("a-3", "a", phase="Running", deleted="2026-01-01T00:00:20Z")
    evicted = current("a-4", "a", phase="Failed")
    exited = current("a-5", "a", phase="Succeeded")
    pods = [running, pending, unreported, deleting, evicted, exited]
    assert live_pods(pods) == [running, pending, unreported]
    assert template_hash_of(running) == HASH
    assert template_hash_of(pod("a-0", "a")) is None
    assert template_hash_of({}) is None


def test_dependents_start_on_ready_pods() -> None:
    """dependsOn reads readiness from the pods of the template the operator last rendered."""
    spec = TestEnvironmentSpec.model_validate({"services": TRIO})
    first, second = spec.services[0].name, spec.services[1].name
    hashes = {s.name: HASH for s in spec.services}
    ready_pod = current(f"{first}-0", first, ready=True)
    assert first in ready_workloads(spec, hashes, {}, [ready_pod])
    assert first not in ready_workloads(spec, hashes, {}, [current(f"{first}-0", first)])
    assert first not in ready_workloads(spec, hashes, {}, [])
    # Of an older template (the spec changed since): not Ready for its dependents yet.
    assert first not in ready_workloads(spec, {**hashes, first: "h2"}, {}, [ready_pod])
    assert first not in ready_workloads(spec, {}, {}, [ready_pod])
    # Another service's pods do not make it Ready.
    assert second not in ready_workloads(spec, hashes, {}, [ready_pod])


# --- a service's verdict -------------------------------------------------------------------


def test_provisioning() -> None:
    states = {"auth": [current("auth-1", "auth", ready=True)]}
    status = compute_status(observe(states), None)
    assert status.phase is Phase.PROVISIONING
    assert status.ready_services == "1/3"
    assert cond(status, "Ready") == ("False", "WaitingForServices")
    assert cond(status, "Progressing")[0] == "True"
    assert status.timings.namespace_created == 2.0
    assert status.expires_at == "2026-01-01T01:00:00Z"
    assert status.services[0].ready and status.services[0].timings.ready == 10.0
    assert (status.services[0].ready_replicas, status.services[0].replicas) == (1, 1)
    backend = service(status, "backend")
    assert backend.reason == "PodsPending" and backend.message == "service backend: no pods yet"


def test_status_counts_ready_replicas() -> None:
    svc = TestEnvironmentSpec.model_validate({"services": [{**TRIO[0], "replicas": 3}]}).services[0]
    pods = [current("auth-0", "auth", ready=True), current("auth-1", "auth", ready=True)]
    partly = verdict(
        ServiceObservation(spec=svc, template_hash=HASH, pods=[*pods, current("auth-2", "auth")])
    )
    assert not partly.ready
    assert (partly.ready_replicas, partly.replicas) == (2, 3)
    assert partly.reason == "NotReady"
    full = verdict(
        ServiceObservation(
            spec=svc,
            template_hash=HASH,
            pods=[*pods, current("auth-2", "auth", ready=True)],
        )
    )
    assert full.ready and (full.ready_replicas, full.replicas) == (3, 3)


def test_ready_needs_discovery() -> None:
    unpublished = compute_status(observe(ready_all()), None)
    assert unpublished.phase is Phase.PROVISIONING
    assert cond(unpublished, "Ready") == ("False", "PublishingDiscovery")
    status = compute_status(observe(ready_all(), published=True), unpublished)
    assert status.phase is Phase.READY
    assert status.ready_services == "3/3"
    assert cond(status, "Ready") == ("True", "AllServicesReady")
    assert cond(status, "Degraded") == ("False", "AsExpected")
    assert status.timings.discovery_published == 30.0
    assert status.timings.ready == 30.0


def test_last_transition_time_only_moves_on_change() -> None:
    first = compute_status(observe(ready_all(), published=True), None)
    later = compute_status(
        observe(ready_all(), published=True, now=T0 + timedelta(minutes=5)), first
    )
    assert [c.last_transition_time for c in later.conditions] == [
        c.last_transition_time for c in first.conditions
    ]
    assert later.timings == first.timings


def test_image_error_fails_fast() -> None:
    states = {
        **ready_all(),
        "backend": [
            current(
                "backend-1", "backend", waiting="ErrImageNeverPull", message='image "x" not present'
            )
        ],
    }
    status = compute_status(observe(states, published=False), None)
    assert status.phase is Phase.FAILED
    assert cond(status, "Ready") == ("False", "ErrImageNeverPull")
    assert cond(status, "Degraded")[0] == "True"
    assert status.message is not None
    assert "service backend" in status.message and "ErrImageNeverPull" in status.message


def test_crash_loop_fails_before_ready_degrades_after() -> None:
    crashing = {
        **ready_all(),
        "auth": [current("auth-1", "auth", waiting="CrashLoopBackOff", restarts=3, exit_code=1)],
    }
    assert compute_status(observe(crashing), None).phase is Phase.FAILED
    ready = compute_status(observe(ready_all(), published=True), None)
    degraded = compute_status(observe(crashing, published=True), ready)
    assert degraded.phase is Phase.DEGRADED
    assert cond(degraded, "Degraded") == ("True", "CrashLoopBackOff")
    recovered = compute_status(observe(ready_all(), published=True), degraded)
    assert recovered.phase is Phase.READY


def test_failure_is_sticky_within_a_generation() -> None:
    crashing = {"auth": [current("auth-1", "auth", waiting="CrashLoopBackOff")]}
    failed = compute_status(observe(crashing), None)
    restarting = {"auth": [current("auth-1", "auth", restarts=1)]}
    assert compute_status(observe(restarting), failed).phase is Phase.FAILED
    # a new generation starts afresh
    assert compute_status(observe(restarting, generation=2), failed).phase is Phase.PROVISIONING


def test_finished_and_outdated_pods_are_not_diagnosed_as_the_service() -> None:
    """An evicted pod's last container state, or a pod being deleted, says nothing about the
    pod that replaces it: the service is starting, not failed."""
    evicted = current(
        "auth-h1-0", "auth", waiting="CrashLoopBackOff", restarts=5, exit_code=1, phase="Failed"
    )
    deleting = pod(
        "auth-h0-0",
        "auth",
        waiting="ErrImagePull",
        template_hash="h0",
        deleted="2026-01-01T00:00:20Z",
    )
    replacement = current("auth-h1-1", "auth", waiting="ContainerCreating")
    status = compute_status(observe({"auth": [evicted, deleting, replacement]}), None)
    assert status.phase is Phase.PROVISIONING
    auth = service(status, "auth")
    assert (auth.ready, auth.reason) == (False, "ContainerCreating")
    # Only the evicted pod left (its replacement not created yet): no pods to wait on.
    status = compute_status(observe({"auth": [evicted]}), None)
    assert service(status, "auth").reason == "PodsPending"


def test_an_evicted_pod_of_a_ready_service_degrades_it() -> None:
    ready = compute_status(observe(ready_all(), published=True), None)
    evicted = {**ready_all(), "auth": [current("auth-1", "auth", ready=True, phase="Failed")]}
    degraded = compute_status(observe(evicted, published=True), ready)
    assert degraded.phase is Phase.DEGRADED
    auth = service(degraded, "auth")
    assert (auth.ready, auth.ready_replicas, auth.reason) == (False, 0, "PodsPending")
    assert degraded.ready_services == "2/3"


def test_a_service_is_not_ready_while_its_outdated_pod_runs() -> None:
    """The spec changed: the old pod is still there next to a Ready new one."""
    old = pod("auth-h0-0", "auth", ready=True, template_hash="h0")
    states = {**ready_all(), "auth": [old, current("auth-h1-0", "auth", ready=True)]}
    status = compute_status(observe(states, published=True), None)
    assert status.phase is Phase.PROVISIONING
    auth = service(status, "auth")
    assert not auth.ready and auth.ready_replicas == 1
    assert auth.reason == "Replacing" and "previous spec" in (auth.message or "")
    assert "auth" in (status.message or "")
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:20Z"
    assert compute_status(observe(states, published=True), status).phase is Phase.READY


def test_a_refused_pod_shows_the_api_servers_message() -> None:
    """A pod the API server refused to create (a quota): the service says so, in the server's
    words, and keeps progressing (the operator retries) until its readiness timeout."""
    status = compute_status(observe({}, refused={"auth": QUOTA}), None)
    assert status.phase is Phase.PROVISIONING
    auth = service(status, "auth")
    assert auth.reason == diagnose.FAILED_CREATE == "FailedCreate"
    assert auth.message == f"service auth: {QUOTA}"
    assert "auth (FailedCreate)" in (status.message or "")
    late = compute_status(
        observe({}, refused={"auth": QUOTA}, now=T0 + timedelta(seconds=200)), status
    )
    assert late.phase is Phase.FAILED
    auth = service(late, "auth")
    assert auth.reason == "ReadinessTimeout"
    assert auth.message is not None and f"FailedCreate: {QUOTA}" in auth.message


def test_a_refused_replica_is_named_though_another_pod_runs() -> None:
    svc = TestEnvironmentSpec.model_validate({"services": [{**TRIO[0], "replicas": 2}]}).services[0]
    obs = ServiceObservation(
        spec=svc,
        template_hash=HASH,
        pods=[current("auth-0", "auth", ready=True)],
        refused=QUOTA,
    )
    status = verdict(obs)
    assert (status.ready, status.ready_replicas, status.reason) == (False, 1, "FailedCreate")
    assert status.message == f"service auth: {QUOTA}"
    # Once created (the refusal cleared), it is the pod's own state that counts.
    obs.refused = None
    obs.pods = [*obs.pods, current("auth-1", "auth")]
    assert verdict(obs).reason == "NotReady"


def test_a_service_waiting_for_its_dependencies() -> None:
    """dependsOn: a service whose dependencies are not Ready says which, and does not time
    out meanwhile (its readiness timeout starts once its pods are created)."""
    states = {"auth": [current("auth-1", "auth", ready=True)]}
    waiting = {"frontend": ["backend"]}
    status = compute_status(observe(states, waiting=waiting), None)
    assert status.phase is Phase.PROVISIONING
    frontend = service(status, "frontend")
    assert frontend.reason == "WaitingForDependencies"
    assert frontend.message == "service frontend waits for backend (dependsOn)"
    assert "frontend (WaitingForDependencies)" in (status.message or "")
    late = compute_status(observe(states, waiting=waiting, now=T0 + timedelta(seconds=200)), None)
    assert service(late, "frontend").reason == "WaitingForDependencies"
    assert service(late, "backend").reason == "ReadinessTimeout"


def test_kubelet_syncing_its_secret_cache_is_progress_not_failure() -> None:
    """Seen on a real cluster: pods of a brand-new namespace briefly report
    CreateContainerConfigError "failed to sync secret cache"; the kubelet retries."""
    syncing = {
        "auth": [
            current(
                "auth-1",
                "auth",
                waiting="CreateContainerConfigError",
                message="failed to sync secret cache: timed out waiting for the condition",
            )
        ]
    }
    first = compute_status(observe(syncing), None)
    again = compute_status(observe(syncing), first)  # not sticky across observations
    assert first.phase is Phase.PROVISIONING and again.phase is Phase.PROVISIONING
    ready = compute_status(observe(ready_all(), published=True), again)
    assert ready.phase is Phase.READY


def test_readiness_timeout() -> None:
    states = {"auth": [current("auth-1", "auth")]}
    status = compute_status(
        observe(states, now=T0 + timedelta(seconds=200), deadline=T0 + timedelta(seconds=120)),
        None,
    )
    assert status.phase is Phase.FAILED
    assert status.services[0].reason == "ReadinessTimeout"
    assert status.message is not None and "readinessTimeout 120s" in status.message


def test_namespace_conflict() -> None:
    obs = observe({})
    obs.conflict = "namespace testenv-demo already exists"
    status = compute_status(obs, None)
    assert status.phase is Phase.FAILED
    assert cond(status, "Ready") == ("False", "NamespaceConflict")


def test_status_patch_clears_unset_fields() -> None:
    patch = status_patch(TestEnvironmentStatus(phase=Phase.READY))
    assert patch["status"]["message"] is None
    assert patch["status"]["timings"]["discoveryPublished"] is None
    assert patch["status"]["phase"] == "Ready"


def test_a_partly_rolled_out_service_is_not_degraded_next_time() -> None:
    """A Ready pod next to an outdated one still live: that service is still provisioning
    (no ready time recorded), never "Degraded" in between, until it is Ready."""
    early = {
        "auth": [
            pod("auth-h0-0", "auth", template_hash="h0"),
            current("auth-h1-0", "auth", ready=True),
        ]
    }
    first = compute_status(observe(early), None)
    second = compute_status(observe(early), first)
    assert first.phase == second.phase == Phase.PROVISIONING
    auth = service(second, "auth")
    assert auth.timings.ready is None
    ready = compute_status(observe(ready_all()), second)
    assert service(ready, "auth").timings.ready is not None
