"""Claiming an environment from a warm pool (a TestEnvironmentPool the operator keeps filled).

A claim is one merge patch conditional on the environment's resourceVersion: of clients that
claim the same environment at once (xdist workers, parallel CI jobs) exactly one succeeds, the
others get 409 Conflict and try the next. The patch makes the environment the client's: state
``claimed``, no ownerReference to the pool (deleting the pool leaves it alone), the client's
lease (renewed from then on, so a killed client's environment still ends).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kr8s

from ._kube import TestEnvironment, TestEnvironmentPool, parse_status, server_status
from ._spec import now_rfc3339, spec_hash
from .api import (
    CLAIMED_BY_ANNOTATION,
    CREATOR_ANNOTATION,
    LEASE_RENEWED_ANNOTATION,
    POOL_AVAILABLE,
    POOL_CLAIMED,
    POOL_LABEL,
    POOL_STATE_LABEL,
    SPEC_HASH_LABEL,
    Phase,
    TestEnvironmentPoolStatus,
    TestEnvironmentSpec,
)

#: Attempts on one environment that keeps changing under a claim before trying the next.
CONFLICT_RETRIES = 3


@dataclass(frozen=True)
class Claim:
    obj: Any  # the claimed TestEnvironment (kr8s object, patched)
    pool: str
    ready: bool


def trusted_member(raw: Mapping[str, Any], wanted_hash: str, identity: str) -> bool:
    """Whether an environment is an unclaimed one of a pool, created by the operator (the
    admission policy guarantees the creator annotation) and running exactly ``wanted_hash``
    (recomputed from its spec: labels are only lookup keys anyone could set)."""
    meta = raw.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if meta.get("deletionTimestamp") or labels.get(POOL_STATE_LABEL) != POOL_AVAILABLE:
        return False
    if not labels.get(POOL_LABEL) or annotations.get(CREATOR_ANNOTATION) != identity:
        return False
    if parse_status(dict(raw)).phase in (Phase.FAILED, Phase.TERMINATING):
        return False
    try:
        actual = TestEnvironmentSpec.model_validate(raw.get("spec") or {})
    except ValueError:
        return False
    return spec_hash(actual) == wanted_hash


def claim_order(raw: Mapping[str, Any]) -> tuple[bool, str]:
    """Ready ones first; among them the youngest (the most ttl left)."""
    meta = raw.get("metadata") or {}
    created = str(meta.get("creationTimestamp") or "")
    inverted = "".join(chr(0x10FFFF - ord(c)) for c in created)  # descending
    return parse_status(dict(raw)).phase != Phase.READY, inverted


def claim_patch(
    raw: Mapping[str, Any], *, user: str | None, lease: str | None, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The conditional patch that makes a pool's environment the claimer's."""
    meta = raw.get("metadata") or {}
    return {
        "metadata": {
            "resourceVersion": meta.get("resourceVersion"),
            "labels": {**labels, POOL_STATE_LABEL: POOL_CLAIMED},
            "annotations": {
                LEASE_RENEWED_ANNOTATION: now_rfc3339(),
                CLAIMED_BY_ANNOTATION: user or "unknown",
            },
            "ownerReferences": None,
        },
        "spec": {"lease": lease},
    }


async def claim(
    api: Any,
    wanted_hash: str,
    *,
    identity: str,
    user: str | None,
    lease: str | None,
    labels: Mapping[str, str],
) -> Claim | None:
    """Claim an unclaimed environment of a pool with this spec hash; None if there is none."""
    selector = {SPEC_HASH_LABEL: wanted_hash, POOL_STATE_LABEL: POOL_AVAILABLE}
    try:
        found = [o async for o in api.async_get(TestEnvironment, label_selector=selector)]
    except kr8s.ServerError:
        return None
    candidates = sorted(
        (o for o in found if trusted_member(o.raw, wanted_hash, identity)),
        key=lambda o: claim_order(o.raw),
    )
    for obj in candidates:
        for _ in range(CONFLICT_RETRIES):
            patch = claim_patch(obj.raw, user=user, lease=lease, labels=labels)
            try:
                await obj.async_patch(patch, type="merge")
            except kr8s.ServerError as exc:
                if server_status(exc) == 404:
                    break
                if server_status(exc) != 409:
                    raise
                # Changed since we listed it: claimed by someone else (next one), or only
                # updated by the operator (claim it at its new version).
                try:
                    await obj.async_refresh()
                except kr8s.NotFoundError:
                    break
                if not trusted_member(obj.raw, wanted_hash, identity):
                    break
                continue
            return Claim(
                obj=obj,
                pool=str(obj.labels.get(POOL_LABEL)),
                ready=parse_status(obj.raw).phase == Phase.READY,
            )
    return None


async def matching_pools(api: Any, wanted_hash: str) -> list[tuple[str, TestEnvironmentPoolStatus]]:
    """Pools whose template has this spec hash, with their status (none without the CRD)."""
    try:
        pools = [o async for o in api.async_get(TestEnvironmentPool)]
    except (kr8s.ServerError, ValueError, LookupError):
        return []
    out = []
    for pool in pools:
        status = TestEnvironmentPoolStatus.model_validate(pool.raw.get("status") or {})
        if status.spec_hash == wanted_hash:
            out.append((str(pool.name), status))
    return out
