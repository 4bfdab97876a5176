from __future__ import annotations

import pytest
from operator_factories import pod

from testenv_operator import diagnose


@pytest.mark.parametrize(
    "reason",
    [
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "InvalidImageName",
    ],
)
def test_fatal_waiting_reasons(reason: str) -> None:
    finding = diagnose.diagnose_pods([pod("p", "svc", waiting=reason, message="boom")])
    assert finding is not None
    assert finding.reason == reason and finding.fatal and not finding.crash
    assert finding.pod == "p" and finding.container == "svc"


def test_kubelet_cache_sync_is_not_a_failure() -> None:
    """A new namespace's Secret cache still syncing in the kubelet: it retries by itself."""
    syncing = pod(
        "p",
        "svc",
        waiting="CreateContainerConfigError",
        message="failed to sync secret cache: timed out waiting for the condition",
    )
    assert diagnose.diagnose_pods([syncing]) is None
    reason, _ = diagnose.pending_reason([syncing])
    assert reason == diagnose.SYNCING_CONFIG  # not a (sticky) fatal reason
    missing = pod("p", "svc", waiting="CreateContainerConfigError", message='secret "x" not found')
    assert diagnose.diagnose_pods([missing]) is not None


def test_crash_loop() -> None:
    finding = diagnose.diagnose_pods(
        [pod("p", "svc", waiting="CrashLoopBackOff", restarts=3, exit_code=2)]
    )
    assert finding is not None and finding.crash and finding.previous_logs
    assert "exit code 2" in finding.message


def test_restarting_between_crashes_is_still_a_crash() -> None:
    finding = diagnose.diagnose_pods([pod("p", "svc", restarts=4, exit_code=1)])
    assert finding is not None and finding.reason == "CrashLoopBackOff"


def test_healthy_and_creating_pods_are_fine() -> None:
    assert diagnose.diagnose_pods([pod("p", "svc", ready=True)]) is None
    assert diagnose.diagnose_pods([pod("p", "svc", waiting="ContainerCreating")]) is None


def test_terminating_pods_are_ignored() -> None:
    p = pod("p", "svc", waiting="ErrImagePull", deleted="2026-01-01T00:00:00Z")
    assert diagnose.diagnose_pods([p]) is None
    assert diagnose.pending_reason([p]) == ("PodsPending", "no pods yet")


def test_describe_names_service_reason_events_logs() -> None:
    finding = diagnose.Finding("ErrImageNeverPull", "image not present", "p-1", "backend")
    text = diagnose.describe(
        "backend", finding, ["Failed: Error: ErrImageNeverPull"], ["line 1", "line 2"]
    )
    assert text.startswith("service backend: ErrImageNeverPull: image not present")
    assert "last events: Failed: Error: ErrImageNeverPull" in text
    assert "last log lines: line 1 | line 2" in text


def test_last_events_and_lines() -> None:
    events = [
        {"reason": "B", "message": "second", "lastTimestamp": "2026-01-01T00:00:02Z"},
        {"reason": "A", "message": "first", "lastTimestamp": "2026-01-01T00:00:01Z"},
        {"reason": "C", "message": "third ", "lastTimestamp": "2026-01-01T00:00:03Z"},
    ]
    assert diagnose.last_events(events, 2) == ["B: second", "C: third"]
    assert diagnose.last_lines("a\n\nb\nc\n", 2) == ["b", "c"]


def test_pending_reason() -> None:
    assert diagnose.pending_reason([]) == ("PodsPending", "no pods yet")
    unsched = pod("p", "svc")
    unsched["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "cpu"}
    ]
    assert diagnose.pending_reason([unsched]) == ("Unschedulable", "cpu")


def test_a_refused_create_quotes_the_api_server() -> None:
    """The operator's own create of a pod refused (an exceeded quota, a policy): the service
    says so in the API server's words, whatever its other pods are doing."""
    quota = 'pods "svc-0" is forbidden: exceeded quota: testenv, requested: pods=1'
    assert diagnose.pending_reason([], quota) == (diagnose.FAILED_CREATE, quota)
    assert diagnose.FAILED_CREATE == "FailedCreate"
    running = pod("p", "svc")
    assert diagnose.pending_reason([running], quota) == ("FailedCreate", quota)
    # No refusal (or an empty one): the pods' own state.
    assert diagnose.pending_reason([running], None)[0] == "NotReady"
    assert diagnose.pending_reason([], "") == ("PodsPending", "no pods yet")


def test_a_starting_pod_says_what_it_waits_for() -> None:
    """The status message of a starting service is never blank, and it does not go from
    "waiting for the readiness probe" back to "starting" while the kubelet reports the pod."""
    reported_nothing = pod("p", "svc")
    reported_nothing["status"].pop("containerStatuses")
    assert diagnose.pending_reason([reported_nothing]) == (
        "ContainerCreating",
        "starting the pod (volumes, sandbox, image)",
    )
    creating = pod("p", "svc", waiting="ContainerCreating")
    assert diagnose.pending_reason([creating]) == (
        "ContainerCreating",
        "starting the pod (volumes, sandbox, image)",
    )
    pulling = pod("p", "svc", waiting="ErrImagePull", message="pull access denied")
    assert diagnose.pending_reason([pulling]) == ("ErrImagePull", "pull access denied")
    unknown = pod("p", "svc", waiting="SomethingNew")
    assert diagnose.pending_reason([unknown]) == ("SomethingNew", "SomethingNew")
    assert diagnose.pending_reason([pod("p", "svc")]) == (
        "NotReady",
        "waiting for the readiness probe",
    )
