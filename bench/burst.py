"""Where N environments requested at once spend their time beyond the floor.

The concurrency suite (bench/run.py) times the whole product: N TestEnvironments at once to
all Ready, against N bare pods at once in one namespace (the floor). This takes the product
apart, creating objects the way the operator does (the namespace, the Secret, then the rest at
once; every environment at once; the operator's request concurrency) but without its
reconcile, status or events. The pods are Ready as the floor's are: each step is one cause.

- ``floor``: N bare pods in one namespace (the concurrency suite's baseline);
- ``namespaces``: N namespaces with one bare pod each (what isolation by namespace costs);
- ``objects_pods``: each environment's objects as the operator renders them (quota, limits,
  network policies, Service, Secret), the service as a bare pod (as the operator makes it
  since docs/decisions/0002-services-as-bare-pods.md);
- ``objects_deployments``: the same with the service as a Deployment, as the operator did
  before: what the Deployment -> ReplicaSet -> pod chain adds under load.

Every variant runs in every round, interleaved, and is reported against the floor of the same
run. The objects carry a label of their own instead of the operator's, so the running operator
leaves them alone (its watches select its label).

    python bench/burst.py [--environments 20] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import kr8s.asyncio
from _common import emit
from run import floor_pods, stats, web_spec

from testenv.api import TestEnvironmentSpec
from testenv_operator import render
from testenv_operator.handlers import MANAGED_SELECTOR
from testenv_operator.kube import KINDS, Kind, Kube

Obj = dict[str, Any]
LABEL = "testenv.dev/bench-burst"
MANAGED_LABEL = MANAGED_SELECTOR.split("=", 1)[0]
VARIANTS = ("floor", "namespaces", "objects_pods", "objects_deployments")
TIMEOUT = 300.0
#: The operator no longer writes Deployments (docs/decisions/0002); its client learns the kind
#: here, for the ``objects_deployments`` variant.
KINDS.setdefault("Deployment", Kind("apps/v1", "deployments", True))


def relabel(obj: Obj, tag: str) -> Obj:
    """``obj`` without an owner and without the operator's label (so the operator ignores
    it), with this round's label (on a Deployment's pods too). A pod stops as the
    operator's do (``python3`` as PID 1 ignores SIGTERM: the default 30 s grace period would
    hold up the next round, not this one)."""
    obj = copy.deepcopy(obj)
    if obj["kind"] == "Pod":
        obj["spec"].setdefault("terminationGracePeriodSeconds", 5)
    meta = obj["metadata"]
    meta.pop("ownerReferences", None)
    for labels in (meta.setdefault("labels", {}), _template_labels(obj)):
        labels.pop(MANAGED_LABEL, None)
        labels[LABEL] = tag
    return obj


def _template_labels(obj: Obj) -> dict[str, str]:
    if obj["kind"] != "Deployment":
        return {}
    labels: dict[str, str] = obj["spec"]["template"]["metadata"].setdefault("labels", {})
    return labels


def as_deployment(pod: Obj) -> Obj:
    """A Deployment of one replica making ``pod`` (named after its service)."""
    labels = dict(pod["metadata"]["labels"])
    selector = {k: v for k, v in labels.items() if k.startswith("testenv.dev/")}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": labels["testenv.dev/service"],
            "namespace": pod["metadata"]["namespace"],
            "labels": labels,
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels}, "spec": pod["spec"]},
        },
    }


def namespace(name: str, tag: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {LABEL: tag}},
    }


def environment(tag: str, spec: TestEnvironmentSpec, bare_pods: bool) -> tuple[Obj, Obj, list[Obj]]:
    """One environment's namespace, Secret and other objects, rendered by the operator."""
    name = f"burst-{uuid.uuid4().hex[:6]}"
    ns, *rest = (relabel(o, tag) for o in render.render_environment(name, "bench", spec))
    secret = relabel(render.render_secret(name, "bench", spec, secrets.token_urlsafe(32)), tag)
    if not bare_pods:
        rest = [as_deployment(o) if o["kind"] == "Pod" else o for o in rest]
    return ns, secret, rest


