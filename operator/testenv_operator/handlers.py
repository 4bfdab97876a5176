"""kopf registration only: every handler delegates to :class:`reconcile.Reconciler`.

Finalizer-free by design: no deletion handler that must run and no kopf daemons/timers (both
would add a finalizer). Deleting a TestEnvironment is left to the garbage collector through
the Namespace's ownerReference, which works even while the operator is down. Readiness,
healing and expiry are followed by one monitor task per environment (see reconcile.py), woken
by the event handlers below; warm pools the same way, one task per pool (see pool.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from testenv.api import (
    ENVIRONMENT_LABEL,
    GROUP,
    MANAGED_BY,
    PLURAL,
    POOL_LABEL,
    POOL_PLURAL,
    VERSION,
)
from testenv_operator.cache import KEPT, ApiReads, IndexReads, index_entry
from testenv_operator.kube import Kube
from testenv_operator.pool import PoolKeeper, PoolReads
from testenv_operator.reconcile import Reconciler
from testenv_operator.settings import Settings

log = logging.getLogger(__name__)

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
#: The child kinds the operator watches: only objects it labelled, filtered by the API server.
CHILD_RESOURCES = (
    ("batch", "v1", "jobs"),
    ("v1", "services"),
    ("v1", "pods"),
    ("v1", "configmaps"),
    ("v1", "namespaces"),
)
LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}

_state: dict[str, Reconciler] = {}
_pools: dict[str, PoolKeeper] = {}


def reconciler() -> Reconciler:
    try:
        return _state["reconciler"]
    except KeyError:
        raise kopf.TemporaryError("the operator is still starting", delay=1) from None


def post_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    target: Any = dict(body)
    kopf.event(target, type=type_, reason=reason, message=message[:1024])


def configure(kopf_settings: Any, settings: Settings) -> None:
    """Apply our settings to kopf's (explicit watch timeouts, annotation-based storage)."""
    kopf_settings.watching.server_timeout = settings.watch_server_timeout
    kopf_settings.watching.client_timeout = settings.watch_client_timeout
    kopf_settings.watching.connect_timeout = 30
    # No kopf progress or diff-base storage: nothing here is a changing handler (see
    # environment_event), so kopf never annotates a TestEnvironment.
    kopf_settings.posting.enabled = True
    kopf_settings.posting.level = LEVELS[settings.posting_level]
    kopf_settings.execution.max_workers = 20
    # Watch only our own child objects: the API server filters them (not kopf, client-side).
    for resource in CHILD_RESOURCES:
        kopf_settings.watching.label_selectors[resource] = MANAGED_SELECTOR


# -- indexes: the watch cache the reconciler reads (testenv_operator.cache) -----------------
# Coroutines, not functions: kopf runs a sync handler in a thread pool, a thread hop per watch
# event (and the copies then live in that thread's malloc arena).
@kopf.index(GROUP, VERSION, PLURAL)
async def environments_by_name(name: str, body: Any, **_: Any) -> Any:
    # The managedFields that own the lease annotation: its renewal time (expiry.py).
    return index_entry(name, body, lease_fields=True)


@kopf.index(GROUP, VERSION, POOL_PLURAL)
async def pools_by_name(name: str, body: Any, **_: Any) -> Any:
    return index_entry(name, body)


@kopf.index(GROUP, VERSION, PLURAL, labels={POOL_LABEL: kopf.PRESENT})
async def pool_members(labels: Mapping[str, str], body: Any, **_: Any) -> Any:
    return index_entry(labels.get(POOL_LABEL), body, keep=KEPT["PoolMember"])


@kopf.index("v1", "namespaces", labels=MANAGED)
async def namespaces_by_name(name: str, body: Any, **_: Any) -> Any:
    return index_entry(name, body, keep=KEPT["Namespace"])


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
async def jobs_by_environment(labels: Mapping[str, str], body: Any, **_: Any) -> Any:
    return index_entry(labels.get(ENVIRONMENT_LABEL), body, keep=KEPT["Job"])


