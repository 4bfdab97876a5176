"""Status computation from fake Deployments and Pods."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from operator_factories import deployment, pod
from operator_fake_kube import TRIO

from testenv.api import TEMPLATE_HASH_ANNOTATION, Phase, TestEnvironmentSpec, TestEnvironmentStatus
from testenv_operator.status import (
    Observation,
    ServiceObservation,
    compute_status,
    deployment_ready,
    ready_workloads,
    status_patch,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = TestEnvironmentSpec.model_validate({"services": TRIO})
NS = {"metadata": {"name": "testenv-demo", "creationTimestamp": "2026-01-01T00:00:02Z"}}


def observe(
    states: dict[str, tuple[int, list[dict[str, Any]]]],
    *,
    now: datetime = T0 + timedelta(seconds=30),
    published: bool = False,
    generation: int = 1,
    deadline: datetime | None = None,
) -> Observation:
    services = []
    for svc in SPEC.services:
        ready, pods = states.get(svc.name, (0, []))
        services.append(
            ServiceObservation(
                spec=svc,
                deployment=deployment(svc.name, ready=ready),
                pods=pods,
                deadline=deadline or T0 + timedelta(seconds=120),
            )
        )
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


def ready_all() -> dict[str, tuple[int, list[dict[str, Any]]]]:
    return {s.name: (1, [pod(f"{s.name}-1", s.name, ready=True)]) for s in SPEC.services}


def cond(status: TestEnvironmentStatus, type_: str) -> tuple[str, str]:
    c = next(c for c in status.conditions if c.type == type_)
    return c.status, c.reason


def test_deployment_ready() -> None:
    assert deployment_ready(deployment("a", ready=1), 1) == (True, 1)
    assert deployment_ready(deployment("a", ready=0), 1) == (False, 0)
    stale = deployment("a", ready=1)
    stale["status"]["observedGeneration"] = 0
    assert deployment_ready(stale, 1)[0] is False
    assert deployment_ready(None, 1) == (False, 0)
    assert deployment_ready(deployment("a", replicas=0), 0) == (True, 0)


def templated(obj: dict[str, Any], template_hash: str) -> dict[str, Any]:
    """``obj`` (a Deployment's pod template, or a pod) marked as of that template."""
    meta = obj if obj.get("kind") == "Pod" else obj["spec"].setdefault("template", {})
    meta = meta.setdefault("metadata", {})
    meta.setdefault("annotations", {})[TEMPLATE_HASH_ANNOTATION] = template_hash
    return obj


def test_ready_pods_of_the_current_template_make_it_ready_before_its_status_does() -> None:
    """The Deployment's status trails its pods on a busy cluster: a Ready pod of the current
    template is enough, as long as no other pod (an old template's) is still there."""
    lagging = templated(deployment("a", ready=0), "new")
    new_ready = templated(pod("a-1", "a", ready=True), "new")
    assert deployment_ready(lagging, 1) == (False, 0)
    assert deployment_ready(lagging, 1, [new_ready]) == (True, 1)
    # Not while the pod is not Ready, nor when it is of another template (a rollout).
    assert deployment_ready(lagging, 1, [templated(pod("a-1", "a"), "new")])[0] is False
    assert deployment_ready(lagging, 1, [templated(pod("a-0", "a", ready=True), "old")])[0] is False
    # An old pod still running alongside the new one: not rolled out yet.
    old = templated(pod("a-0", "a", ready=True), "old")
    assert deployment_ready(lagging, 1, [old, new_ready]) == (False, 1)
    # ... unless it is terminating.
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:20Z"
    assert deployment_ready(lagging, 1, [old, new_ready]) == (True, 1)
    # Two replicas want two Ready pods; a Deployment without the hash is judged by status.
    two = templated(deployment("a", ready=0, replicas=2), "new")
    assert deployment_ready(two, 2, [new_ready])[0] is False
    assert deployment_ready(deployment("a", ready=0), 1, [new_ready])[0] is False


def test_dependents_start_on_ready_pods() -> None:
    """dependsOn reads readiness the same way: from the pods, not only the status."""
    spec = TestEnvironmentSpec.model_validate({"services": TRIO})
    first = spec.services[0].name
    deployments = {first: templated(deployment(first, ready=0), "h")}
    pods = [templated(pod(f"{first}-1", first, ready=True), "h")]
    assert first not in ready_workloads(spec, deployments, {})
    assert first in ready_workloads(spec, deployments, {}, pods)


def test_provisioning() -> None:
    states = {"auth": (1, [pod("auth-1", "auth", ready=True)])}
    status = compute_status(observe(states), None)
    assert status.phase is Phase.PROVISIONING
    assert status.ready_services == "1/3"
    assert cond(status, "Ready") == ("False", "WaitingForServices")
    assert cond(status, "Progressing")[0] == "True"
    assert status.timings.namespace_created == 2.0
    assert status.expires_at == "2026-01-01T01:00:00Z"
    assert status.services[0].ready and status.services[0].timings.ready == 10.0


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
        "backend": (
            0,
            [
                pod(
                    "backend-1",
                    "backend",
                    waiting="ErrImageNeverPull",
                    message='image "x" not present',
                )
            ],
        ),
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
        "auth": (0, [pod("auth-1", "auth", waiting="CrashLoopBackOff", restarts=3, exit_code=1)]),
    }
    assert compute_status(observe(crashing), None).phase is Phase.FAILED
    ready = compute_status(observe(ready_all(), published=True), None)
    degraded = compute_status(observe(crashing, published=True), ready)
    assert degraded.phase is Phase.DEGRADED
    assert cond(degraded, "Degraded") == ("True", "CrashLoopBackOff")
    recovered = compute_status(observe(ready_all(), published=True), degraded)
    assert recovered.phase is Phase.READY


