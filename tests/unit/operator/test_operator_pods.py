"""Which pods a service's slots need created or deleted (pure: testenv_operator.pods)."""

from __future__ import annotations

from typing import Any

from testenv_operator.pods import live_pods, plan_pods, pod_name, service_of_name

H = "0123456789abcdef"


def pod(name: str, *, phase: str = "Running", ready: bool = True, deleting: bool = False) -> Any:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:30Z"
    conditions = [{"type": "Ready", "status": "True"}] if ready else []
    return {"metadata": meta, "status": {"phase": phase, "conditions": conditions}}


def test_names_carry_service_hash_slot_and_attempt() -> None:
    assert pod_name("api", H, 0) == "api-0123456789-0"
    assert pod_name("api", H, 2, 3) == "api-0123456789-2-3"
    for name in ("api-0123456789-0", "api-0123456789-2-3"):
        assert service_of_name(name) == "api"
    assert service_of_name("my-api-0123456789-1") == "my-api"
    assert service_of_name("api-7d9f8c-xk2p1") is None  # a ReplicaSet's pod


def test_empty_slots_get_their_first_name() -> None:
    plan = plan_pods("api", H, 3, [])
    assert plan.create == [(i, pod_name("api", H, i)) for i in range(3)]
    assert plan.delete == []


def test_full_slots_need_nothing() -> None:
    pods = [pod(pod_name("api", H, i)) for i in range(2)]
    plan = plan_pods("api", H, 2, pods)
    assert (plan.create, plan.delete) == ([], [])


def test_a_slot_whose_pod_is_going_gets_the_next_name_at_once() -> None:
    plan = plan_pods("api", H, 1, [pod(pod_name("api", H, 0), deleting=True)])
    assert plan.create == [(0, pod_name("api", H, 0, 1))]
    assert plan.delete == []  # already being deleted
    # Again while both are there (or the new one is not read yet): the same name, never a third.
    going = [
        pod(pod_name("api", H, 0), deleting=True),
        pod(pod_name("api", H, 0, 1), deleting=True),
    ]
    assert plan_pods("api", H, 1, going).create == [(0, pod_name("api", H, 0, 2))]


def test_a_finished_pod_is_replaced_and_deleted() -> None:
    evicted = pod(pod_name("api", H, 0), phase="Failed", ready=False)
    plan = plan_pods("api", H, 1, [evicted])
    assert plan.create == [(0, pod_name("api", H, 0, 1))]
    assert plan.delete == [pod_name("api", H, 0)]


def test_outdated_and_surplus_pods_are_deleted_the_ready_one_of_a_slot_kept() -> None:
    old = pod(pod_name("api", "f" * 16, 0))
    surplus = pod(pod_name("api", H, 5))
    twin_ready, twin = pod(pod_name("api", H, 0, 1)), pod(pod_name("api", H, 0), ready=False)
    plan = plan_pods("api", H, 1, [old, surplus, twin, twin_ready])
    assert plan.create == []
    assert sorted(plan.delete) == sorted(
        [pod_name("api", "f" * 16, 0), pod_name("api", H, 5), pod_name("api", H, 0)]
    )


def test_scaled_to_zero_every_pod_goes() -> None:
    pods = [pod(pod_name("api", H, 0)), pod(pod_name("api", H, 1), deleting=True)]
    plan = plan_pods("api", H, 0, pods)
    assert plan.create == [] and plan.delete == [pod_name("api", H, 0)]


def test_live_pods_are_neither_going_nor_finished() -> None:
    pods = [
        pod("a"),
        pod("b", deleting=True),
        pod("c", phase="Failed"),
        pod("d", phase="Succeeded"),
    ]
    assert [p["metadata"]["name"] for p in live_pods(pods)] == ["a"]
