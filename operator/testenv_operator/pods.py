"""A service's pods, which the operator makes itself (docs/decisions/0002): which count, and
which to create or delete (pure functions).

A service of ``replicas`` pods has as many *slots*; slot ``i`` of template ``h`` is filled by
a live pod named ``<service>-<h>-<i>`` or ``<service>-<h>-<i>-<n>``. Names are chosen, not
random: a create the reads do not show yet is made again under the same name, and the API
server answers "exists" instead of a second pod starting. A slot whose pod is being deleted or
has finished gets the next name at once, without waiting for the old one to be gone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from testenv.api import SERVICE_LABEL, TEMPLATE_HASH_ANNOTATION

Obj = Mapping[str, Any]

#: Hex digits of the template hash in a pod's name.
HASH_LENGTH = 10
_NAME = re.compile(rf"^(?P<service>.+)-[0-9a-f]{{{HASH_LENGTH}}}-(?P<slot>\d+)(?:-(?P<n>\d+))?$")


def pod_name(service: str, template_hash: str, slot: int, n: int = 0) -> str:
    base = f"{service}-{template_hash[:HASH_LENGTH]}-{slot}"
    return f"{base}-{n}" if n else base


def service_of_name(name: str) -> str | None:
    """The service a pod name of :func:`pod_name` belongs to."""
    match = _NAME.match(name)
    return match["service"] if match else None


def name_of(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


def terminating(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def finished(pod: Obj) -> bool:
    """Will not run again (``Failed``: evicted, its node lost; ``Succeeded``)."""
    return (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded")


def live_pods(pods: Sequence[Obj]) -> list[Obj]:
    """The pods that count: neither being deleted nor finished."""
    return [p for p in pods if not terminating(p) and not finished(p)]


def template_hash_of(pod: Obj) -> str | None:
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_HASH_ANNOTATION)


def service_of(pod: Obj) -> str | None:
    label = ((pod.get("metadata") or {}).get("labels") or {}).get(SERVICE_LABEL)
    return str(label) if label else None


def controlled_by(obj: Obj, uid: str) -> bool:
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("controller") and o.get("uid") == uid for o in owners)


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class PodPlan:
    #: (slot, name) of each pod to create.
    create: list[tuple[int, str]] = field(default_factory=list)
    #: Names of the pods to delete.
    delete: list[str] = field(default_factory=list)


def plan_pods(service: str, template_hash: str, replicas: int, pods: Sequence[Obj]) -> PodPlan:
    """What makes ``pods`` (the service's, as read) ``replicas`` live pods of
    ``template_hash``: a name for each empty slot; the deletion of finished pods, of a second
    live pod in a slot (a Ready one is kept), and of every other pod not being deleted yet
    (outdated, a replica too many)."""
    plan = PodPlan()
    by_name = {name_of(p): p for p in pods}
    in_slots: set[str] = set()
    for slot in range(replicas):
        base = pod_name(service, template_hash, slot)
        family = {
            name: pod
            for name, pod in by_name.items()
            if name == base or (name.startswith(base + "-") and name[len(base) + 1 :].isdigit())
        }
        in_slots |= family.keys()
        live = sorted(live_pods(list(family.values())), key=lambda p: (not _ready(p), name_of(p)))
        plan.delete += [name_of(p) for p in live[1:]]
        plan.delete += [n for n, p in family.items() if finished(p) and not terminating(p)]
        if not live:
            taken = [0 if n == base else int(n[len(base) + 1 :]) for n in family]
            n = max(taken) + 1 if taken else 0
            plan.create.append((slot, pod_name(service, template_hash, slot, n)))
    plan.delete += [
        name for name, pod in by_name.items() if name not in in_slots and not terminating(pod)
    ]
    return plan
