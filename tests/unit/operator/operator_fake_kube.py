"""An in-memory KubeClient for reconcile tests."""

from __future__ import annotations

import base64
import copy
import itertools
from typing import Any

from testenv_operator.kube import KINDS, Conflict

Obj = dict[str, Any]
_uids = itertools.count(1)


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], Obj] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.logs: dict[str, str] = {}

    @staticmethod
    def key(kind: str, name: str, namespace: str | None) -> tuple[str, str | None, str]:
        return (kind, namespace if KINDS[kind].namespaced else None, name)

    def put(self, obj: Obj) -> Obj:
        if obj.get("kind") == "Secret" and "stringData" in obj:
            # As the API server does: stringData is written into data (base64), then dropped.
            data = dict(obj.get("data") or {})
            data.update(
                {k: base64.b64encode(v.encode()).decode() for k, v in obj["stringData"].items()}
            )
            obj = {**{k: v for k, v in obj.items() if k != "stringData"}, "data": data}
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(_uids)}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        meta.setdefault("generation", 1)
        self.objects[self.key(obj["kind"], meta["name"], meta.get("namespace"))] = obj
        return obj

    def find(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        return self.objects.get(self.key(kind, name, namespace))

    async def apply(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        self.calls.append(("apply", obj["kind"], meta["name"]))
        old = self.find(obj["kind"], meta["name"], meta.get("namespace"))
        new = copy.deepcopy(obj)
        if old is not None:
            new["metadata"] = {**old["metadata"], **new["metadata"]}
            if "status" in old:
                new["status"] = old["status"]
        return copy.deepcopy(self.put(new))

    async def create(self, obj: Obj) -> Obj | None:
        meta = obj["metadata"]
        self.calls.append(("create", obj["kind"], meta["name"]))
        if self.find(obj["kind"], meta["name"], meta.get("namespace")) is not None:
            return None
        return copy.deepcopy(self.put(copy.deepcopy(obj)))

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        found = self.find(kind, name, namespace)
        return copy.deepcopy(found) if found is not None else None

    async def list(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        wanted = dict(p.split("=", 1) for p in label_selector.split(",")) if label_selector else {}
        out = []
        for (k, ns, _), obj in self.objects.items():
            if k != kind or (namespace and ns != namespace):
                continue
            labels = obj["metadata"].get("labels") or {}
            if all(labels.get(a) == b for a, b in wanted.items()):
                out.append(copy.deepcopy(obj))
        return out

    async def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        preconditions: Obj | None = None,
    ) -> bool:
        self.calls.append(("delete", kind, name))
        found = self.find(kind, name, namespace)
        if found is not None and preconditions:
            meta = found["metadata"]
            if any(meta.get(k) != v for k, v in preconditions.items()):
                raise Conflict(409, f"Precondition failed: {preconditions}")
        return self.objects.pop(self.key(kind, name, namespace), None) is not None

    async def patch_status(
        self, name: str, patch: Obj, *, kind: str = "TestEnvironment"
    ) -> Obj | None:
        obj = self.find(kind, name)
        if obj is None:
            return None
        status = {k: v for k, v in patch["status"].items() if v is not None}
        if isinstance(status.get("timings"), dict):
            status["timings"] = {k: v for k, v in status["timings"].items() if v is not None}
        obj["status"] = status
        return copy.deepcopy(obj)

    async def pod_logs(
        self, namespace: str, pod: str, container: str, *, previous: bool, tail: int
    ) -> str:
        return self.logs.get(pod, "")


#: Three HTTP services that wait for nothing (the reference stack without its database, cache
#: and jobs): what the reconcile tests of single services work on.
TRIO: list[Obj] = [
    {"name": "auth", "image": "testenv/auth:0.1.0", "port": 8080},
    {"name": "backend", "image": "testenv/backend:0.1.0", "port": 8081, "websocketPath": "/ws"},
    {"name": "frontend", "image": "testenv/frontend:0.1.0", "port": 8082},
]


def demo_environment(spec: Obj | None = None) -> Obj:
    """The TestEnvironment ``demo`` the reconcile tests work on."""
    return {
        "apiVersion": "testenv.dev/v1alpha1",
        "kind": "TestEnvironment",
        "metadata": {
            "name": "demo",
            "uid": "env-uid",
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": spec if spec is not None else {"ttl": "1h", "services": copy.deepcopy(TRIO)},
    }


def service_pods(kube: FakeKube, service: str, namespace: str = "testenv-demo") -> list[Obj]:
    """The pods the operator created for ``service`` (as stored: edit them in place)."""
    return [
        obj
        for (kind, ns, _), obj in sorted(kube.objects.items())
        if kind == "Pod"
        and ns == namespace
        and (obj["metadata"].get("labels") or {}).get("testenv.dev/service") == service
    ]


def services_with_pods(kube: FakeKube, namespace: str = "testenv-demo") -> list[str]:
    return sorted(
        {
            obj["metadata"]["labels"]["testenv.dev/service"]
            for (kind, ns, _), obj in kube.objects.items()
            if kind == "Pod"
            and ns == namespace
            and "testenv.dev/service" in (obj["metadata"].get("labels") or {})
        }
    )


def make_service_ready(
    kube: FakeKube, service: str, namespace: str = "testenv-demo", at: str = "2026-01-01T00:00:10Z"
) -> None:
    """What the kubelet reports once every pod of ``service`` runs and passes its probe."""
    pods = service_pods(kube, service, namespace)
    assert pods, f"service {service} has no pods"
    for pod in pods:
        pod["status"] = {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
                {"type": "Ready", "status": "True", "lastTransitionTime": at},
            ],
            "containerStatuses": [
                {
                    "name": service,
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": at}},
                }
            ],
        }
