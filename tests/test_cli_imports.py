"""Commands load only what they use: the fixed cost of a command is mostly imports.

Each case runs a command in a fresh interpreter and lists the modules it ended up with;
a module named here that shows up means a command started paying for code it never runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clitools import cli_env, vigil, write_plan

PROBE = """
import json, sys
from vigil.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
sys.stderr.write("\\nMODULES " + json.dumps([code, sorted(sys.modules)]) + "\\n")
"""

STORE = ["sqlalchemy", "alembic", "vigil.store"]
ENGINE = ["vigil.engine.state", "vigil.engine.driver", "vigil.workspace"]
PARSERS = ["vigil.plan.markdown", "markdown_it"]
UI_AND_CRYPTO = ["textual", "starlette", "cryptography", "biscuit_auth"]

PLAN = {
    "name": "p",
    "project": "demo",
    "phases": [{"id": "a", "tasks": [{"id": "t", "run": "true"}]}],
}


def modules_after(args: list[str], cwd: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=cwd,
        env=cli_env({"VIGIL_ISOLATION": "off"}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    marker = done.stderr.rsplit("MODULES ", 1)
    assert len(marker) == 2, done.stderr
    code, names = json.loads(marker[1])
    assert code in (0, None), done.stdout + done.stderr
    return set(names)


def heavy(found: set[str], prefixes: list[str]) -> list[str]:
    return sorted(m for m in found for p in prefixes if m == p or m.startswith(p + "."))


@pytest.fixture
def finished_run(tmp_path: Path) -> str:
    write_plan(tmp_path / "plan.yaml", PLAN)
    done = vigil(
        "run", "plan.yaml", "--format", "json", cwd=tmp_path, env={"VIGIL_ISOLATION": "off"}
    )
    assert done.returncode == 0, done.stderr
    run_id: str = json.loads(done.stdout)["id"]
    return run_id


def test_version_loads_no_command_module(tmp_path: Path) -> None:
    found = modules_after(["--version"], tmp_path)
    assert heavy(found, ["vigil.cli.run", "rich", *STORE, *ENGINE]) == []


@pytest.mark.slow
def test_plan_check_of_a_yaml_plan_loads_no_store_engine_or_markdown(tmp_path: Path) -> None:
    write_plan(tmp_path / "plan.yaml", PLAN)
    found = modules_after(["plan", "check", "plan.yaml"], tmp_path)
    assert "vigil.plan.loader" in found  # the probe really ran the command
    assert heavy(found, [*STORE, *ENGINE, *PARSERS, *UI_AND_CRYPTO]) == []


@pytest.mark.slow
def test_runs_loads_no_engine_state_or_plan_models(tmp_path: Path, finished_run: str) -> None:
    found = modules_after(["runs"], tmp_path)
    assert "vigil.store.store" in found
    assert heavy(found, ["vigil.plan.models", "alembic", *ENGINE, *PARSERS, *UI_AND_CRYPTO]) == []


@pytest.mark.slow
def test_status_loads_no_driver_sandbox_or_web(tmp_path: Path, finished_run: str) -> None:
    found = modules_after(["status", finished_run], tmp_path)
    assert "vigil.engine.state" in found
    assert heavy(found, ["vigil.engine.driver", "vigil.workspace", "alembic", *PARSERS]) == []
    assert heavy(found, ["textual", "starlette", "biscuit_auth"]) == []
