"""Generate the TestEnvironment CustomResourceDefinition from the pydantic models in api.py.

``model_json_schema(by_alias=True)`` is turned into a *structural* OpenAPI v3 schema, as the
API server requires: ``$ref`` inlined, ``anyOf: [X, null]`` collapsed to ``X`` (an optional
field is simply not required), titles and ``additionalProperties: false`` dropped (unknown
fields are refused by strict field validation and pruned otherwise), defaults kept in spec
so ``spec: {}`` is a complete environment. CEL rules and list-type markers come from the
models' ``json_schema_extra``.

``python -m testenv_operator.crd`` prints the CRD as YAML.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from testenv.api import (
    CREATOR_ANNOTATION,
    DNS1123_LABEL,
    GROUP,
    KIND,
    MAX_ENVIRONMENT_NAME,
    MAX_POOL_SIZE,
    PLURAL,
    POOL_KIND,
    POOL_PLURAL,
    POOL_SHORT_NAMES,
    POOL_SINGULAR,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    TestEnvironmentPoolSpec,
    TestEnvironmentPoolStatus,
    TestEnvironmentSpec,
    TestEnvironmentStatus,
    _cel_string,
    policy_validations,
    policy_variables,
)

Schema = dict[str, Any]

# JSON-schema keywords that a structural CRD schema may keep.
_KEPT = {
    "type",
    "format",
    "description",
    "properties",
    "items",
    "required",
    "default",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "nullable",
    "additionalProperties",
}


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    """Inline every ``$ref`` (pydantic only emits local ``#/$defs/X`` references)."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = node["$ref"].rsplit("/", 1)[-1]
        merged = {**copy.deepcopy(defs[target]), **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _structural(node: Schema, *, keep_defaults: bool) -> Schema:
    """Rewrite one (resolved) JSON schema node into a structural OpenAPI v3 node."""
    node = dict(node)
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        variants = [v for v in any_of if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"cannot express anyOf {any_of!r} structurally")
        # Optional[X]: the field is X, just not required; a null default means "unset".
        node = {**variants[0], **node}
        if node.get("default", ...) is None:
            node.pop("default")
    out: Schema = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
        elif key not in _KEPT:
            continue
        elif key == "properties":
            out[key] = {
                name: _structural(sub, keep_defaults=keep_defaults) for name, sub in value.items()
            }
        elif key == "items":
            out[key] = _structural(value, keep_defaults=keep_defaults)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _structural(value, keep_defaults=keep_defaults)
            # ``false`` (extra="forbid") is implicit in a structural schema.
        elif key == "default":
            if keep_defaults:
                out[key] = value
        else:
            out[key] = value
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return _ordered(out)


_FIRST = ("type", "description", "default", "required", "properties", "items")


def _ordered(node: Schema) -> Schema:
    """Readable key order: type and description first, extensions last."""
    first = {k: node[k] for k in _FIRST if k in node}
    rest = {k: v for k, v in node.items() if k not in first and not k.startswith("x-")}
    ext = {k: v for k, v in node.items() if k.startswith("x-")}
    return {**first, **rest, **ext}


def model_schema(model: type[Any], *, keep_defaults: bool) -> Schema:
    """A structural OpenAPI v3 schema for a pydantic model."""
    raw = model.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs), keep_defaults=keep_defaults)


def spec_schema() -> Schema:
    schema = model_schema(TestEnvironmentSpec, keep_defaults=True)
    schema["description"] = (
        "What the environment runs. Every field has a default: `spec: {}` starts the "
        "reference stack."
    )
    schema["default"] = {}
    # No admission default for ttl: the operator applies its configured default ttl
    # (TESTENV_DEFAULT_TTL, chart value defaultTtl) to environments that do not set one.
    ttl = schema["properties"]["ttl"]
    ttl.pop("default", None)
    ttl["description"] = "How long the environment lives (default: the operator's defaultTtl)."
    schema["properties"]["ttl"] = _ordered(ttl)
    # No admission default for services either: without them the operator runs the reference
    # stack, services and jobs together (a default cannot depend on another field).
    services = schema["properties"]["services"]
    services.pop("default", None)
    services["description"] = (
        "The long-running services. Without them: the reference stack (auth on PostgreSQL, "
        "backend with Redis, frontend, and auth's migrate and seed jobs)."
    )
    schema["properties"]["services"] = _ordered(services)
    return schema


def status_schema() -> Schema:
    schema = model_schema(TestEnvironmentStatus, keep_defaults=False)
    schema["description"] = "Observed state, written by the operator."
    return schema


def openapi_schema() -> Schema:
    name_rule = (
        f"size(self.metadata.name) <= {MAX_ENVIRONMENT_NAME} && "
        f"self.metadata.name.matches({_cel_string(DNS1123_LABEL)})"
    )
    return {
        "type": "object",
        "description": "An ephemeral test environment: a namespace with a set of services.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "x-kubernetes-validations": [
            {
                "rule": name_rule,
                "message": "metadata.name must be a DNS-1123 label (lower-case letters, "
                f"digits and '-') of at most {MAX_ENVIRONMENT_NAME} characters: it names "
                "the namespace testenv-<name>",
            }
        ],
    }


Column = tuple[str, str, str]  # name, type, JSON path


