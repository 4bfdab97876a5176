"""`make demo`: create the sample TestEnvironment, follow it to Ready, print how to reach it.

Runs against whatever KUBECONFIG points at. `--delete` removes the demo environment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import httpx
import kr8s.asyncio
import yaml
from kr8s.asyncio.objects import APIObject, ConfigMap, Namespace
from tools import ROOT, pinned_path

from testenv._kube import TestEnvironment
from testenv._portforward import PodPortForward, ReadyPods
from testenv.api import DISCOVERY_CONFIGMAP, DiscoveryRecord, pod_selector

SAMPLE = ROOT / "manifests/samples/minimal.yaml"


def _say(text: str) -> None:
    print(text, flush=True)


async def _follow(env: APIObject, budget_s: float) -> dict[str, Any]:
    """Watch the environment until Ready or Failed, printing each change of its status."""
    started = time.monotonic()
    last = ""
    async for _event, obj in kr8s.asyncio.watch(  # type: ignore[attr-defined]
        "testenvironments.testenv.dev", field_selector=f"metadata.name={env.name}", api=env.api
    ):
        status: dict[str, Any] = obj.raw.get("status") or {}
        services = ", ".join(
            f"{s['name']} {'ready' if s.get('ready') else (s.get('reason') or 'starting')}"
            for s in status.get("services", [])
        )
        line = f"{status.get('phase', 'Pending'):<12} {services}"
        if line != last:
            _say(f"  [{time.monotonic() - started:5.1f}s] {line}")
            last = line
        if status.get("phase") in ("Ready", "Failed"):
            return status
        if time.monotonic() - started > budget_s:
            raise TimeoutError(f"environment {env.name} not Ready after {budget_s:.0f}s: {line}")
    raise RuntimeError("the watch ended before the environment was Ready")


async def _probe(api: kr8s.asyncio.Api, namespace: str, record: DiscoveryRecord, env: str) -> str:
    """Health of a service through the library's port-forward, as a client outside the
    cluster sees it."""
    pods = ReadyPods(api, namespace, pod_selector(env, record.name))
    if not await pods.async_ready_pods():
        return "no ready pod"
    forward = PodPortForward(api, pods, record.port)
    port = await forward.start()
    try:
        if record.health_url is None:  # a TCP service (PostgreSQL, Redis): it accepts?
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            writer.close()
            await writer.wait_closed()
            return "TCP connection through a port-forward"
        path = record.health_url.split(str(record.port), 1)[1]
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    finally:
        await forward.stop()
    return f"HTTP {response.status_code} through a port-forward"


async def up(name: str, budget_s: float) -> int:
    api = await kr8s.asyncio.api()
    manifest = yaml.safe_load(SAMPLE.read_text())
    manifest["metadata"]["name"] = name
    env = TestEnvironment(manifest, api=api)
    if await env.exists():
        _say(f"==> TestEnvironment {name} exists; following it")
        await env.refresh()
    else:
        _say(f"==> creating TestEnvironment {name} from {SAMPLE.relative_to(ROOT)}")
        await env.create()
    status = await _follow(env, budget_s)
    if status.get("phase") != "Ready":
        _say(f"!! environment {name} failed: {status.get('message')}")
        return 1
    namespace = status["namespace"]
    cm = await ConfigMap.get(DISCOVERY_CONFIGMAP, namespace=namespace, api=api)
    records = [DiscoveryRecord.model_validate_json(v) for v in cm.raw["data"].values()]
    timings = status.get("timings", {})
    ready_after = timings.get("ready", "?")
    _say(f"\n==> {name} is Ready in namespace {namespace} ({ready_after}s after creation)")
    _say(f"    expires at {status.get('expiresAt')}; `kubectl get testenv {name}` shows it\n")
    for rec in sorted(records, key=lambda r: r.name):
        probe = await _probe(api, namespace, rec, name)
        _say(f"  {rec.name:<9} {rec.base_url or rec.url}  (health: {probe})")
        if rec.ws_url:
            _say(f"  {'':<9} {rec.ws_url}")
        _say(f"  {'':<9} reach it: kubectl -n {namespace} port-forward svc/{rec.name} {rec.port}")
    front = next((r for r in records if r.name == "frontend"), None)
    if front:
        _say(
            f"\n  in a browser: run the frontend's port-forward, open http://localhost:{front.port}/"
        )
    _say("  discovery: kubectl -n " + namespace + f" get configmap {DISCOVERY_CONFIGMAP} -o yaml")
    _say(f"  remove it: make demo-down   (or kubectl delete testenv {name})")
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        _say(f"\n  the kubectl commands above need: export KUBECONFIG={kubeconfig}")
        _say(f"  (this project's kubectl: {_pinned_kubectl_dir()}/kubectl)")
    return 0


def _pinned_kubectl_dir() -> str:
    return str(pinned_path("kubectl").parent)


async def down(name: str) -> int:
    api = await kr8s.asyncio.api()
    env = TestEnvironment({"metadata": {"name": name}}, api=api)
    if not await env.exists():
        _say(f"no TestEnvironment {name}")
        return 0
    await env.refresh()
    namespace = (env.raw.get("status") or {}).get("namespace")
    started = time.monotonic()
    await env.delete()
    _say(f"==> deleting {name}; waiting until it and namespace {namespace} are gone")
    await env.wait("delete", timeout=180)
    if namespace:
        await Namespace({"metadata": {"name": namespace}}, api=api).wait("delete", timeout=180)
    _say(f"    gone in {time.monotonic() - started:.1f}s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="demo")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--delete", action="store_true")
    args = parser.parse_args()
    return asyncio.run(down(args.name) if args.delete else up(args.name, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
