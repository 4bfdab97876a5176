"""Scale: hundreds of TestEnvironments on simulated nodes, with the operator under load.

A throwaway control plane (kwokctl, ``--runtime binary``, from the project's own Kubernetes
and etcd builds, client rate limits raised) with kwok's simulated nodes: pods are scheduled and
turn Ready without containers, so what is measured is the operator and the API server, not
this machine's ability to run 1500 Python processes. The operator runs as a local process
(in a virtualenv with what its image installs) under the chart's RBAC (its service account's
token), so that its memory is its process's and its API requests are counted exactly (an API
Priority and Fairness FlowSchema that matches only its account).

In one run: (1) probes, environments created one at a time with nothing else there: seconds
from creation to the operator's first status (its reaction) and to Ready, from a watch;
(2) a burst of N (500) at once: until all are Ready, the operator's peak memory and API
requests per environment, then its requests per idle environment per minute; (3) the same
probes with the N present: the ratio to (1) is what managing N environments costs a change.

    python bench/scale.py [--environments 500] [--probes 20] [--json FILE]

Needs kwok and kwokctl: ``make tools`` builds them (``bash hack/build-binaries.sh kwok``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from _common import ROOT, kubectl_path

sys.path.insert(0, str(ROOT / "hack"))
from tools import cache_dir, pinned_path

from testenv.api import REFERENCE_IMAGE_TAG

KUBECTL = kubectl_path()
CLUSTER = "testenv-scale"
OPERATOR_SA = ("testenv-system", "testenv-operator")
NODES = 5
SPEC = {
    "ttl": "2h",
    "services": [{"name": "web", "image": f"testenv/frontend:{REFERENCE_IMAGE_TAG}", "port": 8080}],
}


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        list(args),
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} ... failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


class Cluster:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return run(KUBECTL, "--kubeconfig", str(self.kubeconfig), *args, stdin=stdin)

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.kubectl(
            "apply",
            "--server-side",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
        )

    def operator_requests(self) -> float:
        """Requests the operator's account has made (APF's count for its FlowSchema)."""
        metrics = self.kubectl("get", "--raw", "/metrics")
        pattern = re.compile(
            r'^apiserver_flowcontrol_dispatched_requests_total\{[^}]*flow_schema="testenv-operator"'
            r"[^}]*\}\s+([0-9.e+]+)$"
        )
        return sum(float(m.group(1)) for line in metrics.splitlines() if (m := pattern.match(line)))


@contextmanager
def control_plane(workdir: Path) -> Iterator[Cluster]:
    kwokctl = pinned_path("kwokctl")
    if not kwokctl.exists():
        raise SystemExit("kwok is not built: run bash hack/build-binaries.sh kwok")
    binaries = {
        "--kube-apiserver-binary": pinned_path("kube-apiserver"),
        "--kube-controller-manager-binary": pinned_path("kube-controller-manager"),
        "--kube-scheduler-binary": pinned_path("kube-scheduler"),
        "--etcd-binary": pinned_path("etcd"),
        "--kwok-controller-binary": pinned_path("kwok"),
    }
    # kwokctl keeps its clusters under KWOK_WORKDIR: a fresh one per run.
    env = {"KWOK_WORKDIR": str(workdir / "kwok")}
    kubeconfig = workdir / "kubeconfig"
    try:
        run(
            str(kwokctl),
            "create",
            "cluster",
            "--name",
            CLUSTER,
            "--runtime",
            "binary",
            "--wait",
            "2m",
            # Its own kubeconfig: kwokctl would otherwise add itself to ~/.kube/config.
            "--kubeconfig",
            str(kubeconfig),
            # Room for a Service per environment (the default range is a /24 or so: the
            # API server answers 500 once it is full).
            "--extra-args",
            "kube-apiserver=service-cluster-ip-range=10.96.0.0/16",
            # The controller-manager's and the scheduler's client limits (20/s) would be what
            # a burst measures (not --disable-qps-limits: it turns off API Priority and
            # Fairness too, which counts the operator's requests; and one extra argument per
            # component: kwokctl v0.7.0 panics on a second).
            *(
                x
                for component in ("kube-controller-manager", "kube-scheduler")
                for x in ("--extra-args", f"{component}=kube-api-qps=1000")
            ),
            *(x for k, v in binaries.items() for x in (k, str(v))),
            env=env,
        )
        yield Cluster(kubeconfig)
    finally:
        subprocess.run(
            [str(kwokctl), "delete", "cluster", "--name", CLUSTER, "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            check=False,
            env={**os.environ, **env},
        )
        stop_processes_under(workdir)


def stop_processes_under(workdir: Path) -> None:
    """Kill what is left of the control plane (its binaries run from under ``workdir``):
    a run stopped half-way must not leave an API server behind."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if exe.startswith(str(workdir)):
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


