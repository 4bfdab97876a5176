"""bench/burst.py: the objects it creates are the operator's, yet the running operator never
sees them (pure logic, no cluster)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def burst(bench_module: Any) -> Any:
    return bench_module("burst")


def test_objects_are_the_operators_without_its_label_or_owner(burst: Any) -> None:
    spec = burst.TestEnvironmentSpec.model_validate(burst.web_spec("t", services=1))
    ns, secret, rest = burst.environment("tag1", spec, bare_pods=False)
    kinds = [o["kind"] for o in rest]
    assert ns["kind"] == "Namespace" and secret["kind"] == "Secret"
    assert {"ResourceQuota", "LimitRange", "NetworkPolicy", "Service", "Deployment"} <= set(kinds)
    for obj in (ns, secret, *rest):
        labels = obj["metadata"]["labels"]
        assert burst.MANAGED_LABEL not in labels, obj["kind"]
        assert labels[burst.LABEL] == "tag1"
        assert "ownerReferences" not in obj["metadata"]
    deployment = next(o for o in rest if o["kind"] == "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert burst.MANAGED_LABEL not in pod_labels and pod_labels[burst.LABEL] == "tag1"
    # The pods keep what the operator's Service selects.
    service = next(o for o in rest if o["kind"] == "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_the_deployments_make_the_operators_pods(burst: Any) -> None:
    spec = burst.TestEnvironmentSpec.model_validate(burst.web_spec("t", services=1))
    _, _, with_deployments = burst.environment("tag", spec, bare_pods=False)
    _, _, with_pods = burst.environment("tag", spec, bare_pods=True)
    assert [o["kind"] for o in with_pods] == [
        "Pod" if o["kind"] == "Deployment" else o["kind"] for o in with_deployments
    ]
    deployment = next(o for o in with_deployments if o["kind"] == "Deployment")
    pod = next(o for o in with_pods if o["kind"] == "Pod")
    assert pod["metadata"]["name"].startswith(deployment["metadata"]["name"] + "-")
    assert deployment["spec"]["selector"]["matchLabels"].keys() <= pod["metadata"]["labels"].keys()
    # Each environment has a name of its own; the labels are the same otherwise.
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod["metadata"]["labels"].keys() == template_labels.keys()
    assert pod["metadata"]["labels"][burst.LABEL] == "tag"
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in pod["spec"]["containers"]] == [c["image"] for c in containers]
