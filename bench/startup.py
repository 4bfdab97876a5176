"""Startup benchmark: how long a TestEnvironment takes to become Ready, against a baseline.

The baseline, measured in the same run on the same cluster, is the floor the operator cannot
beat: the same three Deployments and Services applied directly with kubectl and waited for with
`kubectl wait`. The ratio (environment / baseline) is what to watch; absolute seconds depend on
the machine and whatever else it is doing.

    python bench/startup.py [--rounds 3] [--json results.json]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from _common import emit, kubectl_path, parse_args, ratio_result  # noqa: E402

from testenv.api import TestEnvironmentSpec  # noqa: E402

KUBECTL = kubectl_path()


def _run(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [KUBECTL, *args], input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _baseline_manifest(namespace: str) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    ]
    for svc in TestEnvironmentSpec().services:
        labels = {"app": svc.name}
        env = [{"name": e.name, "value": e.value} for e in svc.env] + [
            {"name": "PORT", "value": str(svc.port)},
            {"name": "TESTENV_SECRET_KEY", "value": uuid.uuid4().hex},
            {"name": "TESTENV_AUTH_URL", "value": f"http://auth.{namespace}.svc:8080"},
            {"name": "TESTENV_BACKEND_URL", "value": f"http://backend.{namespace}.svc:8080"},
        ]
        items.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": svc.name, "namespace": namespace},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": svc.name,
                                    "image": svc.image,
                                    "imagePullPolicy": "IfNotPresent",
                                    "env": env,
                                    "ports": [{"containerPort": svc.port}],
                                    "readinessProbe": {
                                        "httpGet": {"path": svc.health_path, "port": svc.port},
                                        "periodSeconds": 1,
                                    },
                                }
                            ]
                        },
                    },
                },
            }
        )
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": svc.name, "namespace": namespace},
                "spec": {"selector": labels, "ports": [{"port": svc.port}]},
            }
        )
    return {"apiVersion": "v1", "kind": "List", "items": items}


def baseline_round() -> float:
    namespace = f"bench-base-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    _run("apply", "-f", "-", stdin=json.dumps(_baseline_manifest(namespace)))
    _run(
        "-n",
        namespace,
        "wait",
        "--for=condition=Available",
        "deployment",
        "--all",
        "--timeout=300s",
    )
    took = time.monotonic() - started
    _run("delete", "namespace", namespace, "--wait=false")
    return took


def environment_round() -> tuple[float, dict[str, Any]]:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    manifest = {
        "apiVersion": "testenv.dev/v1alpha1",
        "kind": "TestEnvironment",
        "metadata": {"name": name},
        "spec": {"ttl": "15m"},
    }
    started = time.monotonic()
    _run("apply", "-f", "-", stdin=json.dumps(manifest))
    _run("wait", "--for=condition=Ready", f"testenv/{name}", "--timeout=300s")
    took = time.monotonic() - started
    status = json.loads(_run("get", "testenv", name, "-o", "json")).get("status", {})
    _run("delete", "testenv", name, "--wait=false")
    return took, status.get("timings", {})


def main() -> int:
    args = parse_args(__doc__)
    base: list[float] = []
    envs: list[float] = []
    phases: list[dict[str, Any]] = []
    for i in range(args.rounds):  # interleaved, so machine noise hits both alike
        base.append(baseline_round())
        took, timings = environment_round()
        envs.append(took)
        phases.append(timings)
        print(f"round {i + 1}: baseline {base[-1]:.2f}s  environment {envs[-1]:.2f}s", flush=True)
    result = ratio_result(args.rounds, "environment", envs, "baseline", base)
    emit({**result, "environment_phases": phases}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
