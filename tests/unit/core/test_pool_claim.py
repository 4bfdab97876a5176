"""Claims from a warm pool: which environments a client trusts and the conditional patch."""

from __future__ import annotations

from typing import Any

import pytest

from testenv._pool import claim_order, claim_patch, trusted_member
from testenv.api import (
    CLAIMED_BY_ANNOTATION,
    CREATOR_ANNOTATION,
    LEASE_RENEWED_ANNOTATION,
    POOL_AVAILABLE,
    POOL_CLAIMED,
    POOL_LABEL,
    POOL_STATE_LABEL,
    TestEnvironmentSpec,
    spec_hash,
)

OPERATOR = "system:serviceaccount:testenv-system:testenv-operator"
WANTED = spec_hash(TestEnvironmentSpec())


def member(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "metadata": {
            "name": "warm-abc123",
            "resourceVersion": "42",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {POOL_LABEL: "warm", POOL_STATE_LABEL: POOL_AVAILABLE},
            "annotations": {CREATOR_ANNOTATION: OPERATOR},
            "ownerReferences": [{"kind": "TestEnvironmentPool", "name": "warm", "uid": "u"}],
        },
        "spec": {},
        "status": {"phase": "Ready"},
    }
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = raw
        for key in parents:
            node = node[key]
        node[leaf] = value
    return raw


def test_an_unclaimed_environment_of_the_operator_with_our_spec_is_trusted() -> None:
    assert trusted_member(member(), WANTED, OPERATOR)


@pytest.mark.parametrize(
    "changes",
    [
        {"metadata__annotations": {CREATOR_ANNOTATION: "mallory"}},  # a decoy by a user
        {"metadata__annotations": {}},
        {"metadata__labels": {POOL_LABEL: "warm", POOL_STATE_LABEL: POOL_CLAIMED}},
        {"metadata__labels": {POOL_STATE_LABEL: POOL_AVAILABLE}},  # no pool
        {"metadata__deletionTimestamp": "2026-01-01T00:01:00Z"},
        {"status": {"phase": "Failed"}},
        {"spec": {"ttl": "5h"}},  # another spec behind a matching label
        {"spec": {"services": "not a list"}},
    ],
    ids=[
        "other-creator",
        "no-creator",
        "claimed",
        "no-pool",
        "deleting",
        "failed",
        "other-spec",
        "invalid-spec",
    ],
)
def test_anything_else_is_never_claimed(changes: dict[str, Any]) -> None:
    assert not trusted_member(member(**changes), WANTED, OPERATOR)


def test_ready_environments_are_claimed_first_then_the_youngest() -> None:
    old_ready = member(metadata__creationTimestamp="2026-01-01T00:00:00Z")
    young_ready = member(metadata__creationTimestamp="2026-01-01T00:05:00Z")
    starting = member(
        status={"phase": "Provisioning"}, metadata__creationTimestamp="2026-01-02T00:00:00Z"
    )
    ordered = sorted([starting, old_ready, young_ready], key=claim_order)
    assert ordered == [young_ready, old_ready, starting]


def test_the_claim_is_conditional_and_makes_the_environment_the_claimers() -> None:
    patch = claim_patch(member(), user="alice", lease="2m", labels={"team": "qa"})
    meta = patch["metadata"]
    assert meta["resourceVersion"] == "42"  # a concurrent claim changed it: 409, try another
    assert meta["labels"] == {"team": "qa", POOL_STATE_LABEL: POOL_CLAIMED}
    assert meta["ownerReferences"] is None  # deleting the pool leaves it alone
    assert meta["annotations"][CLAIMED_BY_ANNOTATION] == "alice"
    assert LEASE_RENEWED_ANNOTATION in meta["annotations"]
    assert patch["spec"] == {"lease": "2m"}