@kopf.index("v1", "pods", labels=MANAGED)
async def pods_by_environment(labels: Mapping[str, str], body: Any, **_: Any) -> Any:
    return index_entry(labels.get(ENVIRONMENT_LABEL), body, keep=KEPT["Pod"])


@kopf.index("v1", "services", labels=MANAGED)
async def services_by_environment(labels: Mapping[str, str], body: Any, **_: Any) -> Any:
    return index_entry(labels.get(ENVIRONMENT_LABEL), body, keep=KEPT["Service"])


@kopf.index("v1", "configmaps", labels=MANAGED)
async def configmaps_by_environment(labels: Mapping[str, str], body: Any, **_: Any) -> Any:
    return index_entry(labels.get(ENVIRONMENT_LABEL), body, keep=KEPT["ConfigMap"])


@kopf.on.startup()
async def startup(settings: Any, **kwargs: Any) -> None:
    ours = Settings()
    configure(settings, ours)
    kube = await Kube.connect(ours.api_concurrency)
    # kwargs holds the indexes above (kopf passes every index to every handler).
    reads = IndexReads(kwargs, fallback=ApiReads(kube))
    _state["reconciler"] = Reconciler(kube, ours, post_event, reads=reads)
    _pools["keeper"] = PoolKeeper(
        kube,
        PoolReads(kwargs),
        identity=ours.identity,
        default_ttl=ours.default_ttl,
        limit=ours.max_pooled_environments,
        resync=ours.pool_resync_interval,
    )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if "reconciler" in _state:
        await _state["reconciler"].stop_all()
    if "keeper" in _pools:
        await _pools["keeper"].stop_all()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def environment_event(
    type: str | None, body: Mapping[str, Any], name: str, uid: str, **_: Any
) -> None:
    """Every event of a TestEnvironment (its creation, a new spec, the operator's start
    listing it) wakes its monitor, which applies what the generation needs and refreshes the
    status (``Reconciler.reconcile``; an invalid spec is Failed there, API errors are retried
    with a backoff). No kopf create/update/resume handler: those would make kopf write its
    own annotations to every TestEnvironment (a diff base, handler progress), one more API
    write and watch event each, and keep a deep copy of every body to diff against."""
    rec = reconciler()
    pool = ((body.get("metadata") or {}).get("labels") or {}).get(POOL_LABEL)
    if pool and "keeper" in _pools:
        _pools["keeper"].nudge(pool)
    if type == "DELETED":
        await rec.stop(name)
        return
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return
    rec.ensure_monitor(name, uid)
    rec.nudge(name)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("v1", "services", labels=MANAGED)
@kopf.on.event("v1", "configmaps", labels=MANAGED)
@kopf.on.event("v1", "namespaces", labels=MANAGED)
async def child_event(type: str | None, labels: Mapping[str, str], **_: Any) -> None:
    """Any change to an environment's objects wakes its monitor; a deletion re-applies."""
    environment = labels.get(ENVIRONMENT_LABEL)
    if environment and "reconciler" in _state:
        _state["reconciler"].nudge(environment, reapply=type == "DELETED")


@kopf.on.event("v1", "pods", labels=MANAGED)
async def pod_event(labels: Mapping[str, str], **_: Any) -> None:
    """A pod's change wakes its environment's monitor. Not even a deletion re-applies: the
    monitor sees an empty slot itself (a pod being deleted is replaced at once, see pods.py),
    and a job's pods are their Job's."""
    environment = labels.get(ENVIRONMENT_LABEL)
    if environment and "reconciler" in _state:
        _state["reconciler"].nudge(environment)


@kopf.on.event(GROUP, VERSION, POOL_PLURAL)
async def pool_event(
    type: str | None, body: Mapping[str, Any], name: str, uid: str, **_: Any
) -> None:
    """A pool's task keeps it filled; it ends by itself once the pool is gone."""
    keeper = _pools.get("keeper")
    if keeper is None:
        return
    if type == "DELETED":
        await keeper.stop(name)
    elif not (body.get("metadata") or {}).get("deletionTimestamp"):
        keeper.ensure(name, uid)
