"""The benchmark's results file: a run of some suites keeps the others' figures only when
asked, and the table then says when each suite was measured (pure logic, no cluster)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def run(bench_module: Any) -> Any:
    return bench_module("run")


def _figure(run: Any, suite: str, name: str, value: float) -> dict[str, Any]:
    return run.figure(suite, name, [value], "baseline", [value * 2])


def test_other_suites_are_kept_with_their_own_time(run: Any, tmp_path: Path) -> None:
    old = {
        "measured_at": "2026-11-25 13:16 UTC",
        "machine": "m",
        "rounds": 10,
        "quick": False,
        "figures": [_figure(run, "ready", "r", 1.0), _figure(run, "scale", "s", 2.0)],
    }
    (tmp_path / "results.json").write_text(json.dumps(old))
    kept = run.kept_figures(tmp_path / "results.json", ["ready"], quick=False)
    assert [(f["suite"], f["measured_at"]) for f in kept] == [("scale", "2026-11-25 13:16 UTC")]
    # A quick run never mixes with a full one.
    assert run.kept_figures(tmp_path / "results.json", ["ready"], quick=True) == []
    fresh = {**_figure(run, "ready", "r", 0.5), "measured_at": "2026-12-06 17:00 UTC"}
    table = run.markdown({**old, "measured_at": fresh["measured_at"], "figures": [fresh, *kept]})
    assert table.startswith(
        "Measured 2026-12-06 17:00 UTC (ready); 2026-11-25 13:16 UTC (scale) on m"
    )
    only_now = run.markdown({**old, "measured_at": "2026-12-06 17:00 UTC", "figures": [fresh]})
    assert only_now.startswith("Measured 2026-12-06 17:00 UTC on m (10 rounds).")
