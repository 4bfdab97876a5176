"""Warm pools: a TestEnvironmentPool keeps ``size`` Ready environments of its template.

The pure part (:func:`plan_pool`, :func:`build_member`) decides what to create and delete from
what the operator's indexes show; :class:`PoolKeeper` runs one task per pool that applies the
plan and writes the pool's status, woken by events of the pool and of its environments.

A pool's environments carry ``testenv.dev/pool=<pool>`` and ``testenv.dev/pool-state``
(``available``). A client claims one with a single patch conditional on its resourceVersion
(so two clients never get the same one): the state becomes ``claimed``, the pool's
ownerReference is removed and the client's lease is set; from then on it is the client's
environment and the pool refills. Deleting the pool deletes its unclaimed environments
(ownerReference, garbage collector); claimed ones stay with their clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from testenv.api import (
    API_VERSION,
    CREATOR_ANNOTATION,
    KIND,
    MAX_ENVIRONMENT_NAME,
    POOL_AVAILABLE,
    POOL_CLAIMED,
    POOL_KIND,
    POOL_LABEL,
    POOL_STATE_LABEL,
    SPEC_HASH_LABEL,
    Phase,
    TestEnvironmentPoolSpec,
    TestEnvironmentPoolStatus,
    parse_duration,
    spec_hash,
    validation_problems,
)
from testenv_operator.kube import Conflict, KubeClient, KubeError, NotFound
from testenv_operator.timeutil import now, parse_time

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]

#: A created environment not yet in the index counts as refilling for this long.
PENDING_FOR = 30.0
#: An unclaimed environment is replaced once this share of its ttl has passed, so that a
#: claim always gets at least the rest.
RECYCLE_AFTER = 0.5


@dataclass(frozen=True)
class Member:
    """One environment of a pool, as the index shows it."""

    name: str
    uid: str
    resource_version: str
    state: str
    phase: str
    spec_hash: str
    created: datetime
    deleting: bool
    owned_by: str | None  # the pool uid its ownerReference names (None once claimed)

    @property
    def ready(self) -> bool:
        return self.phase == Phase.READY


def member_of(body: Obj) -> Member:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    owners = [
        str(ref.get("uid"))
        for ref in meta.get("ownerReferences") or []
        if ref.get("kind") == POOL_KIND
    ]
    return Member(
        name=str(meta.get("name")),
        uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        state=str(labels.get(POOL_STATE_LABEL, "")),
        phase=str((body.get("status") or {}).get("phase") or Phase.PENDING),
        spec_hash=str(labels.get(SPEC_HASH_LABEL, "")),
        created=parse_time(meta.get("creationTimestamp")) or now(),
        deleting=bool(meta.get("deletionTimestamp")),
        owned_by=owners[0] if owners else None,
    )


class InvalidPool(ValueError):
    """A pool whose spec the operator cannot use (its status says why)."""


def parse_pool(body: Obj, default_ttl: str) -> tuple[TestEnvironmentPoolSpec, str]:
    """The pool's spec (template ttl defaulted like an environment's) and its template hash."""
    raw = dict(body.get("spec") or {})
    template = dict(raw.get("template") or {})
    try:
        # The hash of the template as written (as clients compute it for their spec); the
        # ttl defaulted like an environment's only for the pool's own use (recycling).
        as_written = TestEnvironmentPoolSpec.model_validate({**raw, "template": template})
        template.setdefault("ttl", default_ttl)
        spec = TestEnvironmentPoolSpec.model_validate({**raw, "template": template})
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise InvalidPool(f"invalid pool spec: {problems}") from exc
    return spec, spec_hash(as_written.template)


def recycle_age(ttl: str) -> timedelta:
    """The age at which an unclaimed environment of this ttl is replaced."""
    return parse_duration(ttl) * RECYCLE_AFTER


@dataclass(frozen=True)
class PoolPlan:
    create: int
    delete: list[Member]
    status: TestEnvironmentPoolStatus


def plan_pool(
    spec: TestEnvironmentPoolSpec,
    template_hash: str,
    pool_uid: str,
    members: Iterable[Member],
    *,
    pending: int,
    room: int,
    now_: datetime,
) -> PoolPlan:
    """What to create and delete so that ``spec.size`` unclaimed environments of the current
    template exist, within ``spec.max_size`` (claimed ones count) and ``room`` (what the
    operator-wide limit leaves). ``pending``: created, not yet seen in ``members``."""
    live = [m for m in members if not m.deleting]
    claimed = [m for m in live if m.state == POOL_CLAIMED]
    available = [m for m in live if m.state == POOL_AVAILABLE and m.owned_by == pool_uid]
    oldest = recycle_age(spec.template.ttl)
    delete = [
        m
        for m in available
        if m.phase == Phase.FAILED or m.spec_hash != template_hash or now_ - m.created >= oldest
    ]
    keep = [m for m in available if m not in delete]
    surplus = len(keep) + pending - spec.size
    if surplus > 0:
        # Not-Ready first, newest first: the ones furthest from being useful.
        by_use = sorted(keep, key=lambda m: (m.ready, -m.created.timestamp()))
        extra = by_use[: min(surplus, len(keep))]
        delete += extra
        keep = [m for m in keep if m not in extra]
    wanted = max(0, spec.size - len(keep) - pending)
    under_max = max(0, spec.max_size - len(keep) - pending - len(claimed))
    create = min(wanted, under_max, max(0, room))
    message = None
    if create < wanted:
        message = (
            f"cannot refill {wanted - create}: maxSize {spec.max_size} reached "
            f"({len(claimed)} claimed)"
            if create == under_max
            else "cannot refill: the operator's limit of pooled environments is reached "
            "(operator setting TESTENV_MAX_POOLED_ENVIRONMENTS)"
        )
    ready = sum(1 for m in keep if m.ready)
    status = TestEnvironmentPoolStatus(
        ready=ready,
        refilling=len(keep) - ready + pending + create,
        claimed=len(claimed),
        spec_hash=template_hash,
        message=message,
    )
    return PoolPlan(create=create, delete=delete, status=status)


def member_name(pool: str) -> str:
    """``<pool>-<6 hex>``, within the longest environment name."""
    suffix = secrets.token_hex(3)
    return f"{pool[: MAX_ENVIRONMENT_NAME - len(suffix) - 1].rstrip('-')}-{suffix}"


def build_member(pool: Obj, template_hash: str, identity: str | None) -> dict[str, Any]:
    """A new environment of ``pool``: its template, owned by the pool, labelled available."""
    meta = pool.get("metadata") or {}
    name = str(meta["name"])
    template = dict((pool.get("spec") or {}).get("template") or {})
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": member_name(name),
            "labels": {
                POOL_LABEL: name,
                POOL_STATE_LABEL: POOL_AVAILABLE,
                SPEC_HASH_LABEL: template_hash,
            },
            "annotations": {CREATOR_ANNOTATION: identity} if identity else {},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": POOL_KIND,
                    "name": name,
                    "uid": str(meta["uid"]),
                    "controller": True,
                }
            ],
        },
        "spec": template,
    }


class PoolReads:
    """Pools and their environments, from the operator's indexes (see handlers.py)."""

    def __init__(self, indices: Mapping[str, Any]) -> None:
        self.indices = indices

    def pool(self, name: str) -> Obj | None:
        found = list((self.indices.get("pools_by_name") or {}).get(name) or [])
        return found[0] if found else None

    def members(self, pool: str) -> list[Member]:
        return [member_of(b) for b in (self.indices.get("pool_members") or {}).get(pool) or []]

    def pooled_available(self) -> int:
        """Unclaimed environments of every pool (the operator-wide limit counts these)."""
        index = self.indices.get("pool_members") or {}
        return sum(
            1
            for pool in list(index.keys())
            for m in (member_of(b) for b in index.get(pool) or [])
            if m.state == POOL_AVAILABLE and not m.deleting
        )


