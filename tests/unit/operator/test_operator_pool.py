"""Warm pools: what the operator creates and deletes to keep a pool filled (pure planning),
and one pass of the keeper against an in-memory cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from operator_fake_kube import FakeKube

from testenv.api import (
    CREATOR_ANNOTATION,
    MAX_ENVIRONMENT_NAME,
    POOL_AVAILABLE,
    POOL_CLAIMED,
    POOL_LABEL,
    POOL_STATE_LABEL,
    SPEC_HASH_LABEL,
    TestEnvironmentPoolSpec,
    TestEnvironmentSpec,
    spec_hash,
)
from testenv_operator.pool import (
    Member,
    PoolKeeper,
    PoolReads,
    PoolState,
    build_member,
    member_of,
    parse_pool,
    plan_pool,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POOL_UID = "pool-uid"
SPEC = TestEnvironmentPoolSpec.model_validate({"size": 2, "maxSize": 4, "template": {}})
HASH = spec_hash(SPEC.template)


def member(
    name: str,
    *,
    state: str = POOL_AVAILABLE,
    phase: str = "Ready",
    age: float = 60,
    hash_: str = HASH,
    owner: str | None = POOL_UID,
    deleting: bool = False,
) -> Member:
    return Member(
        name=name,
        uid=f"uid-{name}",
        resource_version="1",
        state=state,
        phase=phase,
        spec_hash=hash_,
        created=NOW - timedelta(seconds=age),
        deleting=deleting,
        owned_by=owner if state == POOL_AVAILABLE else None,
    )


def plan(members: list[Member], *, pending: int = 0, room: int = 100, spec: Any = SPEC) -> Any:
    return plan_pool(spec, HASH, POOL_UID, members, pending=pending, room=room, now_=NOW)


def test_an_empty_pool_is_filled_to_its_size() -> None:
    result = plan([])
    assert (result.create, result.delete) == (2, [])
    assert (result.status.ready, result.status.refilling, result.status.claimed) == (0, 2, 0)
    assert result.status.spec_hash == HASH and result.status.message is None


def test_a_full_pool_creates_nothing_and_counts_ready_and_starting() -> None:
    result = plan([member("a"), member("b", phase="Provisioning")])
    assert (result.create, result.delete) == (0, [])
    assert (result.status.ready, result.status.refilling) == (1, 1)


def test_a_claim_is_refilled_and_counted_as_claimed() -> None:
    result = plan([member("a"), member("b", state=POOL_CLAIMED)])
    assert result.create == 1
    assert (result.status.ready, result.status.refilling, result.status.claimed) == (1, 1, 1)


def test_environments_being_created_are_not_created_twice() -> None:
    assert plan([member("a")], pending=1).create == 0


def test_max_size_counts_claimed_environments_and_says_why_it_stops() -> None:
    claimed = [member(f"c{i}", state=POOL_CLAIMED) for i in range(3)]
    result = plan(claimed)
    assert result.create == 1
    assert result.status.message and "maxSize 4" in result.status.message
    assert plan([*claimed, member("c3", state=POOL_CLAIMED)]).create == 0


def test_the_operator_wide_limit_is_respected() -> None:
    result = plan([], room=1)
    assert result.create == 1
    assert result.status.message and "TESTENV_MAX_POOLED_ENVIRONMENTS" in result.status.message
    assert plan([], room=-3).create == 0


@pytest.mark.parametrize(
    "bad",
    [
        member("x", phase="Failed"),
        member("x", hash_="0123456789abcdef"),  # the template changed since
        member("x", age=timedelta(minutes=31).total_seconds()),  # past half its 1h ttl
    ],
    ids=["failed", "outdated-template", "too-old"],
)
def test_unusable_environments_are_replaced(bad: Member) -> None:
    result = plan([member("a"), bad])
    assert result.delete == [bad]
    assert result.create == 1


def test_a_smaller_size_deletes_the_least_useful_first() -> None:
    spec = SPEC.model_copy(update={"size": 1})
    old_ready = member("old", age=300)
    starting = member("new", phase="Provisioning", age=5)
    result = plan([old_ready, starting], spec=spec)
    assert result.delete == [starting]
    assert result.create == 0


def test_claimed_deleting_and_foreign_environments_are_not_available() -> None:
    others = [
        member("mine-claimed", state=POOL_CLAIMED),
        member("going", deleting=True),
        member("other-pool", owner="another-uid"),
    ]
    result = plan(others)
    assert result.create == 2
    assert result.delete == []
    assert result.status.claimed == 1


def pool_body(name: str = "warm", spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "testenv.dev/v1alpha1",
        "kind": "TestEnvironmentPool",
        "metadata": {"name": name, "uid": POOL_UID, "generation": 3},
        "spec": spec if spec is not None else {"size": 2, "maxSize": 4, "template": {}},
    }


def test_a_member_is_the_template_owned_by_the_pool_and_created_by_the_operator() -> None:
    obj = build_member(pool_body(), HASH, "system:serviceaccount:testenv-system:op")
    meta = obj["metadata"]
    assert meta["labels"] == {
        POOL_LABEL: "warm",
        POOL_STATE_LABEL: POOL_AVAILABLE,
        SPEC_HASH_LABEL: HASH,
    }
    assert meta["annotations"] == {CREATOR_ANNOTATION: "system:serviceaccount:testenv-system:op"}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "testenv.dev/v1alpha1",
            "kind": "TestEnvironmentPool",
            "name": "warm",
            "uid": POOL_UID,
            "controller": True,
        }
    ]
    assert obj["spec"] == {}
    assert meta["name"].startswith("warm-")
    assert member_of(obj).state == POOL_AVAILABLE


def test_member_names_fit_for_the_longest_pool_names() -> None:
    obj = build_member(pool_body("p" * 63), HASH, None)
    assert len(obj["metadata"]["name"]) <= MAX_ENVIRONMENT_NAME
    assert "annotations" not in obj["metadata"] or not obj["metadata"]["annotations"]


def test_the_pool_hash_is_what_a_client_computes_for_the_same_spec() -> None:
    """A client's default spec matches a pool with an empty template, whatever default ttl
    the operator applies to the pool's environments."""
    spec, template_hash = parse_pool(pool_body(), default_ttl="3h")
    assert template_hash == spec_hash(TestEnvironmentSpec())
    assert spec.template.ttl == "3h"
    _, other = parse_pool(pool_body(spec={"template": {"ttl": "3h"}}), default_ttl="1h")
    assert other == spec_hash(TestEnvironmentSpec(ttl="3h")) != template_hash


