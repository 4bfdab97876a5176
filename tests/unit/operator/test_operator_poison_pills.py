"""Every spec admission can accept is one the operator handles: bounded durations, label keys
checked in full, no control characters, a capped size; a spec the API server refuses ends as
Failed with its reason (not retried forever), and every environment still ends at its ttl."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from operator_fake_kube import FakeKube, demo_environment
from pydantic import ValidationError
from test_operator_reconcile import T0, Clock, make_ready

from testenv.api import (
    DURATION,
    MAX_SPEC_TEXT,
    EnvVar,
    ServiceSpec,
    TestEnvironmentSpec,
    parse_duration,
)
from testenv_operator import expiry, render
from testenv_operator.crd import spec_schema
from testenv_operator.kube import KubeError
from testenv_operator.reconcile import InvalidSpec, Reconciler
from testenv_operator.settings import Settings

Obj = dict[str, Any]


@pytest.mark.parametrize("value", ["100000d", "1s1s1s1s1s", "9" * 30 + "d", "1w", "", "0s"])
def test_durations_that_could_overflow_or_mean_nothing_are_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        TestEnvironmentSpec(ttl=value)


def test_the_longest_duration_still_fits_in_a_date() -> None:
    longest = "99999d99999d99999d99999d"
    assert re.fullmatch(DURATION, longest)
    spec = TestEnvironmentSpec(ttl=longest, lease=longest)
    due = expiry.deadline(T0, spec, T0)
    assert due.at - T0 == parse_duration(longest)


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("a" * 63, True),
        ("a" * 64, False),  # the name part is at most 63 characters
        ("team_1.x-y", True),
        ("-bad", False),
        # Prefixed keys belong to other systems (mesh injection, Pod Security, ours).
        ("team.example.com/owner", False),
        ("sidecar.istio.io/inject", False),
        ("pod-security.kubernetes.io/enforce", False),
        ("testenv.dev/environment", False),
        ("a" * 254 + "/x", False),
    ],
)
def test_label_keys_are_checked_in_full(key: str, ok: bool) -> None:
    if ok:
        TestEnvironmentSpec(labels={key: "v"})
    else:
        with pytest.raises(ValidationError, match="label keys"):
            TestEnvironmentSpec(labels={key: "v"})


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f"])
def test_control_characters_in_env_values_are_refused(char: str) -> None:
    with pytest.raises(ValidationError):
        EnvVar(name="X", value=f"a{char}b")


def test_tabs_and_newlines_in_env_values_render() -> None:
    svc = ServiceSpec(name="api", image="x", env=[EnvVar(name="X", value="a\tb\nc\r")])
    (pod,) = render.render_pods("demo", "uid", TestEnvironmentSpec(services=[svc]), svc)
    env = pod["spec"]["containers"][0]["env"]
    assert {"name": "X", "value": "a\tb\nc\r"} in env


def test_the_text_of_a_spec_is_capped() -> None:
    def spec(size: int) -> TestEnvironmentSpec:
        return TestEnvironmentSpec(
            services=[
                ServiceSpec(name=f"s{i}", image="x", port=8000 + i, args=["a" * (size // 16)] * 2)
                for i in range(8)
            ]
        )

    spec(MAX_SPEC_TEXT)
    with pytest.raises(ValidationError, match=f"at most {MAX_SPEC_TEXT}"):
        spec(MAX_SPEC_TEXT + 16)


# -- the operator ----------------------------------------------------------------------------
class RefusingKube(FakeKube):
    """The API server finds the services' pods invalid (as a bad field would make them)."""

    async def create(self, obj: Obj) -> Obj | None:
        if obj["kind"] == "Pod":
            raise KubeError(422, 'Pod "auth-0" is invalid: spec.containers[0].image: bad')
        return await super().create(obj)


async def test_a_refused_spec_fails_once_with_the_reason_and_is_not_retried() -> None:
    kube = RefusingKube()
    kube.put(demo_environment())
    events: list[str] = []
    rec = Reconciler(kube, Settings(), lambda b, t, r, m: events.append(r), clock=Clock())
    for _ in range(3):
        with pytest.raises(InvalidSpec, match="refused"):
            await rec.reconcile(copy.deepcopy(kube.find("TestEnvironment", "demo") or {}))
    status = (kube.find("TestEnvironment", "demo") or {})["status"]
    assert status["phase"] == "Failed"
    assert "is invalid: spec.containers[0].image: bad" in status["message"]
    assert events.count("Refused") == 1
    assert [c for c in kube.calls if c[1] == "Namespace"] == [
        ("create", "Namespace", "testenv-demo")
    ]


