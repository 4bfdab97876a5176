#!/usr/bin/env bash
# Run the whole test suite N times in a row on one cluster (default 5), each run launched as
# CI and background jobs launch it (SIGINT ignored, no stdin), and report every test that
# failed in any run. Exit status 1 if any did.
#
#   hack/flake-check.sh [RUNS]        (make flake-check RUNS=5)
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
out="artifacts/flake-check"
rm -rf "$out"; mkdir -p "$out"
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  (trap '' INT; .venv/bin/python -m pytest -p no:cacheprovider -q \
     --junitxml="$out/run-$i.xml") </dev/null >"$out/run-$i.log" 2>&1
  echo "run $i/$runs: exit $? in $(( $(date +%s) - start ))s (log: $out/run-$i.log)"
done
.venv/bin/python - "$out" "$runs" <<'PY'
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

out, runs = Path(sys.argv[1]), int(sys.argv[2])
failed: Counter[str] = Counter()
total = 0
for report in sorted(out.glob("run-*.xml")):
    for case in ET.parse(report).iter("testcase"):
        total += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed[f"{case.get('classname')}::{case.get('name')}"] += 1
print(f"flake-check: {runs} runs, {total} test results, {sum(failed.values())} failures")
for test, count in failed.most_common():
    print(f"  failed {count}/{runs}: {test}")
sys.exit(1 if failed else 0)
PY
