"""Why a service is not coming up: failure detection from pods (pure functions).

Given the pods of one service, :func:`diagnose_pods` names the first thing that will not fix
itself (an image that cannot be pulled, a missing config, a crash loop). :func:`describe`
turns a finding plus the last events and log lines into one readable message.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from testenv.redaction import redact_lines

Obj = Mapping[str, Any]

# Waiting reasons that will not resolve without a spec change: fail fast.
IMAGE_REASONS = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName"}
)
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
# ...except when the kubelet says it is still syncing its Secret/ConfigMap caches for a new
# namespace: it retries on its own within seconds, so that is not a failure.
TRANSIENT_CONFIG_MESSAGES = ("failed to sync secret cache", "failed to sync configmap cache")
SYNCING_CONFIG = "SyncingConfig"
#: A pod the API server refused to create (as a ReplicaSet's ``FailedCreate`` says).
FAILED_CREATE = "FailedCreate"
CRASH_REASON = "CrashLoopBackOff"
FATAL_REASONS = IMAGE_REASONS | CONFIG_REASONS
# A container that exited with an error this many times is crash-looping even while the
# kubelet is (briefly) restarting it.
CRASH_RESTARTS = 3


@dataclass(frozen=True)
class Finding:
    """A failure of one container of one pod."""

    reason: str
    message: str
    pod: str
    container: str
    crash: bool = False
    previous_logs: bool = False  # the logs worth reading are those of the previous run

    @property
    def fatal(self) -> bool:
        return not self.crash


def _container_statuses(pod: Obj) -> list[Obj]:
    status = pod.get("status") or {}
    return list(status.get("initContainerStatuses") or []) + list(
        status.get("containerStatuses") or []
    )


def _terminating(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def diagnose_pod(pod: Obj) -> Finding | None:
    name = str((pod.get("metadata") or {}).get("name", "?"))
    for cs in _container_statuses(pod):
        container = str(cs.get("name", "?"))
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        message = str(waiting.get("message") or "")
        if reason in FATAL_REASONS and not _transient(reason, message):
            return Finding(reason, message, name, container)
        restarts = int(cs.get("restartCount") or 0)
        last = (cs.get("lastState") or {}).get("terminated") or {}
        if reason == CRASH_REASON:
            return Finding(
                CRASH_REASON, _exit_message(last) or message, name, container, True, True
            )
        if restarts >= CRASH_RESTARTS and last.get("exitCode") not in (None, 0):
            if not cs.get("ready"):
                return Finding(CRASH_REASON, _exit_message(last), name, container, True, True)
    return None


def _transient(reason: str, message: str) -> bool:
    return reason in CONFIG_REASONS and any(m in message for m in TRANSIENT_CONFIG_MESSAGES)


def _exit_message(terminated: Obj) -> str:
    if not terminated:
        return ""
    parts = [f"exit code {terminated.get('exitCode')}"]
    if terminated.get("reason"):
        parts.append(str(terminated["reason"]))
    return ", ".join(parts)


def diagnose_pods(pods: Iterable[Obj]) -> Finding | None:
    """The first unrecoverable problem among the (non-terminating) pods of a service."""
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name", ""))):
        if _terminating(pod):
            continue
        finding = diagnose_pod(pod)
        if finding is not None:
            return finding
    return None


def pending_reason(pods: Iterable[Obj], refused: str | None = None) -> tuple[str, str]:
    """What a not-yet-ready service is waiting for (reason, message), for Progressing.
    ``refused``: the API server's answer to the operator's last attempt to create one of
    its pods (an exceeded quota, an admission policy), which it retries."""
    if refused:
        return FAILED_CREATE, refused
    live = [p for p in pods if not _terminating(p)]
    if not live:
        return "PodsPending", "no pods yet"
    for pod in live:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return str(cond.get("reason") or "Unschedulable"), str(cond.get("message") or "")
    for pod in live:
        statuses = _container_statuses(pod)
        if not statuses:  # scheduled, the kubelet has not reported its containers yet
            return "ContainerCreating", WAITING_MESSAGES["ContainerCreating"]
        for cs in statuses:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                reason, message = str(waiting["reason"]), str(waiting.get("message") or "")
                if _transient(reason, message):
                    # Not the fatal reason's name: a failure keyed on it would stick.
                    return SYNCING_CONFIG, message
                return reason, message or WAITING_MESSAGES.get(reason, reason)
    return "NotReady", "waiting for the readiness probe"


#: What the kubelet's usual waiting reasons mean, for the ones it gives without a message.
WAITING_MESSAGES = {
    "ContainerCreating": "starting the pod (volumes, sandbox, image)",
    "PodInitializing": "running the init containers",
}


def last_events(events: Iterable[Obj], limit: int = 3, secrets: Collection[str] = ()) -> list[str]:
    """``Reason: message`` of the most recent events, oldest first, redacted."""

    def when(event: Obj) -> str:
        return str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or (event.get("metadata") or {}).get("creationTimestamp")
            or ""
        )

    ordered = sorted(events, key=when)[-limit:]
    return redact_lines(
        (f"{e.get('reason', '?')}: {str(e.get('message', '')).strip()}" for e in ordered), secrets
    )


def last_lines(logs: str, limit: int = 5, secrets: Collection[str] = ()) -> list[str]:
    """The last non-empty log lines, redacted (:func:`testenv.redaction.redact`)."""
    return redact_lines([line for line in logs.splitlines() if line.strip()][-limit:], secrets)


def describe(
    service: str,
    finding: Finding,
    events: Sequence[str] = (),
    log_lines: Sequence[str] = (),
) -> str:
    """One message naming the service, the reason, and the evidence."""
    text = f"service {service}: {finding.reason}"
    if finding.message:
        text += f": {finding.message}"
    text += f" (pod {finding.pod}, container {finding.container})"
    if events:
        text += "; last events: " + " | ".join(events)
    if log_lines:
        text += "; last log lines: " + " | ".join(log_lines)
    return text
