"""Fake Deployment/Pod dicts for status and diagnosis tests."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
T0 = "2026-01-01T00:00:00Z"


def deployment(name: str, *, ready: int = 0, replicas: int = 1, generation: int = 1) -> Obj:
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


def pod(
    name: str,
    service: str,
    *,
    ready: bool = False,
    waiting: str | None = None,
    message: str = "",
    restarts: int = 0,
    exit_code: int | None = None,
    at: str = "2026-01-01T00:00:10Z",
) -> Obj:
    state: Obj = (
        {"running": {"startedAt": at}}
        if waiting is None
        else {"waiting": {"reason": waiting, "message": message}}
    )
    cs: Obj = {"name": service, "ready": ready, "restartCount": restarts, "state": state}
    if exit_code is not None:
        cs["lastState"] = {"terminated": {"exitCode": exit_code, "reason": "Error"}}
    conditions = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": at}]
    if ready:
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": at})
    return {
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"testenv.dev/service": service}},
        "status": {"conditions": conditions, "containerStatuses": [cs]},
    }
