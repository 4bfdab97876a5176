"""The ``--testenv-report`` JSON and the JUnit XML properties."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ._context import StartResult


def environment_section(result: StartResult) -> dict[str, Any]:
    """What one process (or xdist worker) knows about its environment."""
    env = result.environment
    ports = {}
    for name, record in result.records.items():
        entry: dict[str, Any] = {"local_port": record.port, "base_url": record.base_url}
        remote = result.health.get(name, {}).get("remote_port")
        if remote is not None:
            entry["remote_port"] = remote
        ports[name] = entry
    return {
        "environment": {
            "mode": env.mode,
            "name": env.name,
            "namespace": env.namespace,
            "context": env.context,
            "reused": env.reused,
            "kept": env.kept,
            "shared": env.shared,
            "spec_hash": env.spec_hash,
        },
        "services_started": sorted(result.records),
        "startup_time": env.startup_time,
        "phases": dict(env.timings),
        "port_allocations": ports,
        "health_check_results": result.health,
    }


def junit_properties(result: StartResult) -> list[tuple[str, object]]:
    env = result.environment
    props: list[tuple[str, object]] = [
        ("testenv_mode", env.mode),
        ("testenv_environment", env.name),
        ("testenv_startup_time", env.startup_time),
    ]
    props += [(f"testenv_phase_{k}", v) for k, v in sorted(env.timings.items())]
    return props


class TestResults:
    __test__ = False

    def __init__(self) -> None:
        self.tests: dict[str, dict[str, Any]] = {}

    def add(self, report: pytest.TestReport) -> None:
        entry = self.tests.setdefault(
            report.nodeid, {"nodeid": report.nodeid, "outcome": "passed", "duration": 0.0}
        )
        entry["duration"] = round(entry["duration"] + report.duration, 4)
        if report.when == "call":
            if report.passed and hasattr(report, "wasxfail"):
                entry["outcome"] = "xpassed"
            elif report.skipped and hasattr(report, "wasxfail"):
                entry["outcome"] = "xfailed"
            else:
                entry["outcome"] = report.outcome
        elif report.failed:
            entry["outcome"] = "error"
        elif report.skipped and report.when == "setup":
            entry["outcome"] = "skipped"

    def summary(self) -> dict[str, Any]:
        counts = Counter(t["outcome"] for t in self.tests.values())
        return {
            "total": len(self.tests),
            **dict(sorted(counts.items())),
            "tests": list(self.tests.values()),
        }


def write_report(
    path: Path, sections: dict[str, dict[str, Any]], results: TestResults, mode: str
) -> None:
    """``sections``: per process ("main" or the xdist worker id) -> environment_section()."""
    first = next(iter(sections.values()), {})
    data: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "services_started": first.get("services_started", []),
        "startup_time": first.get("startup_time"),
        "phases": first.get("phases", {}),
        "port_allocations": first.get("port_allocations", {}),
        "health_check_results": first.get("health_check_results", {}),
        "environment": first.get("environment"),
        "test_results": results.summary(),
    }
    if len(sections) > 1 or (sections and "main" not in sections):
        data["workers"] = sections
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
