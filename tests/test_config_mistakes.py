"""Configuration mistakes are usage errors with a code, a cause and a remedy, never bugs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clitools import vigil, write_plan
from vigil.config import SECTIONS, check_config, load_config, section_model
from vigil.errors import ConfigError, ExitCode

PLAN = {"name": "c", "project": "c", "phases": [{"id": "p", "tasks": [{"id": "a", "run": "true"}]}]}


def error_of(out: object) -> dict[str, object]:
    assert out.returncode == ExitCode.USAGE, (out.returncode, out.stdout, out.stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in out.stderr and "VIGIL-INTERNAL" not in out.stderr  # type: ignore[attr-defined]
    error: dict[str, object] = json.loads(out.stdout)["error"]  # type: ignore[attr-defined]
    assert error["cause"] and error["remedy"]
    return error


@pytest.mark.slow
@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[stor]\nurl = 'sqlite:///x.db'\n", "unknown section [stor] (did you mean 'store'?)"),
        ("[workspace]\nisolaton = 'off'\n", "workspace.isolaton (did you mean 'isolation'?)"),
        ("[policy]\nprotectd = ['prod']\n", "policy.protectd (did you mean 'protected'?)"),
        ("[agents.coder]\ncommand = 'x'\ntimout = 5\n", "agents.coder.timout"),
        ("[audit]\nfsync = 'sometimes'\n", "audit.fsync"),
        ("[workspace]\nisolation = 5\n", "workspace.isolation"),
        ("[plans]\ndirs = 'plans'\n", "plans.dirs"),
        ("[store]\nurl = 5\n", "store.url"),
        ("store = 'sqlite:///x.db'\n", "store must be a table"),
    ],
)
def test_config_mistakes_are_usage_errors(tmp_path: Path, toml: str, needle: str) -> None:
    (tmp_path / "vigil.toml").write_text(toml)
    write_plan(tmp_path / "plan.yaml", PLAN)
    commands = (("run", "plan.yaml"), ("plans", "list")) if "stor]" in toml else (("runs",),)
    for args in commands:
        error = error_of(vigil(*args, "--format", "json", cwd=tmp_path))
        assert error["code"] == "VIGIL-CONFIG"
        assert needle in str(error["cause"]), error
        assert "vigil.toml" in str(error["cause"])
    assert not (tmp_path / ".vigil").exists(), "nothing may run on a bad configuration"


@pytest.mark.slow
def test_user_config_is_checked_and_named(tmp_path: Path) -> None:
    home = tmp_path / "cfg"
    home.mkdir()
    (home / "config.toml").write_text("[notfy]\n")
    out = vigil("runs", "--format", "json", cwd=tmp_path, env={"VIGIL_CONFIG_DIR": str(home)})
    error = error_of(out)
    assert str(home / "config.toml") in str(error["cause"]) and "notify" in str(error["cause"])


@pytest.mark.slow
@pytest.mark.parametrize("url", ["mysql://x@localhost/db", "postgresql+psycopg://u@127.0.0.1:1/d"])
def test_unsupported_or_unreachable_store_in_toml_is_a_usage_error(
    tmp_path: Path, url: str
) -> None:
    (tmp_path / "vigil.toml").write_text(f"[store]\nurl = '{url}'\n")
    error = error_of(vigil("runs", "--format", "json", cwd=tmp_path))
    assert error["code"] == "VIGIL-STORE"


def test_every_section_model_is_importable_and_checks_unknown_keys(tmp_path: Path) -> None:
    for name in SECTIONS:
        model = section_model(name)
        if name == "agents":
            data: dict[str, object] = {"x": {"command": "c", "bogus_key": 1}}
        else:
            data = {"bogus_key": 1}
        assert model is not None
        with pytest.raises(ConfigError, match="bogus_key"):
            check_config({name: data}, tmp_path / "vigil.toml")


def test_valid_config_loads(tmp_path: Path) -> None:
    (tmp_path / "vigil.toml").write_text(
        "[workspace]\nisolation = 'off'\n[audit]\nfsync = false\n[plans]\ndirs = ['plans']\n"
        "[policy]\nprotected = ['prod']\n[agents.coder]\ncommand = 'true'\n"
    )
    config = load_config(tmp_path)
    assert config.settings("workspace").isolation == "off"
    assert config.settings("audit").fsync is False


@pytest.mark.slow
def test_missing_workspace_is_refused_unless_created(tmp_path: Path) -> None:
    write_plan(tmp_path / "plan.yaml", PLAN)
    typo = tmp_path / "wrokspace"
    out = vigil("run", "plan.yaml", "--workspace", str(typo), "--format", "json", cwd=tmp_path)
    error = error_of(out)
    assert error["code"] == "VIGIL-WORKSPACE-MISSING" and "--create" in str(error["remedy"])
    assert not typo.exists()
    for args in (("runs",), ("status", "x")):
        out = vigil(*args, "--workspace", str(typo), "--format", "json", cwd=tmp_path)
        assert error_of(out)["code"] == "VIGIL-WORKSPACE-MISSING"
    assert not typo.exists()
    made = vigil("run", "plan.yaml", "--workspace", str(typo), "--create", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert typo.is_dir()


@pytest.mark.slow
def test_workspace_naming_a_file_is_a_usage_error(tmp_path: Path) -> None:
    write_plan(tmp_path / "plan.yaml", PLAN)
    out = vigil(
        "run", "plan.yaml", "--workspace", "plan.yaml", "--create", "--format", "json", cwd=tmp_path
    )
    error = error_of(out)
    assert error["code"] == "VIGIL-WORKSPACE-MISSING" and "is a file" in str(error["cause"])
