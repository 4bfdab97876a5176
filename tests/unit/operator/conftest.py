"""Unit tests of the operator: no cluster, no network."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

try:
    import testenv_operator  # noqa: F401
except ImportError:  # not installed (editable) into the venv: use the source tree
    sys.path.insert(0, str(ROOT / "operator"))