def fake_nodes(count: int) -> list[dict[str, Any]]:
    capacity = {"cpu": "1000", "memory": "4Ti", "pods": "1000"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"kwok-node-{i}",
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": f"kwok-node-{i}", "type": "kwok"},
            },
            "status": {"allocatable": capacity, "capacity": capacity},
        }
        for i in range(count)
    ]


def operator_objects() -> list[dict[str, Any]]:
    """The install (manifests/testenv-operator.yaml) without its Deployment: CRDs, RBAC, the
    admission policies; plus a FlowSchema that counts the operator's requests."""
    docs = [
        d for d in yaml.safe_load_all((ROOT / "manifests/testenv-operator.yaml").read_text()) if d
    ]
    kept = [d for d in docs if d["kind"] != "Deployment"]
    ns, sa = OPERATOR_SA
    kept.append(
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": "testenv-operator"},
            "spec": {
                "priorityLevelConfiguration": {"name": "workload-high"},
                "matchingPrecedence": 100,
                "rules": [
                    {
                        "subjects": [
                            {
                                "kind": "ServiceAccount",
                                "serviceAccount": {"namespace": ns, "name": sa},
                            }
                        ],
                        "resourceRules": [
                            {
                                "verbs": ["*"],
                                "apiGroups": ["*"],
                                "resources": ["*"],
                                "clusterScope": True,
                                "namespaces": ["*"],
                            }
                        ],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }
                ],
            },
        }
    )
    return kept


def operator_kubeconfig(cluster: Cluster, where: Path) -> Path:
    ns, sa = OPERATOR_SA
    token = cluster.kubectl("create", "token", sa, "-n", ns, "--duration", "4h").strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "operator"
    path = where / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def operator_python() -> Path:
    """A virtualenv with the operator image's dependencies (the locked versions of the
    ``operator`` extra, no dev tools): the development venv also holds the official
    ``kubernetes`` client, which kopf then imports and keeps (about 10 MB more). Cached by
    the lock, shared by every checkout: the project itself is not installed in it (the
    operator's code comes from this checkout's sources, see :func:`operator`); an editable
    install would pin the first checkout's path, and a later clone would run that one's code."""
    lock = (ROOT / "uv.lock").read_bytes()
    venv = cache_dir() / "bench" / f"operator-deps-{hashlib.sha256(lock).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    uv = str(ROOT / ".venv" / "bin" / "uv")
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        run(
            uv,
            "export",
            "--project",
            str(ROOT),
            "--frozen",
            "--no-hashes",
            "--no-emit-project",
            "--extra",
            "operator",
            "--no-dev",
            "--output-file",
            str(requirements),
        )
        run(uv, "venv", "-q", "-p", "python3.11", str(venv))
        venv_env = {"VIRTUAL_ENV": str(venv)}
        run(uv, "pip", "install", "-q", "-r", str(requirements), env=venv_env)
    return python


