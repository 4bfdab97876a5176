"""Benchmark: a pytest session with a fresh environment vs one that reuses it (`--testenv-reuse`).

Each round runs the same one-test session twice in a temporary directory: the first run
provisions a reusable environment, the second reuses it. The ratio reuse/fresh is the figure
to watch (lower is better); the environment is deleted after each round.

    python bench/plugin_reuse.py [--rounds 3] [--json results.json]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, kubectl_path, parse_args, ratio_result

TEST_FILE = """
from pathlib import Path

def test_health(real_services_sync):
    assert real_services_sync.backend_client.health()["status"] == "ok"
    Path("env-name").write_text(real_services_sync.environment.name)
"""


def _session(workdir: Path) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--testenv-reuse"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pytest failed:\n{done.stdout}\n{done.stderr}")
    return time.monotonic() - started


def one_round() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "test_bench.py").write_text(TEST_FILE)
        fresh = _session(workdir)
        reused = _session(workdir)
        name = (workdir / "env-name").read_text()
        subprocess.run(
            [kubectl_path(), "delete", "testenvironment", name, "--wait=false"],
            capture_output=True,
            check=False,
        )
    return fresh, reused


def main() -> int:
    args = parse_args(__doc__)
    fresh: list[float] = []
    reused: list[float] = []
    for i in range(args.rounds):
        f, r = one_round()
        fresh.append(f)
        reused.append(r)
        print(f"round {i + 1}: fresh session {f:.2f}s  reusing session {r:.2f}s", flush=True)
    emit(ratio_result(args.rounds, "reuse", reused, "fresh", fresh), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
