"""What the benchmarks share: the kubectl to use, options, and how results are reported."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))

from tools import tool  # noqa: E402


def kubectl_path() -> str:
    """The project's pinned kubectl build if present, else kubectl on PATH."""
    return tool("kubectl") or "kubectl"


def parse_args(doc: str | None, default_rounds: int = 3) -> argparse.Namespace:
    """`--rounds N` and `--json FILE`, the options every benchmark takes."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--rounds", type=int, default=default_rounds)
    parser.add_argument("--json", type=Path, help="also write the result here")
    return parser.parse_args()


def ratio_result(
    rounds: int, name: str, measured: list[float], baseline_name: str, baseline: list[float]
) -> dict[str, Any]:
    """Medians of both series and their ratio (measured / baseline, same run)."""
    return {
        "rounds": rounds,
        f"{baseline_name}_median_s": statistics.median(baseline),
        f"{name}_median_s": statistics.median(measured),
        "ratio": statistics.median(measured) / statistics.median(baseline),
    }


def emit(result: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        path.write_text(text)


def session_env() -> dict[str, str]:
    """The environment for a timed pytest session: this one, but with bytecode caching on
    as on a user's machine (this machine's image sets PYTHONDONTWRITEBYTECODE, which makes
    every session recompile each module it imports, and pytest re-rewrite each plugin)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
