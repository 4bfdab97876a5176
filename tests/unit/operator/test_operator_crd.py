"""The CRD generated from the models: structural, complete, and committed up to date."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from testenv.api import REFERENCE_IMAGE_TAG
from testenv_operator import crd

ROOT = Path(__file__).resolve().parents[3]
CHART_CRD = ROOT / "charts/testenv-operator/templates/crd.yaml"


def _walk(node: Any, path: str = "") -> list[tuple[str, str, Any]]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((path, key, value))
            out += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _walk(value, f"{path}[{i}]")
    return out


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result: dict[str, Any] = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "const"}
    bad = [(p, k) for p, k, _ in _walk(schema) if k in forbidden]
    assert not bad
    # every node with properties/items has a type
    for path, key, value in _walk(schema):
        if key in ("properties",):
            for name, sub in value.items():
                assert "type" in sub, f"{path}.{name} has no type"
    assert "additionalProperties" not in json.dumps(schema).replace('"additionalProperties": {', "")


def test_names_and_scope() -> None:
    doc = crd.crd()
    assert doc["metadata"]["name"] == "testenvironments.testenv.dev"
    assert doc["spec"]["scope"] == "Cluster"
    assert set(doc["spec"]["names"]["shortNames"]) == {"testenv", "tenv"}
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Ready"] == ".status.readyServices"
    assert columns["Namespace"] == ".status.namespace"
    assert columns["Age"] == ".metadata.creationTimestamp"
    assert columns["Expires"] == ".status.expiresAt"


def test_spec_defaults_and_rules(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    assert spec["default"] == {}
    assert "required" not in spec
    services = spec["properties"]["services"]
    assert services["x-kubernetes-list-type"] == "map"
    assert services["x-kubernetes-list-map-keys"] == ["name"]
    assert any("b.port == a.port" in r["rule"] for r in services["x-kubernetes-validations"])
    item = services["items"]
    # an image or a preset: one of them is required by a rule, not by the schema
    assert item["required"] == ["name"]
    assert any("has(self.preset)" in r["rule"] for r in item["x-kubernetes-validations"])
    # no default port: ``port`` and ``ports`` exclude each other
    assert item["properties"]["port"] == {"type": "integer", "minimum": 1, "maximum": 65535}
    assert spec["properties"]["jobs"]["items"]["required"] == ["name", "image"]
    assert item["properties"]["replicas"]["minimum"] == 0
    assert item["properties"]["image"]["minLength"] == 1
    env = item["properties"]["env"]
    assert env["x-kubernetes-list-type"] == "map"
    assert (
        "reserved" in env["items"]["properties"]["name"]["x-kubernetes-validations"][0]["message"]
    )
    # optional fields are simply not required, never null
    assert "nullable" not in json.dumps(schema)
    assert "websocketPath" not in item["required"]
    # ttl: no admission default (the operator applies its configured default)
    assert "default" not in spec["properties"]["ttl"]
    assert spec["properties"]["ttl"]["pattern"]
    for _, _, rules in [t for t in _walk(schema) if t[1] == "x-kubernetes-validations"]:
        for rule in rules:
            assert (rule.get("message") or rule.get("messageExpression")) and rule["rule"]


def test_metadata_name_rule(schema: dict[str, Any]) -> None:
    rules = schema["x-kubernetes-validations"]
    assert "self.metadata.name" in rules[0]["rule"]


def test_cli_prints_yaml() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "testenv_operator.crd"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
    ).stdout
    assert yaml.safe_load(out) == crd.crd()


def test_committed_chart_crd_is_current() -> None:
    assert CHART_CRD.read_text() == crd.crd_yaml(), (
        "charts/testenv-operator/templates/crd.yaml is stale: run python hack/gen-manifests.py"
    )


def _gen_manifests() -> Any:
    spec = importlib.util.spec_from_file_location("gen_manifests", ROOT / "hack/gen-manifests.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_manifests_are_current() -> None:
    gen = _gen_manifests()
    helm = gen.find_helm()
    if helm is None or (not shutil.which(helm) and not Path(helm).exists()):
        pytest.skip("helm is not installed")
    fresh = gen.generated(helm)
    for path, text in fresh.items():
        assert path.read_text() == text, f"{path} is stale: run python hack/gen-manifests.py"
    docs = [d for d in yaml.safe_load_all(fresh[gen.MANIFEST_FILE]) if d]
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    } <= kinds
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"testenv/operator:{REFERENCE_IMAGE_TAG}"
    assert container["command"] == ["python3", "-m", "testenv_operator"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_chart_passes_helm_lint() -> None:
    gen = _gen_manifests()
    helm = gen.find_helm()
    if helm is None or (not shutil.which(helm) and not Path(helm).exists()):
        pytest.skip("helm is not installed")
    linted = subprocess.run(
        [helm, "lint", "--strict", str(gen.CHART)], capture_output=True, text=True, check=False
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_chart_version_is_the_project_version() -> None:
    """pyproject.toml is the single source of the version; the chart must carry it."""
    chart = yaml.safe_load((ROOT / "charts/testenv-operator/Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts/testenv-operator/values.yaml").read_text())
    assert str(chart["version"]) == str(chart["appVersion"]) == REFERENCE_IMAGE_TAG
    assert str(values["image"]["tag"]) == REFERENCE_IMAGE_TAG


def test_field_reference_is_current() -> None:
    """docs/reference.md is generated from the models (python hack/gen-reference.py)."""
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, str(root / "hack/gen-reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_kubectl_names_resolve_to_one_resource() -> None:
    """`kubectl get testenv` must mean TestEnvironments: a category named like a short name
    would make kubectl expand it to every resource of the category."""
    crds = [crd.crd(), crd.pool_crd()]
    names = [d["spec"]["names"] for d in crds]
    spelled = [
        {n["plural"], n["singular"], n["kind"].lower(), *n.get("shortNames", [])} for n in names
    ]
    categories = {c for n in names for c in n.get("categories", [])}
    for one in spelled:
        assert not one & categories
    assert not spelled[0] & spelled[1]
