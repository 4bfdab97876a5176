"""`make bench` in its quick mode, on the real cluster, so that the benchmark cannot rot: every
suite runs, every figure comes with its same-run baseline and ratio, the Markdown table is
written. No timing is asserted (this machine is shared and noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str, timeout: float) -> None:
    """Run ``bench/<script>`` as `make bench` does; fails the test with its output tails."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def test_the_quick_benchmark_measures_every_figure_against_its_baseline(tmp_path: Path) -> None:
    run_bench("run.py", "--quick", "--out", str(tmp_path), timeout=1200)
    results = json.loads((tmp_path / "results.json").read_text())
    figures = results["figures"]
    assert {f["suite"] for f in figures} == {
        "ready",
        "pytest",
        "concurrency",
        "portforward",
        "scale",
    }
    compared = [f for f in figures if "baseline" in f]
    names = {f["name"] for f in compared}
    assert {
        "testenv: TestEnvironment Ready",
        "testenv: claim from a warm pool",
        "helm install --wait",
        "claimed session, start to exit",
        "3 one-service environments at once",
        "kubetest session, start to exit",
        "one change with 10 environments present: creation to Ready",
    } <= names
    for figure in compared:
        assert figure["rounds"] >= 1 and figure["p50_s"] > 0 and figure["baseline_p50_s"] > 0
        assert figure["ratio_p50"] == pytest.approx(
            figure["p50_s"] / figure["baseline_p50_s"], rel=0.05, abs=0.01
        )
        assert figure["best_s"] <= figure["p50_s"] <= figure["p95_s"] <= figure["worst_s"]
    scale = next(f["result"] for f in figures if f["suite"] == "scale" and "result" in f)
    assert scale["burst"]["operator_peak_mb"] > 0
    assert scale["burst"]["operator_requests_per_environment"] > 0
    phases = next(f["phases"] for f in figures if "phases" in f)
    assert {"namespaceCreated", "ready"} <= set(phases)
    # The same steps to the millisecond, as watched: every one seen, in the order they happen.
    timeline = next(f["timeline"] for f in figures if "timeline" in f)
    assert list(timeline) == [
        "TestEnvironment created",
        "first pod created",
        "last pod created",
        "last pod scheduled",
        "last pod's sandbox and network ready",
        "last pod's containers running",
        "last pod Ready",
        "TestEnvironment Ready",
    ]
    assert list(timeline.values()) == sorted(timeline.values())
    table = (tmp_path / "results.md").read_text()
    assert "| ready | testenv: TestEnvironment Ready |" in table
    assert results["machine"] in table


def test_the_burst_breakdown_measures_each_cause_against_the_floor(
    tmp_path: Path, k: Kubectl
) -> None:
    """bench/burst.py in its smallest form: every variant timed, each against the floor of the
    same run, and nothing of it left behind."""
    out = tmp_path / "burst.json"
    run_bench("burst.py", "--environments", "2", "--rounds", "1", "--json", str(out), timeout=600)
    result = json.loads(out.read_text())
    figures = {f["name"]: f for f in result["figures"]}
    assert list(figures) == ["floor", "namespaces", "objects_pods", "objects_deployments"]
    floor = figures["floor"]["p50_s"]
    for f in figures.values():
        assert f["rounds"] == 1 and f["p50_s"] > 0
        assert f["ratio_to_floor"] == pytest.approx(f["p50_s"] / floor, rel=0.05, abs=0.01)
    left = k("get", "namespaces", "-l", "testenv.dev/bench-burst", "-o", "name").stdout
    assert left == ""
