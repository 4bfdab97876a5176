"""What the reconciler reads: the environments and their child objects.

In the operator the reads come from kopf indexes (:class:`IndexReads`): in-memory stores fed
by the operator's own watches, which the API server filters by label (``configure`` in
handlers.py). kopf fills every index before any handler runs, so a restarted operator sees
the cluster as it is. A wake-up of a monitor therefore costs no API request; only what an
index cannot know is read from the API (a namespace that is not ours, an object the watch has
not delivered yet). :class:`ApiReads` reads everything from the API: the unit tests' fake
cluster, and the fallback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Protocol

from testenv.api import ENVIRONMENT_LABEL, LEASE_RENEWED_ANNOTATION
from testenv_operator.kube import KubeClient

Obj = Mapping[str, Any]

#: Child kinds indexed by environment name, and the kopf index (handler) that holds each.
CHILD_INDEXES: dict[str, str] = {
    "Job": "jobs_by_environment",
    "Pod": "pods_by_environment",
    "Service": "services_by_environment",
    "ConfigMap": "configmaps_by_environment",
}
NAMESPACE_INDEX = "namespaces_by_name"
ENVIRONMENT_INDEX = "environments_by_name"


class Reads(Protocol):
    #: How long a write may take to show in these reads.
    lag: timedelta

    async def environment(self, name: str) -> Obj | None: ...
    async def namespace(self, name: str) -> Obj | None: ...
    async def children(self, kind: str, environment: str, namespace: str) -> list[Obj]: ...


class ApiReads:
    """Every read is an API request."""

    lag = timedelta(0)

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def environment(self, name: str) -> Obj | None:
        return await self.kube.get("TestEnvironment", name)

    async def namespace(self, name: str) -> Obj | None:
        return await self.kube.get("Namespace", name)

    async def children(self, kind: str, environment: str, namespace: str) -> list[Obj]:
        selector = f"{ENVIRONMENT_LABEL}={environment}"
        return list(await self.kube.list(kind, namespace, selector))


def _values(index: Mapping[str, Iterable[Obj]] | None, key: str) -> list[Obj]:
    if index is None:
        return []
    store = index.get(key)
    return list(store) if store is not None else []


class IndexReads:
    """Reads from kopf indexes (``indices``: the ``**kwargs`` kopf passes its handlers);
    an environment or namespace missing from them is looked up in the API."""

    lag = timedelta(seconds=5)

    def __init__(self, indices: Mapping[str, Any], fallback: Reads) -> None:
        self.indices = indices
        self.fallback = fallback

    async def environment(self, name: str) -> Obj | None:
        found = _values(self.indices.get(ENVIRONMENT_INDEX), name)
        return found[0] if found else await self.fallback.environment(name)

    async def namespace(self, name: str) -> Obj | None:
        found = _values(self.indices.get(NAMESPACE_INDEX), name)
        return found[0] if found else await self.fallback.namespace(name)

    async def children(self, kind: str, environment: str, namespace: str) -> list[Obj]:
        index = self.indices.get(CHILD_INDEXES[kind])
        return [
            obj
            for obj in _values(index, environment)
            if (obj.get("metadata") or {}).get("namespace") == namespace
        ]


#: What the operator reads of each kind it indexes: everything else (a pod's spec, a Job's
#: template, every object's managedFields) is left out of the indexes, which
#: hold every object of their kind (bench/scale.py: the operator's memory at 500 environments).
KEPT: dict[str, tuple[str, ...]] = {
    "Pod": ("metadata", "status"),
    "Job": ("metadata", "status"),
    "Service": ("metadata",),
    "ConfigMap": ("metadata", "data"),
    "Namespace": ("metadata", "status"),
    "PoolMember": ("metadata", "status"),
}


def _lease_entries(managed: Any) -> list[Obj]:
    """Of ``metadata.managedFields``, what expiry reads: the entries that own the lease
    annotation, reduced to their time and that one field."""
    key = f"f:{LEASE_RENEWED_ANNOTATION}"
    return [
        {
            "manager": entry.get("manager"),
            "time": entry.get("time"),
            "fieldsV1": {"f:metadata": {"f:annotations": {key: {}}}},
        }
        for entry in managed or []
        if key
        in (((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {})
    ]


def index_entry(
    key: str | None,
    body: Mapping[str, Any],
    *,
    keep: tuple[str, ...] | None = None,
    lease_fields: bool = False,
) -> dict[str, Obj] | None:
    """What a kopf index function returns for one object: ``{key: plain copy}`` of the
    top-level fields in ``keep`` (all when None), without ``metadata.managedFields`` (with
    ``lease_fields``: only the entries owning the lease annotation, which expiry reads)."""
    if not key:
        return None
    copy = {k: body[k] for k in body if keep is None or k in keep or k in ("apiVersion", "kind")}
    meta = dict(copy.get("metadata") or {})
    managed = meta.pop("managedFields", None)
    if lease_fields:
        meta["managedFields"] = _lease_entries(managed)
    copy["metadata"] = meta
    return {key: copy}