def test_failure_is_sticky_within_a_generation() -> None:
    crashing = {"auth": (0, [pod("auth-1", "auth", waiting="CrashLoopBackOff")])}
    failed = compute_status(observe(crashing), None)
    restarting = {"auth": (0, [pod("auth-1", "auth", restarts=1)])}
    assert compute_status(observe(restarting), failed).phase is Phase.FAILED
    # a new generation starts afresh
    assert compute_status(observe(restarting, generation=2), failed).phase is Phase.PROVISIONING


def test_kubelet_syncing_its_secret_cache_is_progress_not_failure() -> None:
    """Seen on a real cluster: pods of a brand-new namespace briefly report
    CreateContainerConfigError "failed to sync secret cache"; the kubelet retries."""
    syncing = {
        "auth": (
            0,
            [
                pod(
                    "auth-1",
                    "auth",
                    waiting="CreateContainerConfigError",
                    message="failed to sync secret cache: timed out waiting for the condition",
                )
            ],
        )
    }
    first = compute_status(observe(syncing), None)
    again = compute_status(observe(syncing), first)  # not sticky across observations
    assert first.phase is Phase.PROVISIONING and again.phase is Phase.PROVISIONING
    ready = compute_status(observe(ready_all(), published=True), again)
    assert ready.phase is Phase.READY


def test_readiness_timeout() -> None:
    states = {"auth": (0, [pod("auth-1", "auth")])}
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


def test_a_pod_ready_before_its_deployment_is_not_degraded_next_time() -> None:
    """The pod says Ready a moment before the Deployment does (and a watch cache may show one
    before the other): that service is still provisioning, never "Degraded" in between."""
    early = {"auth": (0, [pod("auth-1", "auth", ready=True)])}
    first = compute_status(observe(early), None)
    second = compute_status(observe(early), first)
    assert first.phase == second.phase == Phase.PROVISIONING
    auth = next(s for s in second.services if s.name == "auth")
    assert auth.timings.ready is None
    ready = compute_status(observe(ready_all()), second)
    assert next(s for s in ready.services if s.name == "auth").timings.ready is not None
