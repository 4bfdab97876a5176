"""The fenced operator, on the real cluster: what its service account may not do, namespace
squatting, foreign labels and the image policy.

Every write is a server-side dry run (``--dry-run=server``) made *as the operator's service
account* (``--as``): RBAC and admission (the chart's ValidatingAdmissionPolicies) both run,
nothing is stored.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from e2e_helpers import (
    OPERATOR_NAMESPACE,
    OPERATOR_SELECTOR,
    Kubectl,
    manifest,
    status,
    wait_ready,
)

from testenv.api import REFERENCE_IMAGE_TAG

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]

OPERATOR = f"system:serviceaccount:{OPERATOR_NAMESPACE}:testenv-operator"
AUTH = f"testenv/auth:{REFERENCE_IMAGE_TAG}"
FENCE = "may only write in the namespaces of TestEnvironments"
FENCE_NS = "may only create namespaces named testenv-*"

#: (case, kubectl arguments, what the refusal says). Each is an action a compromised or
#: misled operator could try; every one must be refused.
OUT_OF_SCOPE: list[tuple[str, list[str], str]] = [
    ("list-secrets-anywhere", ["get", "secrets", "-A"], "forbidden"),
    ("read-kube-system-secrets", ["get", "secrets", "-n", "kube-system"], "forbidden"),
    ("pod-in-kube-system", ["run", "x", f"--image={AUTH}", "-n", "kube-system"], FENCE),
    ("job-in-default", ["create", "job", "x", f"--image={AUTH}", "-n", "default"], FENCE),
    ("configmap-in-default", ["create", "configmap", "x", "-n", "default"], FENCE),
    (
        "service-in-default",
        ["create", "service", "clusterip", "x", "--tcp=80", "-n", "default"],
        FENCE,
    ),
    (
        "secret-in-its-own-namespace",
        ["create", "secret", "generic", "x", "-n", OPERATOR_NAMESPACE],
        FENCE,
    ),
    ("relabel-a-namespace", ["label", "namespace", "kube-system", "x=y"], "forbidden"),
    ("namespace-outside-its-prefix", ["create", "namespace", "team-payments-prod"], FENCE_NS),
    ("unlabelled-namespace-in-its-prefix", ["create", "namespace", "testenv-squat"], FENCE_NS),
    ("delete-a-namespace", ["delete", "namespace", "default"], "forbidden"),
    (
        "bind-cluster-admin",
        ["create", "clusterrolebinding", "x", "--clusterrole=cluster-admin", "--user=x"],
        "forbidden",
    ),
    # It creates and deletes pods (its services'), never gets into one. (``pods/exec`` would
    # ask about a pod named "exec": a subresource is asked for with --subresource.)
    ("exec-into-pods", ["auth", "can-i", "create", "pods", "--subresource=exec", "-A"], "no"),
    ("attach-to-pods", ["auth", "can-i", "create", "pods", "--subresource=attach", "-A"], "no"),
    (
        "debug-containers-into-pods",
        ["auth", "can-i", "update", "pods", "--subresource=ephemeralcontainers", "-A"],
        "no",
    ),
    # A service's pods are its own (no Deployment): it needs no workload controller's rights.
    ("create-deployments", ["auth", "can-i", "create", "deployments", "-A"], "no"),
    ("patch-pods", ["auth", "can-i", "patch", "pods", "-A"], "no"),
    ("update-the-crd", ["auth", "can-i", "update", "customresourcedefinitions"], "no"),
    # It writes a TestEnvironment's status only: a user's spec, labels and lease are theirs.
    ("change-an-environment", ["auth", "can-i", "patch", "testenvironments", "-A"], "no"),
]


def test_the_operator_account_cannot_delete_pods_outside_its_namespaces(k: Kubectl) -> None:
    """It may delete pods (its services' outdated ones): only in its environments'
    namespaces. Its own pod is the one at hand outside them."""
    proc = as_operator(k, ["delete", "pod", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR])
    assert proc.returncode != 0, f"deleting its own pod was allowed: {proc.stdout}"
    assert FENCE in proc.stderr, proc.stderr


def as_operator(k: Kubectl, args: list[str]) -> Any:
    dry = [] if args[0] in ("get", "auth") else ["--dry-run=server"]
    return k(*args, *dry, "--as", OPERATOR, check=False)


@pytest.mark.parametrize(
    ("case", "args", "expected"), OUT_OF_SCOPE, ids=[c[0] for c in OUT_OF_SCOPE]
)
def test_the_operator_account_cannot_act_out_of_scope(
    k: Kubectl, case: str, args: list[str], expected: str
) -> None:
    proc = as_operator(k, args)
    if args[0] == "auth":
        assert proc.stdout.strip() == "no", f"{case}: {proc.stdout}{proc.stderr}"
        return
    assert proc.returncode != 0, f"{case} was allowed: {proc.stdout}"
    assert expected in proc.stderr, proc.stderr


def test_the_operator_account_may_write_in_an_environment(k: Kubectl, envs: Any) -> None:
    """The fence lets the operator do its job: write in its environments' namespaces."""
    name = envs({"services": []})
    k("wait", "--for=jsonpath={.status.phase}=Ready", f"testenv/{name}", "--timeout=120s")
    ns = status(k, name)["namespace"]
    for args in (
        ["create", "configmap", "x", "-n", ns],
        ["create", "job", "x", f"--image={AUTH}", "-n", ns],
        ["create", "secret", "generic", "x", "-n", ns],
    ):
        proc = as_operator(k, args)
        assert proc.returncode == 0, proc.stderr


@pytest.fixture
def foreign_namespace(k: Kubectl) -> Iterator[str]:
    """A namespace inside the product's prefix that someone else created."""
    name = f"testenv-squat-{uuid.uuid4().hex[:6]}"
    k("create", "namespace", name)
    k("label", "namespace", name, "owner=someone-else")
    yield name
    k("delete", "namespace", name, "--wait=false", check=False)


def test_an_existing_namespace_is_never_taken_over(
    k: Kubectl, envs: Any, foreign_namespace: str
) -> None:
    name = envs(
        {
            "namespace": foreign_namespace,
            "services": [{"name": "api", "image": AUTH, "secretKey": True}],
        }
    )
    k("wait", "--for=jsonpath={.status.phase}=Failed", f"testenv/{name}", "--timeout=60s")
    st = status(k, name)
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NamespaceConflict"
    assert "never adopted" in st["message"]
    ns = json.loads(k("get", "namespace", foreign_namespace, "-o", "json").stdout)["metadata"]
    assert "ownerReferences" not in ns
    assert ns["labels"] == {
        "kubernetes.io/metadata.name": foreign_namespace,
        "owner": "someone-else",
    }
    assert k("get", "all", "-n", foreign_namespace, "-o", "name").stdout.strip() == ""


def test_user_labels_reach_workloads_but_never_the_namespace(k: Kubectl, envs: Any) -> None:
    name = envs(
        {
            "labels": {"team": "qa", "pr": "42"},
            "services": [{"name": "api", "image": AUTH, "secretKey": True}],
        }
    )
    wait_ready(k, name)
    ns = status(k, name)["namespace"]
    ns_labels = json.loads(k("get", "namespace", ns, "-o", "json").stdout)["metadata"]["labels"]
    assert "team" not in ns_labels and "pr" not in ns_labels
    assert ns_labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for kind in ("pod", "service"):
        (obj,) = json.loads(
            k("get", kind, "-n", ns, "-l", "testenv.dev/service=api", "-o", "json").stdout
        )["items"]
        labels = obj["metadata"]["labels"]
        assert (labels["team"], labels["pr"]) == ("qa", "42"), kind


@pytest.mark.parametrize(
    "spec",
    [
        {"services": [{"name": "miner", "image": "ghcr.io/evil/miner:1"}]},
        {"services": [{"name": "db", "preset": "postgres", "image": "postgres:16"}]},
        {"services": [], "jobs": [{"name": "migrate", "image": "quay.io/x/migrate:1"}]},
    ],
    ids=["service", "preset", "job"],
)
def test_an_image_outside_the_policy_is_refused_at_admission(
    k: Kubectl, spec: dict[str, Any]
) -> None:
    name = f"img-{uuid.uuid4().hex[:6]}"
    proc = k("apply", "--dry-run=server", "-f", "-", input=manifest(name, spec), check=False)
    assert proc.returncode != 0, "an image outside the policy was accepted"
    assert "refused by the image policy testenv-images" in proc.stderr, proc.stderr
    assert "imagePolicy.allowed" in proc.stderr


def test_the_creator_annotation_cannot_be_forged_or_changed(k: Kubectl, envs: Any) -> None:
    """What the plugin's reuse trusts: the creator annotation names whoever created the
    environment (the admission policy checks it against the request's user)."""
    me = k("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout.strip()
    forged = yaml.safe_load(manifest(f"forged-{uuid.uuid4().hex[:6]}", {"services": []}))
    forged["metadata"]["annotations"] = {"testenv.dev/creator": "someone-else"}
    proc = k("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(forged), check=False)
    assert proc.returncode != 0, "a forged creator was accepted"
    assert "names the user who created the environment" in proc.stderr, proc.stderr
    assert f"only be your own name ({me})" in proc.stderr

    name = envs({"services": []})  # no creator: none can be added later
    added = k("annotate", f"testenv/{name}", f"testenv.dev/creator={me}", check=False)
    assert added.returncode != 0 and "never changes" in added.stderr, added.stderr

    mine = yaml.safe_load(manifest(f"mine-{uuid.uuid4().hex[:6]}", {"services": []}))
    mine["metadata"]["annotations"] = {"testenv.dev/creator": me}
    k("apply", "-f", "-", input=yaml.safe_dump(mine))
    try:
        changed = k(
            "annotate",
            "--overwrite",
            f"testenv/{mine['metadata']['name']}",
            "testenv.dev/creator=someone-else",
            check=False,
        )
        assert changed.returncode != 0 and "never changes" in changed.stderr, changed.stderr
    finally:
        k("delete", "testenv", mine["metadata"]["name"], "--wait=false", check=False)


def test_the_operator_creates_only_the_environments_of_a_pool(k: Kubectl) -> None:
    """It may create TestEnvironments (for warm pools) but only labelled with and owned by a
    TestEnvironmentPool: not an environment of its own choosing."""
    name = f"fence-{uuid.uuid4().hex[:6]}"
    plain = yaml.safe_load(manifest(name))
    pooled = {
        **plain,
        "metadata": {
            "name": name,
            "labels": {"testenv.dev/pool": "warm"},
            "ownerReferences": [
                {
                    "apiVersion": "testenv.dev/v1alpha1",
                    "kind": "TestEnvironmentPool",
                    "name": "warm",
                    "uid": str(uuid.uuid4()),
                }
            ],
        },
    }
    refused, allowed = (
        k(
            "create",
            "--dry-run=server",
            "--as",
            OPERATOR,
            "-f",
            "-",
            input=yaml.safe_dump(doc),
            check=False,
        )
        for doc in (plain, pooled)
    )
    assert refused.returncode != 0
    assert "only create the TestEnvironments of a TestEnvironmentPool" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr
