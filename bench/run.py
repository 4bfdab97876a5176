"""`make bench`: every benchmark of the product against its baselines, in one run, on the
cluster KUBECONFIG points at. Writes ``bench/results.json`` and ``bench/results.md``.

Every figure is measured in the same run as its baseline, interleaved round by round so that
the machine's noise hits both alike, and reported as seconds (p50, p95, best, worst) and as a
ratio to the baseline's p50. The workload is the same everywhere: ``SERVICES`` web servers of
the project's base image (``python3 -m http.server``) with a TCP readiness probe every second,
no service account token (as the product's pods).

* ready: creation to Ready. The product (a TestEnvironment: Ready means every service Ready
  and discovery published), a claim from a warm pool, against (a) the floor: bare pods;
  (b) the same Deployments and Services applied with kubectl; (c) ``helm install --wait`` of a
  chart with them. Plus the product's per-phase timings from its status.
* pytest: a one-test session that uses the environment, from process start to the first test
  and to exit, fresh / claimed from a pool / reusing, against an empty pytest session.
* concurrency: N environments at once against N times the floor's pods at once, with the
  operator's CPU seconds and memory (when its process is visible on this machine).
* portforward: ``bench/portforward.py`` (the library's forwarder against kubectl's and the
  official client's).

    python bench/run.py [--rounds 10] [--quick] [--only ready,pytest,...]

``--quick`` (CI): 2 rounds, concurrency 1 and 3, so that the benchmark cannot rot; its
figures are not worth publishing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubetest_peer
import yaml
from _common import ROOT, kubectl_path, session_env
from timeline import STEPS, Timeline

sys.path.insert(0, str(ROOT / "hack"))
from tools import tool

import testenv
from testenv.api import REFERENCE_IMAGE_TAG, TestEnvironmentSpec

KUBECTL = kubectl_path()
HELM = tool("helm") or "helm"
IMAGE = f"testenv/frontend:{REFERENCE_IMAGE_TAG}"
SERVICES = 3
PORT = 8080
WAIT = "300s"


# -- the workload, four ways ------------------------------------------------------------------


def web_spec(tag: str, services: int = SERVICES) -> dict[str, Any]:
    """The product's spec: ``services`` web servers (``tag`` makes it this run's own)."""
    return {
        "ttl": "30m",
        "services": [
            {
                "name": f"web{i}",
                "image": IMAGE,
                "port": PORT + i,
                "command": ["python3", "-m", "http.server", str(PORT + i), "-d", "/etc"],
                "probe": {"tcp": {}},
                "env": [{"name": "BENCH_RUN", "value": tag}],
            }
            for i in range(services)
        ],
    }


def _container(i: int) -> dict[str, Any]:
    return {
        "name": f"web{i}",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "http.server", str(PORT + i), "-d", "/etc"],
        "ports": [{"containerPort": PORT + i}],
        "readinessProbe": {"tcpSocket": {"port": PORT + i}, "periodSeconds": 1},
    }


def floor_pods(namespace: str, count: int = SERVICES) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"web{i}", "namespace": namespace, "labels": {"bench": "floor"}},
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [{**_container(i % SERVICES), "name": "web"}],
            },
        }
        for i in range(count)
    ]


def deployments(namespace: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for i in range(SERVICES):
        labels = {"app": f"web{i}"}
        meta: dict[str, Any] = {
            "name": f"web{i}",
            **({"namespace": namespace} if namespace else {}),
        }
        items.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "automountServiceAccountToken": False,
                            "containers": [_container(i)],
                        },
                    },
                },
            }
        )
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {"selector": labels, "ports": [{"port": PORT + i}]},
            }
        )
    return items


# -- running things ---------------------------------------------------------------------------


def kubectl(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [KUBECTL, *args], input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def as_list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def timed(*steps: Callable[[], object]) -> float:
    """Seconds the steps take, one after the other."""
    started = time.perf_counter()
    for step in steps:
        step()
    return time.perf_counter() - started


def new_namespace(prefix: str) -> str:
    """A namespace ready for pods (its default ServiceAccount exists): a baseline's time
    starts at its first object, as the product's starts at the TestEnvironment."""
    name = f"bench-{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    kubectl("-n", name, "wait", "--for=create", "serviceaccount/default", "--timeout=60s")
    return name


def drop_namespace(name: str) -> None:
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def environment_manifest(name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "testenv.dev/v1alpha1",
            "kind": "TestEnvironment",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


# -- 1. ready latency -------------------------------------------------------------------------


def round_floor(count: int = SERVICES, *, settle: bool = False) -> float:
    """``settle``: return only once the pods and their namespace are gone."""
    ns = new_namespace("floor")
    try:
        return timed(
            lambda: kubectl("apply", "-f", "-", stdin=as_list(floor_pods(ns, count))),
            lambda: kubectl(
                "-n", ns, "wait", "--for=condition=Ready", "pod", "--all", f"--timeout={WAIT}"
            ),
        )
    finally:
        drop_namespace(ns)
        if settle:
            kubectl("wait", "--for=delete", f"namespace/{ns}", f"--timeout={WAIT}")


def round_kubectl() -> float:
    ns = new_namespace("kubectl")
    try:
        return timed(
            lambda: kubectl("apply", "-f", "-", stdin=as_list(deployments(ns))),
            lambda: kubectl(
                "-n",
                ns,
                "wait",
                "--for=condition=Available",
                "deployment",
                "--all",
                f"--timeout={WAIT}",
            ),
        )
    finally:
        drop_namespace(ns)


def helm_chart(where: Path) -> Path:
    chart = where / "bench-web"
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": "bench-web", "version": "0.1.0"})
    )
    (chart / "templates" / "web.yaml").write_text(
        "---\n".join(yaml.safe_dump(item) for item in deployments(None))
    )
    return chart


