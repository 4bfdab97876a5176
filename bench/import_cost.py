"""What loading the pytest plugin costs a session that does not use it.

Each round starts fresh interpreters that import pytest first, then time one more import:
the plugin's entry point (``testenv_pytest.plugin``, what pytest loads in every session), and
as the baseline in the same run another small plugin that every session here loads
(``pytest_timeout``). For reference it also times the whole library (``testenv`` with its
clients, launcher and Kubernetes client loaded), which only a session using it pays.

    python bench/import_cost.py [--rounds 15] [--json FILE]
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from _common import emit, parse_args, session_env

PROBE = """
import time, pytest
t = time.perf_counter()
{statement}
print(time.perf_counter() - t)
"""

CASES = {
    "baseline_pytest_timeout": "import pytest_timeout",
    "plugin_entry_point": "import testenv_pytest.plugin",
    "library_loaded": "import testenv; testenv.DevLauncher; testenv.ServiceDiscovery",
}


def once(statement: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(statement=statement)],
        capture_output=True,
        text=True,
        check=True,
        env=session_env(),  # bytecode caching on, as on a user's machine
    )
    return float(out.stdout.strip())


def main() -> None:
    args = parse_args(__doc__, default_rounds=15)
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.rounds):  # interleaved: noise hits every case alike
        for name, statement in CASES.items():
            samples[name].append(once(statement))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    baseline = medians["baseline_pytest_timeout"]
    result = {
        "rounds": args.rounds,
        **{f"{name}_median_ms": round(value * 1000, 2) for name, value in medians.items()},
        **{
            f"{name}_p95_ms": round(sorted(v)[int(0.95 * (len(v) - 1))] * 1000, 2)
            for name, v in samples.items()
        },
        "plugin_vs_baseline_ratio": round(medians["plugin_entry_point"] / baseline, 2),
        "library_vs_baseline_ratio": round(medians["library_loaded"] / baseline, 2),
        "plugin_target_ms": 50,
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
