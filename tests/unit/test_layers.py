"""The layers of ARCHITECTURE.md, checked with import-linter (contracts in pyproject.toml)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_contracts_name_every_private_module_of_the_library() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    private = {f"testenv.{p.stem}" for p in (ROOT / "core/testenv").glob("_*.py")} - {
        "testenv.__init__"
    }
    guarded = [c for c in contracts if "testenv._clients" in c["forbidden_modules"]]
    assert len(guarded) == 4  # the API types, the operator, the plugin, the command line
    for contract in guarded:
        missing = private - set(contract["forbidden_modules"])
        assert not missing, f"{contract['name']!r} does not forbid {sorted(missing)}"
