"""Reports: the plan's ``RealServiceTestReport``, the JSON report file, JUnit properties."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

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
            "pool": env.pool,
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

    def add(self, report: Any) -> None:
        """Count one phase of a test (a ``pytest.TestReport``, or anything shaped like it)."""
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


class RealServiceTestReport:
    """The plan's report: ``generate()`` returns ``services_started``, ``startup_time``,
    ``port_allocations``, ``health_check_results`` and ``test_results``."""

    __test__ = False

    def __init__(self) -> None:
        self.services_started: list[str] = []
        self.startup_duration: float | None = None
        self.port_map: dict[str, dict[str, Any]] = {}
        self.health_checks: dict[str, dict[str, Any]] = {}
        self.results: dict[str, Any] = TestResults().summary()
        self.phases: dict[str, float] = {}
        self.environment: dict[str, Any] | None = None

    @classmethod
    def from_start(cls, result: StartResult, results: TestResults | None = None) -> Self:
        """The report of a started launcher (``launcher.result``) and optional test results."""
        section = environment_section(result)
        report = cls()
        report.services_started = section["services_started"]
        report.startup_duration = section["startup_time"]
        report.port_map = section["port_allocations"]
        report.health_checks = section["health_check_results"]
        report.phases = section["phases"]
        report.environment = section["environment"]
        if results is not None:
            report.results = results.summary()
        return report

    def generate(self) -> dict[str, Any]:
        return {
            "services_started": self.services_started,
            "startup_time": self.startup_duration,
            "port_allocations": self.port_map,
            "health_check_results": self.health_checks,
            "test_results": self.results,
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
