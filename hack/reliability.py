#!/usr/bin/env python3
"""`make reliability`: inject the chaos suite's faults and try the hostile inputs against the
real cluster, then print one summary: faults injected and survived, inputs tried and refused
(or handled), leaks found (must be 0). Exit status 1 unless everything held.

    python hack/reliability.py        (KUBECONFIG: the cluster; the operator installed)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = [
    "tests/e2e/chaos",
    "tests/e2e/plugin/test_plugin_chaos.py",
    "tests/e2e/operator/test_operator_e2e.py::test_malformed_manifest_is_refused",
    "tests/unit/operator/test_operator_poison_pills.py",
]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "reliability.xml"
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-q",
                "-o",
                "junit_family=xunit1",
                f"--junitxml={report}",
                *SUITES,
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        cases = list(ET.parse(report).iter("testcase"))
    faults = survived = inputs = refused = leaks = 0
    failures: list[str] = []
    for case in cases:
        name = case.get("name", "")
        ok = case.find("failure") is None and case.find("error") is None
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if not ok:
            failures.append(f"{case.get('classname')}::{name}")
            error = case.find("error")
            if error is not None and "left these behind" in (error.get("message") or ""):
                leaks += 1
        if "faults_injected" in props:
            count = int(props["faults_injected"] or 0)
            faults += count
            survived += count if ok else 0
        elif name.startswith("test_any_spec_the_schema_admits"):
            from importlib import import_module

            sys.path.insert(0, str(ROOT / "tests/unit/operator"))
            examples = import_module("test_operator_poison_pills").PROPERTY_EXAMPLES
            inputs += examples
            refused += examples if ok else 0
        elif "[" in name:  # one hostile input per parametrized case
            inputs += 1
            refused += 1 if ok else 0
    print(
        f"reliability: faults injected {faults}, survived {survived}; "
        f"hostile inputs tried {inputs}, refused or handled {refused}; leaks found {leaks}"
    )
    for failure in failures:
        print(f"  FAILED {failure}")
    held = run.returncode == 0 and faults == survived and inputs == refused and leaks == 0
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