def _crd_document(
    kind: str,
    plural: str,
    singular: str,
    short_names: tuple[str, ...],
    columns: list[Column],
    schema: Schema,
) -> dict[str, Any]:
    """A cluster-scoped CustomResourceDefinition of this group and version, with a status
    subresource; ``columns`` for ``kubectl get`` (then Age, and Message with ``-o wide``).
    No category: ``testenv`` is TestEnvironment's short name, and kubectl expands a
    category named like that to every kind in it."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "testenv-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        *({"name": n, "type": t, "jsonPath": j} for n, t, j in columns),
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        {
                            "name": "Message",
                            "type": "string",
                            "jsonPath": ".status.message",
                            "priority": 1,
                        },
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def crd() -> dict[str, Any]:
    """The TestEnvironment CustomResourceDefinition."""
    columns: list[Column] = [
        ("Phase", "string", ".status.phase"),
        ("Ready", "string", ".status.readyServices"),
        ("Namespace", "string", ".status.namespace"),
    ]
    doc = _crd_document(KIND, PLURAL, SINGULAR, SHORT_NAMES, columns, openapi_schema())
    # Expires after Age.
    printer = doc["spec"]["versions"][0]["additionalPrinterColumns"]
    printer.insert(-1, {"name": "Expires", "type": "string", "jsonPath": ".status.expiresAt"})
    return doc


def pool_crd() -> dict[str, Any]:
    """The TestEnvironmentPool CustomResourceDefinition: a warm pool of environments."""
    spec = model_schema(TestEnvironmentPoolSpec, keep_defaults=True)
    spec["description"] = (
        "A warm pool: the operator keeps `size` Ready environments of `template`; a client "
        "claims one and the pool refills in the background."
    )
    # A default must pass the rules on its own (defaults inside it are not applied first).
    spec["default"] = {"size": 1, "maxSize": 10, "template": {}}
    # The template is a TestEnvironment's spec, with the same schema and defaults rules.
    template = spec_schema()
    template["description"] = (
        "The spec of the pool's environments (a TestEnvironment's spec without lease and "
        "namespace)."
    )
    spec["properties"]["template"] = template
    status = model_schema(TestEnvironmentPoolStatus, keep_defaults=False)
    status["description"] = "Counts of the pool's environments, written by the operator."
    columns: list[Column] = [
        ("Size", "integer", ".spec.size"),
        ("Max", "integer", ".spec.maxSize"),
        ("Ready", "integer", ".status.ready"),
        ("Refilling", "integer", ".status.refilling"),
        ("Claimed", "integer", ".status.claimed"),
    ]
    schema = {
        "type": "object",
        "description": (
            f"A warm pool of up to {MAX_POOL_SIZE} Ready TestEnvironments "
            "of one spec, for claims in well under a second."
        ),
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return _crd_document(POOL_KIND, POOL_PLURAL, POOL_SINGULAR, POOL_SHORT_NAMES, columns, schema)


POLICY_NAME = f"{PLURAL}.{GROUP}"


def _creator_validation() -> dict[str, Any]:
    """The creator annotation names the user who created the environment, and never changes:
    set at creation to anything but the creating user's own name, or changed later, refused."""
    key = CREATOR_ANNOTATION

    def value(obj: str) -> str:
        return (
            f"(has({obj}.metadata.annotations) && '{key}' in {obj}.metadata.annotations ? "
            f"{obj}.metadata.annotations['{key}'] : '')"
        )

    return {
        "expression": (
            f"request.operation == 'CREATE' ? ({value('object')} == '' || "
            f"{value('object')} == request.userInfo.username) : "
            f"{value('object')} == {value('oldObject')}"
        ),
        "messageExpression": (
            f"'metadata.annotations[{key}] names the user who created the environment: at "
            "creation it may only be your own name (' + request.userInfo.username + '), and it "
            "never changes'"
        ),
        "reason": "Forbidden",
    }


def admission_policy() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy (and its binding) for what a CRD schema cannot check:
    references between services, jobs and secrets, and dependency cycles."""
    labels = {"app.kubernetes.io/name": "testenv-operator"}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME, "labels": labels},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [PLURAL],
                    }
                ]
            },
            "variables": [{"name": n, "expression": e} for n, e in policy_variables()],
            "validations": [
                *({**v, "reason": "Invalid"} for v in policy_validations()),
                _creator_validation(),
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME, "labels": labels},
        "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
    }
    return [policy, binding]


HEADER = "# Generated by `python -m testenv_operator.crd` from api.py; do not edit.\n"


def crd_yaml() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)


def pool_crd_yaml() -> str:
    return HEADER + yaml.safe_dump(pool_crd(), sort_keys=False, width=100)


def policy_yaml() -> str:
    docs = [yaml.safe_dump(doc, sort_keys=False, width=100) for doc in admission_policy()]
    return HEADER + "---\n".join(docs)


def main(argv: list[str] | None = None) -> int:
    """``python -m testenv_operator.crd [policy|pool]``: the CRD, the admission policy or the
    pool's CRD."""
    which = argv[0] if argv else "crd"
    sys.stdout.write({"policy": policy_yaml, "pool": pool_crd_yaml}.get(which, crd_yaml)())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
