"""The import-layer contracts in pyproject.toml hold (the engine imports no CLI, web,
report or notify code; the store and plans stay below the engine)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_the_engine_contract_has_no_exceptions() -> None:
    """The engine reaches notifications and reports only through vigil.engine.hooks; an
    ``ignore_imports`` line would let an import from it back in unnoticed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    engine = [c for c in contracts if "vigil.engine" in c.get("source_modules", [])]
    assert engine, "no contract covers vigil.engine"
    for contract in engine:
        assert not contract.get("ignore_imports"), contract["name"]
    forbidden = next(c for c in engine if "vigil.notify" in c["forbidden_modules"])
    assert {"vigil.report", "vigil.followup"} <= set(forbidden["forbidden_modules"])