async def all_ready(api: Any, tag: str, count: int) -> float:
    """When ``count`` pods of this round are Ready (monotonic time), from a watch."""
    ready: set[tuple[str, str]] = set()
    async for _, pod in api.watch("pods", namespace=kr8s.ALL, label_selector=f"{LABEL}={tag}"):
        conditions = pod.status.get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            ready.add((pod.namespace, pod.name))
            if len(ready) >= count:
                return time.monotonic()
    raise RuntimeError("the pod watch ended")


async def timed_round(
    kube: Kube, api: Any, variant: str, n: int, spec: TestEnvironmentSpec
) -> float:
    """Seconds from the first request to all of the round's pods Ready; the round's
    namespaces are gone again when this returns (the next round starts on a quiet cluster)."""
    tag = uuid.uuid4().hex[:8]
    create: Callable[[], Awaitable[Any]]
    if variant == "floor":
        name = f"burst-floor-{tag}"
        pods = [relabel(p, tag) for p in floor_pods(name, n)]
        namespaces = [name]

        async def create() -> None:
            await kube.create(namespace(name, tag))
            await asyncio.gather(*(kube.create(p) for p in pods))

    elif variant == "namespaces":
        names = [f"burst-{uuid.uuid4().hex[:6]}" for _ in range(n)]
        pods = [relabel(floor_pods(name, 1)[0], tag) for name in names]
        namespaces = names

        async def one(name: str, pod: Obj) -> None:
            await kube.create(namespace(name, tag))
            await kube.create(pod)

        async def create() -> None:
            await asyncio.gather(*(one(name, pod) for name, pod in zip(names, pods, strict=True)))

    else:
        envs = [environment(tag, spec, variant == "objects_pods") for _ in range(n)]
        namespaces = [ns["metadata"]["name"] for ns, _, _ in envs]

        async def one_environment(ns: Obj, secret: Obj, rest: list[Obj]) -> None:
            await kube.create(ns)
            await kube.create(secret)
            await asyncio.gather(*(kube.apply(o) for o in rest))

        async def create() -> None:
            await asyncio.gather(*(one_environment(*e) for e in envs))

    watch = asyncio.create_task(all_ready(api, tag, n))
    await asyncio.sleep(0.5)  # the watch is established before the first request
    start = time.monotonic()
    try:
        await create()
        return await asyncio.wait_for(watch, TIMEOUT) - start
    finally:
        watch.cancel()
        await asyncio.gather(*(kube.delete("Namespace", name) for name in namespaces))
        await gone(kube, tag)


async def gone(kube: Kube, tag: str) -> None:
    """Until no namespace of this round is left."""
    deadline = time.monotonic() + TIMEOUT
    while await kube.list("Namespace", None, f"{LABEL}={tag}"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"namespaces labelled {LABEL}={tag} still there")
        await asyncio.sleep(0.5)


def figure(name: str, values: list[float], floor: list[float]) -> dict[str, Any]:
    """``values``' spread as run.py reports it, and its p50 against the floor's."""
    return {
        "name": name,
        **stats(values),
        "ratio_to_floor": round(statistics.median(values) / statistics.median(floor), 2),
    }


async def measure(n: int, rounds: int) -> dict[str, Any]:
    api = await kr8s.asyncio.api()
    kube = Kube(api)
    spec = TestEnvironmentSpec.model_validate(web_spec("burst", services=1))
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for i in range(rounds):
        for variant in VARIANTS:  # interleaved: noise hits every variant alike
            samples[variant].append(await timed_round(kube, api, variant, n, spec))
            print(f"round {i + 1}/{rounds} {variant}: {samples[variant][-1]:.2f}s", flush=True)
    return {
        "environments": n,
        "rounds": rounds,
        "figures": [figure(v, samples[v], samples["floor"]) for v in VARIANTS],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--environments", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    emit(asyncio.run(measure(args.environments, args.rounds)), args.json)


if __name__ == "__main__":
    sys.exit(main())
