"""What the ``testenv`` command prints: for people (rich tables and a live progress display on
a terminal, plain lines otherwise) or for scripts (``-o json`` / ``-o yaml`` on stdout)."""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table

from testenv import EnvironmentView
from testenv.api import DiscoveryRecord, ServiceStatus, TestEnvironmentStatus

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Output(enum.StrEnum):
    HUMAN = "human"
    JSON = "json"
    YAML = "yaml"


def emit(data: Any, output: Output) -> None:
    """``data`` for scripts on stdout (JSON or YAML)."""
    if output is Output.JSON:
        print(json.dumps(data, indent=2, sort_keys=True), flush=True)
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="", flush=True)


def span(seconds: float) -> str:
    """``45s``, ``5m``, ``2h3m``, ``1d4h`` (kubectl's style)."""
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def _time(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """How long ago ``timestamp`` was."""
    if not timestamp:
        return "?"
    return span(max(0.0, ((now or datetime.now(UTC)) - _time(timestamp)).total_seconds()))


def until(timestamp: str | None, now: datetime | None = None) -> str:
    """``in 42m`` until ``timestamp``, or ``expired``."""
    if not timestamp:
        return "-"
    left = (_time(timestamp) - (now or datetime.now(UTC))).total_seconds()
    return f"in {span(left)}" if left > 0 else "expired"


def environments_table(views: Sequence[EnvironmentView]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "PHASE", "READY", "NAMESPACE", "EXPIRES", "AGE"):
        table.add_column(column)
    for v in views:
        table.add_row(
            v.name, v.phase, v.ready or "-", v.namespace or "-", until(v.expires_at), age(v.created)
        )
    return table


def service_state(svc: ServiceStatus) -> str:
    """``ready (2.0s)``, or why not: ``ErrImagePull - <message>``, ``starting``."""
    if svc.ready:
        return "ready" + (f" ({svc.timings.ready:.1f}s)" if svc.timings.ready is not None else "")
    state = svc.reason or "starting"
    return f"{state} - {svc.message}" if svc.message else state


def service_line(svc: ServiceStatus) -> str:
    return f"{svc.name}: {service_state(svc)}"


def status_lines(view: EnvironmentView, events: Sequence[str]) -> list[str]:
    """``testenv status``: the cause first, then the evidence; each fact once."""
    st = view.status
    lines = [
        f"{view.name}: {view.phase}" + (f" ({view.ready} services ready)" if view.ready else ""),
    ]
    if st.message:
        lines.append(f"  {st.message}")
    lines.append(
        f"  namespace {view.namespace or '-'}, created {age(view.created)} ago, "
        f"expires {until(view.expires_at)}"
    )
    for cond in st.conditions:
        if cond.message and cond.message != st.message:
            lines.append(f"  condition {cond.type}={cond.status} ({cond.reason}): {cond.message}")
        else:
            lines.append(f"  condition {cond.type}={cond.status} ({cond.reason})")
    if st.services:
        lines.append("services:")
        lines += [f"  {service_line(s)}" for s in st.services]
    if st.jobs:
        lines.append("jobs:")
        lines += [
            f"  {j.name}: {j.phase.value}" + (f" - {j.message}" if j.message else "")
            for j in st.jobs
        ]
    timings = {k: v for k, v in st.timings.model_dump().items() if v is not None}
    if timings:
        lines.append(
            "timings: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items() if isinstance(v, float | int))
        )
    if events:
        lines.append("recent events:")
        lines += [f"  {e}" for e in events]
    return lines


def urls(records: Mapping[str, DiscoveryRecord]) -> list[tuple[str, str]]:
    """(service, address) for every port of every service."""
    rows = []
    for name, rec in records.items():
        ports = rec.ports or []
        if not ports:
            rows.append((name, rec.base_url or rec.url or f"{rec.host}:{rec.port}"))
        for port in ports:
            rows.append((f"{name}/{port.name}", port.url or f"{rec.host}:{port.port}"))
        if rec.ws_url:
            rows.append((f"{name}/ws", rec.ws_url))
    return rows


class Progress:
    """Follows an environment's status while ``up`` waits: a live table per service on a
    terminal, one line per change otherwise (CI logs)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.live: Live | None = None
        self.last: dict[str, str] = {}
        if err.is_terminal:
            self.live = Live(self._table(None), console=err, refresh_per_second=8, transient=False)
            self.live.start()

    def _table(self, status: TestEnvironmentStatus | None) -> Table:
        elapsed = time.monotonic() - self.started
        phase = status.phase.value if status is not None else "Pending"
        table = Table(
            title=f"{self.name}: {phase} ({elapsed:.0f}s)", box=None, title_justify="left"
        )
        table.add_column("SERVICE")
        table.add_column("STATE")
        for svc in status.services if status is not None else []:
            table.add_row(svc.name, service_state(svc))
        for job in status.jobs if status is not None else []:
            table.add_row(f"job {job.name}", job.phase.value)
        return table

    def __call__(self, status: TestEnvironmentStatus) -> None:
        if self.live is not None:
            self.live.update(self._table(status))
            return
        elapsed = time.monotonic() - self.started
        current = {s.name: service_line(s) for s in status.services}
        current.update({f"job {j.name}": f"job {j.name}: {j.phase.value}" for j in status.jobs})
        current["phase"] = f"phase {status.phase.value}"
        for key, line in current.items():
            if self.last.get(key) != line:
                err.print(f"[{elapsed:5.1f}s] {line}")
        self.last = current

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