@dataclass
class PoolState:
    uid: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    #: Environments created (monotonic time) that the index has not shown yet.
    pending: dict[str, float] = field(default_factory=dict)
    written: dict[str, Any] | None = None


class PoolKeeper:
    """One task per pool: refill, trim, recycle, and the pool's status."""

    def __init__(
        self,
        kube: KubeClient,
        reads: PoolReads,
        *,
        identity: str | None,
        default_ttl: str,
        limit: int,
        resync: float,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.kube = kube
        self.reads = reads
        self.identity = identity
        self.default_ttl = default_ttl
        self.limit = limit
        self.resync = resync
        self.clock = clock
        self.states: dict[str, PoolState] = {}

    def ensure(self, name: str, uid: str) -> None:
        state = self.states.get(name)
        if state is None or state.uid != uid:
            if state is not None and state.task is not None:
                state.task.cancel()
            state = self.states[name] = PoolState(uid=uid)
        if state.task is None or state.task.done():
            state.task = asyncio.create_task(self._keep(name, state), name=f"pool/{name}")
        state.wake.set()

    def nudge(self, name: str) -> None:
        state = self.states.get(name)
        if state is not None:
            state.wake.set()

    async def stop(self, name: str) -> None:
        state = self.states.pop(name, None)
        if state is not None and state.task is not None:
            state.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await state.task

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self.states)))

    def _pending(self, state: PoolState, members: list[Member]) -> int:
        seen = {m.name for m in members}
        cutoff = time.monotonic() - PENDING_FOR
        state.pending = {n: t for n, t in state.pending.items() if n not in seen and t > cutoff}
        return len(state.pending)

    async def sync(self, name: str, state: PoolState) -> bool:
        """One pass; False once the pool is gone."""
        body = self.reads.pool(name)
        meta = (body or {}).get("metadata") or {}
        if body is None or meta.get("uid") != state.uid or meta.get("deletionTimestamp"):
            return False
        try:
            spec, template_hash = parse_pool(body, self.default_ttl)
        except InvalidPool as exc:
            await self._write_status(name, state, TestEnvironmentPoolStatus(message=str(exc)))
            return True
        members = self.reads.members(name)
        pending = self._pending(state, members)
        room = (
            self.limit
            - self.reads.pooled_available()
            - sum(len(s.pending) for s in self.states.values())
        )
        plan = plan_pool(
            spec, template_hash, state.uid, members, pending=pending, room=room, now_=self.clock()
        )
        for member in plan.delete:
            with contextlib.suppress(Conflict, NotFound):  # claimed or gone meanwhile
                await self.kube.delete(
                    KIND,
                    member.name,
                    preconditions={"uid": member.uid, "resourceVersion": member.resource_version},
                )
        status = plan.status
        for _ in range(plan.create):
            obj = build_member(body, template_hash, self.identity)
            try:
                await self.kube.create(obj)
            except KubeError as exc:
                status = status.model_copy(
                    update={
                        "message": f"cannot create an environment: {exc.message[:500]}",
                        "refilling": max(0, status.refilling - 1),
                    }
                )
                break
            state.pending[obj["metadata"]["name"]] = time.monotonic()
        status = status.model_copy(update={"observed_generation": meta.get("generation")})
        await self._write_status(name, state, status)
        return True

    async def _write_status(self, name: str, state: PoolState, status: Any) -> None:
        wire = status.to_wire()
        if wire == state.written:
            return
        # Every field, null when unset: a merge patch must clear an old message.
        patch = {"status": {"message": None, **wire}}
        await self.kube.patch_status(name, patch, kind=POOL_KIND)
        state.written = wire

    async def _keep(self, name: str, state: PoolState) -> None:
        backoff = 1.0
        while True:
            state.wake.clear()
            timeout = self.resync
            try:
                if not await self.sync(name, state):
                    if self.states.get(name) is state:
                        self.states.pop(name, None)
                    return
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the pool whatever happens
                log.warning("pool %s: sync failed (retrying in %.0fs): %s", name, backoff, exc)
                timeout = backoff
                backoff = min(backoff * 2, 30.0)
            if state.pending:
                timeout = min(timeout, PENDING_FOR)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.wake.wait(), timeout)