class RefusingDiscoveryKube(FakeKube):
    """The API server refuses the discovery ConfigMap (a quota, a policy, its size)."""

    async def apply(self, obj: Obj) -> Obj:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "testenv-discovery":
            raise KubeError(403, 'configmaps "testenv-discovery" is forbidden: ' + "x" * 5000)
        return await super().apply(obj)


class RefusingStatusKube(FakeKube):
    """The API server refuses every status but a bare Failed one (a status it cannot store)."""

    async def patch_status(
        self, name: str, patch: Obj, *, kind: str = "TestEnvironment"
    ) -> Obj | None:
        if patch["status"].get("phase") != "Failed" or patch["status"].get("services"):
            raise KubeError(422, 'TestEnvironment "demo" is invalid: status.services: bad')
        return await super().patch_status(name, patch, kind=kind)


@pytest.mark.parametrize("kube_type", [RefusingDiscoveryKube, RefusingStatusKube])
async def test_a_refused_publication_fails_once_with_a_bounded_reason(
    kube_type: type[FakeKube],
) -> None:
    kube = kube_type()
    kube.put(demo_environment())
    events: list[str] = []
    rec = Reconciler(kube, Settings(), lambda b, t, r, m: events.append(r), clock=Clock())
    with contextlib.suppress(InvalidSpec):
        await rec.reconcile(copy.deepcopy(kube.find("TestEnvironment", "demo") or {}))
    make_ready(kube)
    for _ in range(3):
        with pytest.raises(InvalidSpec, match="refused what the environment publishes"):
            await rec.reconcile(copy.deepcopy(kube.find("TestEnvironment", "demo") or {}))
    status = (kube.find("TestEnvironment", "demo") or {})["status"]
    assert status["phase"] == "Failed"
    assert "the API server refused what the environment publishes" in status["message"]
    assert len(status["message"]) < 1100
    assert events.count("Refused") == 1
    assert kube.find("ConfigMap", "testenv-discovery", "testenv-demo") is None


async def test_an_unusable_spec_still_ends_at_its_ttl() -> None:
    kube = FakeKube()
    kube.put(demo_environment({"ttl": "10m", "services": [{"name": "Bad Name"}]}))
    clock = Clock()
    rec = Reconciler(kube, Settings(), lambda *a: None, clock=clock)
    body = kube.find("TestEnvironment", "demo") or {}
    env = rec.environment_for_expiry(body)
    assert env.spec.ttl == "10m"
    clock.now = T0 + timedelta(minutes=11)
    assert await rec.expire_if_due(env) is not None
    assert kube.find("TestEnvironment", "demo") is None


# -- property: whatever the schema admits, the models refuse or the operator handles ----------
def from_schema(schema: Obj) -> st.SearchStrategy[Any]:
    """Values of the CRD's structural schema (the subset it uses; CEL rules not applied:
    whatever they would refuse, the models must refuse or the operator handle)."""
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        required = set(schema.get("required", ()))
        props = {k: from_schema(v) for k, v in schema["properties"].items()}
        return st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required},
        )
    if kind == "object":  # a map (labels)
        values = from_schema(schema.get("additionalProperties") or {"type": "string"})
        keys = st.from_regex(r"\A[a-z0-9./_-]{1,80}\Z")
        return st.dictionaries(keys, values, max_size=min(schema.get("maxProperties", 4), 4))
    if kind == "array":
        return st.lists(from_schema(schema["items"]), max_size=min(schema.get("maxItems", 3), 3))
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if kind == "boolean":
        return st.booleans()
    pattern = schema.get("pattern")
    text = st.from_regex(pattern, fullmatch=True) if pattern else st.text(max_size=40)
    return text.filter(lambda t: len(t) <= schema.get("maxLength", 10**6))


PROPERTY_EXAMPLES = 60  # generated specs per run (make reliability reports them)


@settings(
    max_examples=PROPERTY_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: no flaky property test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(from_schema(spec_schema()))
def test_any_spec_the_schema_admits_is_refused_by_the_models_or_reconciles(raw: Obj) -> None:
    try:
        TestEnvironmentSpec.model_validate(raw)
    except ValidationError:
        return  # refused with a message: the operator reports it as Failed
    kube = FakeKube()
    kube.put(demo_environment(raw))
    rec = Reconciler(kube, Settings(), lambda *a: None, clock=Clock())
    result = asyncio.run(rec.reconcile(copy.deepcopy(kube.find("TestEnvironment", "demo") or {})))
    assert result is not None
    assert result.status.phase in ("Provisioning", "Ready", "Failed")