@contextmanager
def operator(kubeconfig: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    ns, sa = OPERATOR_SA
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        # This checkout's code (the library's API types and the operator), as it is now.
        "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("core", "operator")),
        "TESTENV_IDENTITY": f"system:serviceaccount:{ns}:{sa}",
        "TESTENV_LIVENESS_ENDPOINT": f"http://127.0.0.1:{free_port()}/healthz",
        "TESTENV_LOG_LEVEL": "WARNING",
        "MALLOC_ARENA_MAX": "2",  # as the chart's Deployment sets it
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(operator_python()), "-m", "testenv_operator"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakMemory:
    """Samples a process's resident memory in the background; ``peak`` in MB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return

    def __enter__(self) -> PeakMemory:
        self.peak = rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Watch:
    """When each environment of a batch was first seen, first seen with a phase (the
    operator's first reaction), and first seen Ready: ``kubectl get --watch`` lines, timed
    as they arrive (millisecond resolution; the API's timestamps have whole seconds). A
    watch the server ends is started again (it lists the batch first: nothing is missed)."""

    FORMAT = '{.metadata.name} {.status.phase}{"\\n"}'

    def __init__(self, cluster: Cluster, batch: str) -> None:
        self.seen: dict[str, float] = {}
        self.reacted: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.errors: list[str] = []
        self._args = [
            KUBECTL,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "get",
            "testenvironments",
            "-l",
            f"bench-batch={batch}",
            "--watch",
            "-o",
            f"jsonpath={self.FORMAT}",
        ]
        self._changed = threading.Condition()
        self._stopped = False
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            self._proc = subprocess.Popen(
                self._args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                self._record(line)
            err = self._proc.stderr.read() if self._proc.stderr else ""
            if err.strip() and not self._stopped:
                self.errors.append(err.strip()[-500:])

    def _record(self, line: str) -> None:
        now = time.monotonic()
        name, _, phase = line.strip().partition(" ")
        if not name:
            return
        with self._changed:
            self.seen.setdefault(name, now)
            if phase:
                self.reacted.setdefault(name, now)
            if phase == "Ready":
                self.ready.setdefault(name, now)
            self._changed.notify_all()

    def wait(self, count: int, timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.ready) >= count, timeout):
                raise RuntimeError(
                    f"only {len(self.ready)}/{count} environments Ready after {timeout:.0f}s "
                    f"(watch errors: {self.errors[-3:]})"
                )

    def stop(self) -> None:
        self._stopped = True
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
        self._thread.join(10)

    def latencies(self) -> tuple[list[float], list[float]]:
        """Seconds from first seen to the operator's first status, and to Ready."""
        return (
            [self.reacted[n] - self.seen[n] for n in self.reacted],
            [self.ready[n] - self.seen[n] for n in self.ready],
        )


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "best_s": round(ordered[0], 3),
        "p50_s": at(0.50),
        "p95_s": at(0.95),
        "p99_s": at(0.99),
        "max_s": round(ordered[-1], 3),
    }


def manifest(batch: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "testenv.dev/v1alpha1",
        "kind": "TestEnvironment",
        "metadata": {"name": f"scale-{batch}-{i:04d}", "labels": {"bench-batch": batch}},
        "spec": SPEC,
    }


def probe(cluster: Cluster, count: int) -> dict[str, Any]:
    """Environments created one at a time, each awaited: the operator's latency for one
    change (its reaction, and Ready), whatever else it manages."""
    batch = uuid.uuid4().hex[:6]
    watch = Watch(cluster, batch)
    try:
        for i in range(count):
            cluster.apply([manifest(batch, i)])
            watch.wait(i + 1, timeout=300)
    finally:
        watch.stop()
    reacted, ready = watch.latencies()
    return {
        "environments": count,
        "to_first_status": percentiles(reacted),
        "to_ready": percentiles(ready),
    }


def burst(cluster: Cluster, pid: int, count: int, idle_s: float) -> dict[str, Any]:
    """``count`` environments applied at once (in batches of 100): until all are Ready, the
    operator's peak memory and API requests; then what they cost while idle."""
    batch = uuid.uuid4().hex[:6]
    watch = Watch(cluster, batch)
    before = cluster.operator_requests()
    started = time.monotonic()
    with PeakMemory(pid) as memory:
        try:
            for first in range(0, count, 100):
                cluster.apply([manifest(batch, i) for i in range(first, min(count, first + 100))])
            watch.wait(count, timeout=3600)
        finally:
            watch.stop()
        all_ready = time.monotonic() - started
        created_requests = cluster.operator_requests() - before
        idle_before = cluster.operator_requests()
        time.sleep(idle_s)  # the measurement window of idle cost
        idle_requests = cluster.operator_requests() - idle_before
    _, ready = watch.latencies()
    return {
        "environments": count,
        "all_ready_s": round(all_ready, 1),
        "environments_per_s": round(count / all_ready, 1),
        "to_ready": percentiles(ready),
        "operator_peak_mb": round(memory.peak, 1),
        "operator_mb_after": round(rss_mb(pid), 1),
        "operator_requests_per_environment": round(created_requests / count, 1),
        "idle_requests_per_environment_per_minute": round(idle_requests / count / (idle_s / 60), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--environments", type=int, default=500)
    parser.add_argument("--probes", type=int, default=20, help="one-at-a-time creations")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measured")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as tmp, control_plane(Path(tmp)) as cluster:
        cluster.apply(fake_nodes(NODES))
        cluster.apply(operator_objects())
        cluster.kubectl("wait", "--for=condition=Established", "crd/testenvironments.testenv.dev")
        op_config = operator_kubeconfig(cluster, Path(tmp))
        with operator(op_config, Path(tmp) / "operator.log") as proc:
            idle_mb = 0.0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and idle_mb == 0.0:
                time.sleep(1)
                idle_mb = rss_mb(proc.pid) if proc.poll() is None else 0.0
            if proc.poll() is not None:
                raise RuntimeError((Path(tmp) / "operator.log").read_text()[-3000:])
            alone = probe(cluster, args.probes)
            print(f"probe, nothing else: {json.dumps(alone)}", flush=True)
            load = burst(cluster, proc.pid, args.environments, args.idle)
            print(f"burst: {json.dumps(load)}", flush=True)
            loaded = probe(cluster, args.probes)
            print(f"probe, {args.environments} present: {json.dumps(loaded)}", flush=True)
            if proc.poll() is not None:
                log = (Path(tmp) / "operator.log").read_text()[-3000:]
                raise RuntimeError("the operator died: " + log)
    result = {
        "simulated_nodes": NODES,
        "operator_idle_mb": round(idle_mb, 1),
        "probe_alone": alone,
        "burst": load,
        "probe_loaded": loaded,
        "ratio_reaction_p95_loaded": round(
            loaded["to_first_status"]["p95_s"] / max(alone["to_first_status"]["p95_s"], 1e-3), 2
        ),
        "ratio_ready_p95_loaded": round(
            loaded["to_ready"]["p95_s"] / max(alone["to_ready"]["p95_s"], 1e-3), 2
        ),
        "targets": {"operator_mb": "< 150 with 500", "reaction_p95_s": "< 1 with 500"},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
