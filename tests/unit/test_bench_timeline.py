"""bench/timeline.py: which step a watched event completes (pure logic, no cluster)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def timeline(bench_module: Any) -> Any:
    return bench_module("timeline")


def _pod(
    name: str,
    *,
    node: bool = False,
    sandbox: bool = False,
    running: bool = False,
    ready: bool = False,
) -> Any:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if sandbox:
        conditions.append({"type": "PodReadyToStartContainers", "status": "True"})
    return {
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": "vm"} if node else {},
        "status": {
            "containerStatuses": [{"state": {"running": {}} if running else {"waiting": {}}}],
            "conditions": conditions,
        },
    }


def test_a_step_of_the_last_pod_is_seen_only_once_every_pod_has_reached_it(
    timeline: Any,
) -> None:
    watched = timeline.Timeline("env", pods=2)
    watched._event({"kind": "TestEnvironment", "status": {}})
    watched._event(_pod("a", node=True, running=True, ready=True))
    assert set(watched.seen) == {"TestEnvironment created", "first pod created"}
    watched._event(_pod("b"))
    assert "last pod created" in watched.seen
    assert "last pod scheduled" not in watched.seen  # b is not scheduled yet
    watched._event(_pod("b", node=True))
    assert "last pod scheduled" in watched.seen
    assert "last pod's sandbox and network ready" not in watched.seen
    watched._event(_pod("b", node=True, sandbox=True))
    assert "last pod's sandbox and network ready" in watched.seen
    assert "last pod's containers running" not in watched.seen
    watched._event(_pod("b", node=True, sandbox=True, running=True))
    assert "last pod's containers running" in watched.seen
    assert "last pod Ready" not in watched.seen
    watched._event(_pod("b", node=True, sandbox=True, running=True, ready=True))
    watched._event(
        {"kind": "TestEnvironment", "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    )
    assert list(watched.seen) == list(timeline.STEPS)
    assert list(watched.seen.values()) == sorted(watched.seen.values())


def test_the_round_is_complete_only_once_every_step_is_seen(timeline: Any) -> None:
    """The end of a round waits for ``complete``: the TestEnvironment's Ready can arrive
    before the pods' last steps, which come on the other stream."""
    watched = timeline.Timeline("env", pods=1)
    watched._event(_pod("a", node=True, sandbox=True, running=False))
    watched._event(
        {"kind": "TestEnvironment", "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    )
    assert "TestEnvironment Ready" in watched.seen and not watched.complete.is_set()
    watched._event(_pod("a", node=True, sandbox=True, running=True, ready=True))
    assert watched.complete.is_set()


def test_a_step_keeps_the_time_it_was_first_seen(timeline: Any) -> None:
    watched = timeline.Timeline("env", pods=1)
    watched._event(_pod("a", node=True, running=True, ready=True))
    first = dict(watched.seen)
    watched._event(_pod("a", node=True, running=True, ready=True))
    assert watched.seen == first


def test_without_the_sandbox_condition_running_containers_mean_the_sandbox_was_ready(
    timeline: Any,
) -> None:
    """Clusters that do not report PodReadyToStartContainers still get every step."""
    watched = timeline.Timeline("env", pods=1)
    watched._event(_pod("a", node=True))
    assert "last pod's sandbox and network ready" not in watched.seen
    watched._event(_pod("a", node=True, running=True))
    sandbox = watched.seen["last pod's sandbox and network ready"]
    assert sandbox == watched.seen["last pod's containers running"]


def test_a_step_seen_late_on_its_own_stream_is_bounded_by_the_next_step(timeline: Any) -> None:
    """The pod watch can deliver the last pod's Ready after the TestEnvironment's Ready came
    on the other stream: the steps still read in the order they happened."""
    watched = timeline.Timeline("env", pods=1)
    watched.seen.update({"TestEnvironment created": 0.1, "last pod scheduled": 0.4})
    watched.seen["TestEnvironment Ready"] = 1.4
    watched.seen["last pod Ready"] = 1.8  # arrived late
    watched.seen["last pod's containers running"] = 1.3
    steps = watched.steps()
    assert list(steps) == [s for s in timeline.STEPS if s in watched.seen]
    assert steps["last pod Ready"] == 1.4
    assert steps["last pod's containers running"] == 1.3
    assert steps["TestEnvironment Ready"] == 1.4
    assert list(steps.values()) == sorted(steps.values())


def test_the_medians_over_rounds_come_from_rounds_that_saw_every_step(
    bench_module: Any, timeline: Any
) -> None:
    run = bench_module("run")
    steps = timeline.STEPS
    full = {step: float(i) for i, step in enumerate(steps)}
    later = {step: t + 10 for step, t in full.items()}
    # A round whose pod steps never arrived, ended early: it would pull the environment's
    # Ready median below the pods' (taken from the other rounds only).
    short = {steps[0]: 0.0, steps[-1]: 1.0}
    medians = run.watched_steps([full, later, short])
    assert list(medians) == list(steps)
    assert list(medians.values()) == sorted(medians.values())
    assert medians[steps[-1]] == (full[steps[-1]] + later[steps[-1]]) / 2