class Indices(dict[str, Any]):
    """kopf's indexes as the keeper reads them: {index: {key: [bodies]}}."""

    def __init__(self, kube: FakeKube) -> None:
        super().__init__()
        self.kube = kube

    def refresh(self) -> None:
        pools: dict[str, list[Any]] = {}
        members: dict[str, list[Any]] = {}
        for (kind, _, name), obj in self.kube.objects.items():
            if kind == "TestEnvironmentPool":
                pools[name] = [obj]
            elif kind == "TestEnvironment":
                pool = (obj["metadata"].get("labels") or {}).get(POOL_LABEL)
                if pool:
                    members.setdefault(pool, []).append(obj)
        self["pools_by_name"] = pools
        self["pool_members"] = members


async def test_the_keeper_fills_a_pool_once_and_reports_it_in_the_status() -> None:
    kube = FakeKube()
    kube.put(pool_body())
    indices = Indices(kube)
    keeper = PoolKeeper(
        kube,
        PoolReads(indices),
        identity="system:serviceaccount:testenv-system:op",
        default_ttl="1h",
        limit=100,
        resync=10,
        clock=lambda: NOW,
    )
    state = keeper.states.setdefault("warm", PoolState(uid=POOL_UID))
    indices.refresh()
    assert await keeper.sync("warm", state)
    created = [c for c in kube.calls if c[:2] == ("create", "TestEnvironment")]
    assert len(created) == 2
    status = kube.find("TestEnvironmentPool", "warm")["status"]  # type: ignore[index]
    assert status["refilling"] == 2 and status["specHash"] == HASH
    assert status["observedGeneration"] == 3
    # The index has not shown them yet: a second pass must not create more.
    indices["pool_members"] = {}
    assert await keeper.sync("warm", state)
    assert len([c for c in kube.calls if c[:2] == ("create", "TestEnvironment")]) == 2
    # The pool is gone: its task ends.
    kube.objects.pop(("TestEnvironmentPool", None, "warm"))
    indices.refresh()
    assert not await keeper.sync("warm", state)
