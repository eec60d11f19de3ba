"""The basics of the command: version, completion, parse errors with a code, words that
agree with their counts, the halt's help and the doctor's checklist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clitools import vigil, write_plan
from vigil import __version__
from vigil.errors import ExitCode

OFF = {"VIGIL_ISOLATION": "off"}


def plan_of(*tasks: dict[str, object]) -> dict[str, object]:
    return {"name": "b", "project": "b", "phases": [{"id": "main", "tasks": list(tasks)}]}


def test_version(tmp_path: Path) -> None:
    out = vigil("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == f"vigil {__version__}\n"


def test_shell_completion_is_offered_and_completes_commands(tmp_path: Path) -> None:
    # Typer's switch for naming the shell rather than detecting it from the parent process
    # (a test's parent is pytest, not a shell).
    named = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    script = vigil("--show-completion", "bash", cwd=tmp_path, env=named)
    assert script.returncode == 0, script.stderr
    assert "_VIGIL_COMPLETE=complete_bash" in script.stdout
    # What the installed script asks the command when a person presses Tab.
    env = {"_VIGIL_COMPLETE": "complete_bash", "COMP_WORDS": "vigil esc", "COMP_CWORD": "1"}
    asked = vigil(cwd=tmp_path, env=env)
    assert asked.returncode == 0 and asked.stdout.split() == ["escalations"]


@pytest.mark.parametrize(
    ("args", "cause"),
    [
        (["status"], "Missing argument 'RUN'"),
        (["run", "--no-such-option", "p.yaml"], "No such option: --no-such-option"),
        (["run", "-j", "0", "p.yaml"], "Invalid value for '--max-parallel'"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_parse_errors_carry_the_usage_code(tmp_path: Path, args: list[str], cause: str) -> None:
    out = vigil(*args, cwd=tmp_path)
    assert out.returncode == ExitCode.USAGE
    assert f"error VIGIL-USAGE: {cause}" in out.stderr, out.stderr
    assert "Usage: vigil" in out.stderr and "remedy: See `vigil" in out.stderr
    assert "Traceback" not in out.stderr
    js = vigil(*args, "--format", "json", cwd=tmp_path)
    assert js.returncode == ExitCode.USAGE
    assert json.loads(js.stdout)["error"]["code"] == "VIGIL-USAGE"


def test_vigil_alone_still_shows_the_help(tmp_path: Path) -> None:
    out = vigil(cwd=tmp_path)
    assert "Usage: vigil" in out.stdout + out.stderr and "VIGIL-USAGE" not in out.stderr


def test_counts_and_words_agree(tmp_path: Path) -> None:
    write_plan(tmp_path / "one.yaml", plan_of({"id": "a", "run": "true"}))
    write_plan(
        tmp_path / "two.yaml", plan_of({"id": "a", "run": "true"}, {"id": "b", "run": "true"})
    )
    one = vigil("plan", "check", "one.yaml", cwd=tmp_path)
    assert "(1 phase, 1 task)" in one.stdout, one.stdout + one.stderr
    two = vigil("plan", "check", "two.yaml", cwd=tmp_path)
    assert "(1 phase, 2 tasks)" in two.stdout


@pytest.mark.slow
def test_rollback_counts_what_it_restored(tmp_path: Path) -> None:
    write_plan(tmp_path / "p.yaml", plan_of({"id": "a", "run": "echo x > one.txt"}))
    ws = tmp_path / "ws"
    ws.mkdir()
    assert vigil("run", str(tmp_path / "p.yaml"), "--run-id", "r1", cwd=ws).returncode == 0
    out = vigil("rollback", "r1", cwd=ws)
    assert out.returncode == 0, out.stderr
    assert "restored 1 path\n" in out.stdout and "path(s)" not in out.stdout


def test_halt_help_says_it_stops_all_runs_of_the_project(tmp_path: Path) -> None:
    text = " ".join(vigil("halt", "--help", cwd=tmp_path, env={"COLUMNS": "200"}).stdout.split())
    assert "Stop all runs of a project (default: every project) until `vigil unhalt`" in text
    assert "VIGIL-HALTED" in text


@pytest.mark.slow
def test_doctor_is_a_checklist_of_keys_store_isolation_and_versions(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    env = {"VIGIL_CONFIG_DIR": str(tmp_path / "config"), "COLUMNS": "300"}
    before = vigil("doctor", cwd=ws, env=env)
    assert before.returncode == 0, before.stderr
    lines = before.stdout.splitlines()
    assert lines[0].startswith(f"vigil {__version__}  python ")
    marks = {line.split()[1]: line.split()[0] for line in lines if line[:1] in "✓✗"}
    assert marks["keys"] == "✗" and marks["store"] == "✓"
    assert {"keys", "store", "isolation", "limits", "state", "config"} <= marks.keys()
    assert not (ws / ".vigil" / "vigil.db").exists()  # looking creates nothing
    assert vigil("keys", "init", cwd=ws, env=env).returncode == 0
    (ws / ".vigil").mkdir()
    (ws / ".vigil" / "vigil.db").write_text("not a database")
    after = vigil("doctor", cwd=ws, env=env)
    marks = {
        line.split()[1]: line.split()[0] for line in after.stdout.splitlines() if line[:1] in "✓✗"
    }
    assert marks["keys"] == "✓" and marks["store"] == "✗"
    assert "VIGIL-STORE" in after.stdout
    js = json.loads(vigil("doctor", "--format", "json", cwd=ws, env=env).stdout)
    assert js["keys"]["ok"] is True and js["store_ok"] is False
    assert js["versions"]["vigil"] == __version__