def round_helm(chart: Path) -> float:
    ns = f"bench-helm-{uuid.uuid4().hex[:6]}"
    release = "web"
    try:

        def install() -> None:
            done = subprocess.run(
                [
                    HELM,
                    "install",
                    release,
                    str(chart),
                    "-n",
                    ns,
                    "--create-namespace",
                    "--wait",
                    f"--timeout={WAIT}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"helm install failed: {done.stderr.strip()}")

        return timed(install)
    finally:
        drop_namespace(ns)


def round_product(spec: dict[str, Any]) -> tuple[float, dict[str, Any], dict[str, float]]:
    """(seconds to Ready, the final status, the steps a watching client saw: timeline.py)."""
    name = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        with Timeline(name, pods=len(spec["services"])) as timeline:
            timeline.start()
            took = timed(
                lambda: kubectl("apply", "-f", "-", stdin=environment_manifest(name, spec)),
                lambda: kubectl(
                    "wait", "--for=condition=Ready", f"testenv/{name}", f"--timeout={WAIT}"
                ),
            )
        status = json.loads(kubectl("get", "testenv", name, "-o", "json")).get("status") or {}
        return took, status, timeline.steps()
    finally:
        kubectl("delete", "testenv", name, "--wait=false", "--ignore-not-found")


#: Ready environments the benchmark's pool keeps (claims take from it; settle() waits for it).
POOL_SIZE = 2


@contextmanager
def pool(spec: dict[str, Any]) -> Iterator[str]:
    name = f"bench-pool-{uuid.uuid4().hex[:6]}"
    doc = {
        "apiVersion": "testenv.dev/v1alpha1",
        "kind": "TestEnvironmentPool",
        "metadata": {"name": name},
        "spec": {"size": POOL_SIZE, "maxSize": POOL_SIZE + 4, "template": spec},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(doc))
    try:
        yield name
    finally:
        kubectl("delete", "testenvironmentpool", name, "--wait=false", "--ignore-not-found")


def wait_pool_ready(name: str, count: int) -> None:
    kubectl(
        "wait",
        f"--for=jsonpath={{.status.ready}}={count}",
        f"testenvironmentpool/{name}",
        f"--timeout={WAIT}",
    )


def settle(pool_name: str | None = None) -> None:
    """Wait for the previous step's leftovers: no namespace terminating (a deleted
    environment's pods stop and give back their CPU) and the pool full again (its refill's
    pods started). Each session is then timed on a cluster as quiet as its baseline's; what
    a session itself sets off (a claimed environment's refill, its own teardown) still
    counts."""
    terminating = kubectl(
        "get",
        "namespaces",
        "-o",
        'jsonpath={range .items[?(@.status.phase=="Terminating")]}{.metadata.name}{"\\n"}{end}',
    ).split()
    if terminating:
        try:
            kubectl(
                "wait",
                "--for=delete",
                *(f"namespace/{name}" for name in terminating),
                "--timeout=120s",
            )
        except RuntimeError as exc:  # not this run's to fix: time the session anyway
            print(f"settle: namespaces still terminating: {exc}", flush=True)
    if pool_name is not None:
        wait_pool_ready(pool_name, POOL_SIZE)


def round_claim(spec: dict[str, Any]) -> float:
    """A claim to a usable environment: claimed, Ready, its discovery readable (what a
    client needs before it forwards)."""
    parsed = TestEnvironmentSpec.model_validate(spec)

    async def claim() -> float:
        envs = await testenv.Environments.connect()
        started = time.perf_counter()
        got = await envs.claim(parsed, lease="2m")
        if got is None:
            raise RuntimeError("the pool had nothing to claim")
        await envs.wait(got[0], timeout=300)
        await envs.discovery(got[0])
        took = time.perf_counter() - started
        await envs.delete(got[0], wait=False)
        return took

    return asyncio.run(claim())


def phases(statuses: list[dict[str, Any]]) -> dict[str, float]:
    """Median over rounds of each step in the product's status (seconds since creation); for
    services, the last one of each round (what Ready waits for)."""
    steps: dict[str, list[float]] = {}
    for status in statuses:
        for key, value in (status.get("timings") or {}).items():
            if value is not None:
                steps.setdefault(key, []).append(value)
        latest: dict[str, float] = {}
        for svc in status.get("services") or []:
            for key, value in (svc.get("timings") or {}).items():
                if value is not None:
                    latest[key] = max(value, latest.get(key, 0.0))
        for key, value in latest.items():
            steps.setdefault(f"last service {key}", []).append(value)
    medians = {key: statistics.median(values) for key, values in steps.items()}
    return dict(sorted(medians.items(), key=lambda kv: kv[1]))


def watched_steps(timelines: list[dict[str, float]]) -> dict[str, float]:
    """Median over rounds of each step a watching client saw (``timeline.STEPS`` order),
    over the rounds that saw every step when there are any: medians of rounds each in order
    are in order, medians of different rounds per step need not be."""
    complete = [seen for seen in timelines if len(seen) == len(STEPS)]
    return {
        step: round(statistics.median(values), 3)
        for step in STEPS
        if (values := [seen[step] for seen in complete or timelines if step in seen])
    }


def bench_ready(rounds: int, tag: str) -> list[dict[str, Any]]:
    spec = web_spec(tag)
    series: dict[str, list[float]] = {
        k: [] for k in ("floor", "kubectl", "helm", "kubetest", "product", "claim")
    }
    statuses: list[dict[str, Any]] = []
    timelines: list[dict[str, float]] = []
    peer = kubetest_peer.ensure_venv()
    with tempfile.TemporaryDirectory() as tmp, pool(spec) as pool_name:
        chart = helm_chart(Path(tmp))
        kubetest_peer.write_session(Path(tmp) / "kubetest", deployments(None))
        kubetest_dir = Path(tmp) / "kubetest"

        def product() -> float:
            took, status, seen = round_product(spec)
            statuses.append(status)
            timelines.append(seen)
            return took

        def claim() -> float:
            wait_pool_ready(pool_name, POOL_SIZE)
            return round_claim(spec)

        steps: list[tuple[str, Callable[[], float]]] = [
            ("floor", round_floor),
            ("kubectl", round_kubectl),
            ("helm", lambda: round_helm(chart)),
            ("kubetest", lambda: kubetest_peer.session(peer, kubetest_dir)[2]),
            ("product", product),
            ("claim", claim),
        ]
        for i in range(rounds):
            # A different one goes first each round: whatever the previous round left being
            # deleted slows the next step, and must not always slow the same one.
            for key, step in steps[i % len(steps) :] + steps[: i % len(steps)]:
                series[key].append(step())
            print(
                f"ready round {i + 1}/{rounds}: "
                + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in series.items()),
                flush=True,
            )
    floor = series["floor"]
    return [
        figure("ready", "kubectl apply + wait (Deployments)", series["kubectl"], "floor", floor),
        figure("ready", "helm install --wait", series["helm"], "floor", floor),
        figure(
            "ready",
            "kubetest: test start to every service answering",
            series["kubetest"],
            "floor",
            floor,
        ),
        figure(
            "ready",
            "testenv: TestEnvironment Ready",
            series["product"],
            "floor",
            floor,
            target="≤ 1.15x floor",
        ),
        figure(
            "ready",
            "testenv vs helm",
            series["product"],
            "helm",
            series["helm"],
            target="≤ 0.5x helm",
        ),
        figure(
            "ready",
            "testenv: claim from a warm pool",
            series["claim"],
            "floor",
            floor,
            target="≤ 0.25x floor",
        ),
        {
            "suite": "ready",
            "name": "testenv phases (median s since creation)",
            "phases": phases(statuses),
        },
        {
            "suite": "ready",
            "name": "testenv timeline (median s since kubectl apply started, as watched)",
            "timeline": watched_steps(timelines),
        },
    ]


# -- 2. pytest sessions -----------------------------------------------------------------------

SESSION_TEST = """
import json, os, time
from pathlib import Path

def test_first(testenv):
    Path("first-test").write_text(str(time.time()))
    with testenv.http_sync("web0") as web:
        assert web.get("/").status_code == 200
"""

EMPTY_TEST = """
import time
from pathlib import Path

def test_first():
    Path("first-test").write_text(str(time.time()))
"""


def session(workdir: Path, *args: str) -> tuple[float, float, dict[str, Any]]:
    """(start to first test, start to exit, the plugin's report).

    Every session, the empty one too, loads pytest and the testenv plugin only: the other
    plugins of this virtualenv (hypothesis imports its whole package in its terminal
    summary) would add to both sides, and more to the side that shares the CPU with a
    starting environment."""
    report = workdir / "report.json"
    report.unlink(missing_ok=True)
    started = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "testenv_pytest.plugin",
            *args,
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**session_env(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    ended = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"pytest failed:\n{done.stdout[:6000]}\n{done.stderr[-2000:]}")
    first = float((workdir / "first-test").read_text())
    data = json.loads(report.read_text()) if report.exists() else {}
    return first - started, ended - started, data


def bench_pytest(rounds: int, tag: str) -> list[dict[str, Any]]:
    spec = web_spec(tag + "-pytest")
    series: dict[str, list[float]] = {}
    added: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        series.setdefault(key, []).append(value)

    def add_overhead(mode: str, whole: float, report: dict[str, Any]) -> None:
        """What the plugin costs beyond pytest itself (this round's empty session) and the
        environment's own startup."""
        startup = report.get("startup_time") or 0.0
        added.setdefault(mode, []).append(whole - startup - series["empty exit"][-1])

    with tempfile.TemporaryDirectory() as tmp, pool(spec) as pool_name:
        root = Path(tmp)
        empty, env = root / "empty", root / "env"
        empty.mkdir()
        env.mkdir()
        (empty / "test_empty.py").write_text(EMPTY_TEST)
        (env / "test_env.py").write_text(SESSION_TEST)
        (env / "spec.yaml").write_text(yaml.safe_dump({"spec": spec}))
        peer = kubetest_peer.ensure_venv()
        kubetest_peer.write_session(root / "kubetest", deployments(None))
        common = ["--testenv-spec=spec.yaml", "--testenv-report=report.json"]
        reused_name = None
        for i in range(rounds):
            settle(pool_name)
            first, whole, _ = session(empty)
            add("empty first", first)
            add("empty exit", whole)
            settle(pool_name)
            add("kubetest exit", kubetest_peer.session(peer, root / "kubetest")[0])
            for mode, extra in (("fresh", ["--testenv-pool=off"]), ("claimed", [])):
                settle(pool_name)
                first, whole, report = session(env, *common, *extra)
                add(f"{mode} first", first)
                add(f"{mode} exit", whole)
                add_overhead(mode, whole, report)
            # Reuse: a kept environment from the first round on.
            settle(pool_name)
            first, whole, report = session(env, *common, "--testenv-reuse", "--testenv-pool=off")
            reused_name = (report.get("environment") or {}).get("name") or reused_name
            if i > 0 or rounds == 1:
                add("reused first", first)
                add("reused exit", whole)
                add_overhead("reused", whole, report)
            print(
                f"pytest round {i + 1}/{rounds}: "
                + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in series.items()),
                flush=True,
            )
        if reused_name:
            kubectl("delete", "testenv", reused_name, "--wait=false", "--ignore-not-found")
    out = []
    for mode in ("fresh", "claimed", "reused"):
        for what, label in (("first", "start to first test"), ("exit", "start to exit")):
            out.append(
                figure(
                    "pytest",
                    f"{mode} session, {label}",
                    series[f"{mode} {what}"],
                    f"empty session, {label}",
                    series[f"empty {what}"],
                )
            )
    out.append(
        figure(
            "pytest",
            "kubetest session, start to exit",
            series["kubetest exit"],
            "empty session, start to exit",
            series["empty exit"],
        )
    )
    for mode in ("fresh", "claimed"):
        out.append(
            figure(
                "pytest",
                f"{mode} session against kubetest's, start to exit",
                series[f"{mode} exit"],
                "kubetest session, start to exit",
                series["kubetest exit"],
                target="≤ 1.0x kubetest" if mode == "fresh" else None,
            )
        )
    for mode, values in added.items():
        out.append(
            {
                "suite": "pytest",
                "name": f"{mode} session: added beyond an empty session and its "
                "environment's startup",
                **stats(values),
                "target": "≤ 0.5 s beyond Ready",
            }
        )
    return out


