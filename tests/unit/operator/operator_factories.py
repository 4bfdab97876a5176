"""Fake Pod dicts for status and diagnosis tests."""

from __future__ import annotations

from typing import Any

from testenv.api import SERVICE_LABEL, TEMPLATE_HASH_ANNOTATION

Obj = dict[str, Any]
T0 = "2026-01-01T00:00:00Z"


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
    template_hash: str | None = None,
    phase: str | None = None,
    deleted: str | None = None,
) -> Obj:
    """A service's pod. ``template_hash``: the template it is of (its annotation);
    ``phase``: its ``status.phase`` (``Failed``: evicted, ``Succeeded``: exited);
    ``deleted``: its ``deletionTimestamp`` (being deleted)."""
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
    metadata: Obj = {"name": name, "labels": {SERVICE_LABEL: service}}
    if template_hash is not None:
        metadata["annotations"] = {TEMPLATE_HASH_ANNOTATION: template_hash}
    if deleted is not None:
        metadata["deletionTimestamp"] = deleted
    status: Obj = {"conditions": conditions, "containerStatuses": [cs]}
    if phase is not None:
        status["phase"] = phase
    return {"kind": "Pod", "metadata": metadata, "status": status}
