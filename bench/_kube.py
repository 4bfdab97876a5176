"""What the benchmarks share: the kubectl to use."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def kubectl_path() -> str:
    """The project's pinned kubectl build if present, else kubectl on PATH."""
    versions = dict(
        line.split("=", 1)
        for line in (ROOT / "hack/versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    pinned = Path.home() / f".cache/testenv/bin/kubernetes-{versions['KUBE_VERSION']}/kubectl"
    return str(pinned) if pinned.exists() else (shutil.which("kubectl") or "kubectl")