# -- 3. concurrency ---------------------------------------------------------------------------


def operator_process() -> int | None:
    """The operator's PID when it runs on this machine (the local cluster), else None."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"testenv_operator" in cmd and b"-m" in cmd:
                return int(entry.name)
    return None


def cpu_and_rss(pid: int | None) -> tuple[float | None, float | None]:
    if pid is None:
        return None, None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = next(
            int(line.split()[1]) / 1024
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        return cpu, rss
    except (OSError, StopIteration, IndexError, ValueError):
        return None, None


def round_concurrent_product(n: int, spec: dict[str, Any]) -> float:
    names = [f"bench-c{n}-{uuid.uuid4().hex[:5]}" for _ in range(n)]
    docs = "\n---\n".join(environment_manifest(name, spec) for name in names)
    try:
        return timed(
            lambda: kubectl("apply", "-f", "-", stdin=docs),
            lambda: kubectl(
                "wait",
                "--for=condition=Ready",
                *(f"testenv/{x}" for x in names),
                f"--timeout={WAIT}",
            ),
        )
    finally:
        kubectl("delete", "testenv", *names, "--wait=false", "--ignore-not-found")
        # Settle: the next step starts on a quiet cluster (terminating pods hold their CPU
        # requests, and on 2 cores a previous step's pods decide whether all of the next fit).
        kubectl(
            "wait",
            "--for=delete",
            *(f"namespace/testenv-{x}" for x in names),
            f"--timeout={WAIT}",
        )


def bench_concurrency(levels: list[int], tag: str, rounds: int) -> list[dict[str, Any]]:
    """N one-service environments at once against N bare pods at once (the same pods),
    ``rounds`` times each, the floor and the product alternating."""
    spec = web_spec(tag + "-conc", services=1)
    pid = operator_process()
    out = []
    for n in levels:
        floors: list[float] = []
        products: list[float] = []
        cpu: list[float] = []
        rss: float | None = None
        for _ in range(rounds):
            floors.append(round_floor(n, settle=True))
            cpu0, _ = cpu_and_rss(pid)
            products.append(round_concurrent_product(n, spec))
            cpu1, rss = cpu_and_rss(pid)
            if cpu0 is not None and cpu1 is not None:
                cpu.append(cpu1 - cpu0)
            print(
                f"concurrency {n}: floor {floors[-1]:.2f}s  testenv {products[-1]:.2f}s",
                flush=True,
            )
        entry = figure(
            "concurrency",
            f"{n} one-service environments at once",
            products,
            f"{n} floor pods at once",
            floors,
            target="≤ 1.2x floor at 20",
        )
        entry["operator_cpu_s"] = round(statistics.median(cpu), 2) if cpu else None
        entry["operator_rss_mb"] = None if rss is None else round(rss, 1)
        out.append(entry)
    return out


# -- 4. port-forward --------------------------------------------------------------------------


def bench_portforward(rounds: int) -> list[dict[str, Any]]:
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench/portforward.py"),
                "--rounds",
                str(rounds),
                "--json",
                tmp.name,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"portforward benchmark failed:\n{done.stderr[-3000:]}")
        data = json.loads(Path(tmp.name).read_text())
    # Every figure as milliseconds per request or round trip (a rate r is 1000/r ms), so
    # that lower is better in every row and p95, best and worst read as for the others.
    labels = {
        "rps_keepalive": "GET over one keep-alive connection (ms per request)",
        "rps_new_connection": "GET, a new connection each (ms per request)",
        "ws_rtt_s": "WebSocket chat round trip (ms)",
    }

    def per_round_ms(forwarder: str, metric: str) -> list[float]:
        values = data["samples"][forwarder][metric]
        return [v * 1000.0 if metric == "ws_rtt_s" else 1000.0 / v for v in values]

    rows = []
    for other, key in (
        ("kubectl port-forward", "kubectl_port_forward"),
        ("official client", "official_client"),
    ):
        for metric, label in labels.items():
            rows.append(
                figure(
                    "portforward",
                    f"library forwarder: {label}",
                    per_round_ms("library", metric),
                    other,
                    per_round_ms(key, metric),
                    target="≤ 1.0x kubectl" if other.startswith("kubectl") else None,
                )
            )
    return [*rows, {"suite": "portforward", "name": "port-forward medians", "result": data}]


# -- 5. scale -------------------------------------------------------------------------------


def bench_scale(quick: bool) -> list[dict[str, Any]]:
    """``bench/scale.py`` on a throwaway control plane with simulated nodes (kwok)."""
    size = ["--environments", "10", "--probes", "3", "--idle", "5"] if quick else []
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench/scale.py"), *size, "--json", tmp.name],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"scale benchmark failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        data = json.loads(Path(tmp.name).read_text())
    alone, loaded, n = data["probe_alone"], data["probe_loaded"], data["burst"]["environments"]
    out = []
    for key, label in (("to_first_status", "reaction"), ("to_ready", "Ready")):
        out.append(
            {
                "suite": "scale",
                "name": f"one change with {n} environments present: creation to {label}",
                "rounds": loaded["environments"],
                "p50_s": loaded[key]["p50_s"],
                "p95_s": loaded[key]["p95_s"],
                "best_s": loaded[key]["best_s"],
                "worst_s": loaded[key]["max_s"],
                "baseline": "the same with none present",
                "baseline_p50_s": alone[key]["p50_s"],
                "baseline_p95_s": alone[key]["p95_s"],
                "ratio_p50": round(loaded[key]["p50_s"] / max(alone[key]["p50_s"], 1e-3), 2),
                **({"target": "p95 < 1 s"} if key == "to_first_status" else {}),
            }
        )
    out.append({"suite": "scale", "name": "scale (see bench/scale.py)", "result": data})
    return out


# -- reporting --------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))]
    return {
        "rounds": len(values),
        "p50_s": round(statistics.median(values), 3),
        "p95_s": round(p95, 3),
        "best_s": round(ordered[0], 3),
        "worst_s": round(ordered[-1], 3),
        "values_s": [round(v, 3) for v in values],
    }


def figure(
    suite: str,
    name: str,
    measured: list[float],
    baseline_name: str,
    baseline: list[float],
    *,
    target: str | None = None,
) -> dict[str, Any]:
    m, b = stats(measured), stats(baseline)
    return {
        "suite": suite,
        "name": name,
        **m,
        "baseline": baseline_name,
        "baseline_p50_s": b["p50_s"],
        "baseline_p95_s": b["p95_s"],
        "ratio_p50": round(m["p50_s"] / b["p50_s"], 2) if b["p50_s"] else None,
        **({"target": target} if target else {}),
    }


def kept_figures(previous: Path, chosen: list[str], *, quick: bool) -> list[dict[str, Any]]:
    """The figures of the suites not run now, from an earlier run of the same mode (each
    keeps its own time of measurement)."""
    if not previous.exists():
        return []
    old = json.loads(previous.read_text())
    if bool(old.get("quick")) != quick:
        return []
    return [
        {**f, "measured_at": f.get("measured_at", old["measured_at"])}
        for f in old.get("figures", [])
        if f["suite"] not in chosen
    ]


def markdown(results: dict[str, Any]) -> str:
    when: dict[str, set[str]] = {}
    for f in results["figures"]:
        when.setdefault(f.get("measured_at", results["measured_at"]), set()).add(f["suite"])
    measured = (
        f"Measured {results['measured_at']}"
        if set(when) <= {results["measured_at"]}
        else "Measured "
        + "; ".join(
            f"{at} ({', '.join(s for s in SUITES if s in suites)})"
            for at, suites in sorted(when.items(), reverse=True)
        )
    )
    lines = [
        f"{measured} on {results['machine']} "
        f"({results['rounds']} rounds{', quick mode' if results['quick'] else ''}).",
        "",
        "| suite | figure | p50 s | p95 s | best-worst s | baseline | baseline p50 s | ratio "
        "| target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in results["figures"]:
        if "p50_s" not in f:
            continue
        lines.append(
            f"| {f['suite']} | {f['name']} | {f['p50_s']:.2f} | {f['p95_s']:.2f} | "
            f"{f['best_s']:.2f}-{f['worst_s']:.2f} | {f.get('baseline', '')} | "
            + (f"{f['baseline_p50_s']:.2f}" if "baseline_p50_s" in f else "")
            + f" | {'' if f.get('ratio_p50') is None else f['ratio_p50']} "
            f"| {f.get('target', '')} |"
        )
    for f in results["figures"]:
        if "phases" in f:
            lines += [
                "",
                "Where a TestEnvironment's time goes (median seconds since creation):",
                "",
            ]
            lines += [f"- {k}: {v:.2f}" for k, v in f["phases"].items()]
        if "timeline" in f:
            lines += [
                "",
                "The same, as a client watching the environment and its pods sees it (median "
                "seconds since `kubectl apply` started; Kubernetes' own timestamps, above, are "
                "whole seconds):",
                "",
            ]
            previous = 0.0
            for step, at in f["timeline"].items():
                lines.append(f"- {step}: {at:.3f} (+{at - previous:.3f})")
                previous = at
            lines.append("")
        if "result" in f and f["suite"] == "scale":
            r, b = f["result"], f["result"]["burst"]
            lines.append(
                f"- scale: {b['environments']} environments at once on {r['simulated_nodes']} "
                f"simulated nodes, all Ready in {b['all_ready_s']} s "
                f"({b['environments_per_s']}/s); operator peak {b['operator_peak_mb']} MB "
                f"(idle {r['operator_idle_mb']} MB, {b['operator_mb_after']} MB after); "
                f"{b['operator_requests_per_environment']} API requests per environment, "
                f"{b['idle_requests_per_environment_per_minute']} per environment per idle minute"
            )
        if f.get("operator_rss_mb") is not None:
            lines.append(
                f"- {f['name']}: operator CPU {f['operator_cpu_s']} s, "
                f"memory {f['operator_rss_mb']} MB"
            )
    return "\n".join(lines) + "\n"


def machine() -> str:
    cores = os.cpu_count()
    mem = next(
        (
            int(line.split()[1]) // (1024 * 1024)
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    return f"{platform.machine()}, {cores} cores, {mem} GiB, Python {platform.python_version()}"


SUITES = ("ready", "pytest", "concurrency", "portforward", "scale")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="CI: few rounds, small scale")
    parser.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument(
        "--keep-other-suites",
        action="store_true",
        help="keep the figures of the suites not run from the existing results (each suite's "
        "figures still come from one run; the table says when each was measured)",
    )
    args = parser.parse_args(argv)
    # A stopped run still cleans up (its finally blocks delete what it made).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rounds = 2 if args.quick else args.rounds
    chosen = [s for s in args.only.split(",") if s]
    unknown = set(chosen) - set(SUITES)
    if unknown:
        parser.error(f"unknown suites: {', '.join(sorted(unknown))} (known: {', '.join(SUITES)})")
    tag = uuid.uuid4().hex[:8]
    figures: list[dict[str, Any]] = []
    if "ready" in chosen:
        figures += bench_ready(rounds, tag)
    if "pytest" in chosen:
        figures += bench_pytest(rounds, tag)
    if "concurrency" in chosen:
        levels = [1, 3] if args.quick else [1, 5, 10, 20]
        figures += bench_concurrency(levels, tag, 1 if args.quick else max(1, rounds // 3))
    if "portforward" in chosen:
        figures += bench_portforward(rounds)
    if "scale" in chosen:
        figures += bench_scale(args.quick)
    measured_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    for entry in figures:
        entry["measured_at"] = measured_at
    if args.keep_other_suites:
        figures += kept_figures(args.out / "results.json", chosen, quick=args.quick)
    results = {
        "measured_at": measured_at,
        "machine": machine(),
        "rounds": rounds,
        "quick": args.quick,
        "services": SERVICES,
        "figures": figures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
