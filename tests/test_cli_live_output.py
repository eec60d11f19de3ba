"""Live output: step output streamed line by line with its task in front when no terminal
is watching (masked like the logs), `--quiet`, `vigil logs --follow`, and a non-critical
failure shown as such."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clitools import kill9, on_a_terminal, spawn, status, tagged, vigil, wait_for, write_plan
from enginetools import HANG
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow

OFF = {"VIGIL_ISOLATION": "off"}

# Prints, then waits for the test's go-ahead (a file); gives up after a while, so that
# output held back until the end makes the test fail instead of hang.
WAITS = (
    "echo ready; i=0; while [ ! -e go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; "
    "if [ -e go ]; then echo done; else echo gave-up; fi"
)


def plan_of(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "live", "project": "live", "phases": [{"id": "p", "tasks": list(tasks)}]}


def read_until(proc: subprocess.Popen[str], wanted: str) -> list[str]:
    """Lines of ``proc``'s stdout up to the first that is ``wanted``."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if seen[-1] == wanted:
            return seen
    raise AssertionError(f"{wanted!r} never came: {seen}")


def test_step_output_streams_line_by_line_with_the_task_in_front(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(
        ws / "p.yaml",
        plan_of(
            {"id": "waiter", "run": WAITS},
            {"id": "other", "run": "echo from-other; printf 'no newline'"},
        ),
    )
    proc = spawn("run", "p.yaml", "--run-id", "s1", cwd=ws, env=OFF)
    # Shown while the step still runs: it goes on only once the test has seen the line.
    before = read_until(proc, "waiter | ready")
    (ws / "go").touch()
    rest, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 0, err
    lines = before + rest.splitlines()
    assert "waiter | done" in lines and "gave-up" not in rest
    # Another task's lines have their own prefix, padded like docker compose's.
    assert "other  | from-other" in lines and "other  | no newline" in lines
    assert "s1 waiter: attempt 1 started" in err  # events stay on stderr


def test_quiet_hides_step_output_and_json_never_has_it(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(ws / "p.yaml", plan_of({"id": "t", "run": "echo visible-line"}))
    loud = vigil("run", "p.yaml", cwd=ws, env=OFF)
    assert "t | visible-line" in loud.stdout
    quiet = vigil("run", "p.yaml", "--quiet", cwd=ws, env=OFF)
    assert quiet.returncode == 0 and "visible-line" not in quiet.stdout + quiet.stderr
    js = vigil("run", "p.yaml", "--format", "json", cwd=ws, env=OFF)
    assert json.loads(js.stdout)["state"] == "succeeded"


def test_streamed_output_is_masked_like_the_logs(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    value = "s3cr3t-streamed-value-42"
    (ws / "vigil.toml").write_text('[secrets]\nTOKEN = { env = "MY_TOKEN" }\n')
    write_plan(
        ws / "p.yaml",
        plan_of({"id": "t", "secrets": ["TOKEN"], "run": 'echo "token=$TOKEN"'}),
    )
    env = {**OFF, "MY_TOKEN": value, "VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    out = vigil("run", "p.yaml", cwd=ws, env=env)
    assert out.returncode == 0, out.stderr
    assert "t | token=***" in out.stdout.splitlines()
    assert value not in out.stdout + out.stderr


def test_logs_follow_follows_a_running_task_until_it_ends(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(ws / "p.yaml", plan_of({"id": "waiter", "run": WAITS}))
    run = spawn("run", "p.yaml", "--run-id", "f1", "--quiet", cwd=ws, env=OFF)
    wait_for(lambda: bool(tagged("f1/waiter/", ws)))  # the step runs
    follower = spawn("logs", "f1", "waiter", "--follow", cwd=ws)
    try:
        seen = read_until(follower, "ready")
        assert seen[0].startswith("==> waiter attempt 1 (")
        (ws / "go").touch()
        rest, err = follower.communicate(timeout=HANG)
        assert follower.returncode == 0, err  # it ended by itself with the task
        assert rest.splitlines() == ["done"]
    finally:
        (ws / "go").touch()
        run.communicate(timeout=HANG)
    assert status("f1", ws)["state"] == "succeeded"
    # Following an ended run prints what it has and returns.
    again = vigil("logs", "last", "--follow", cwd=ws)
    assert again.returncode == 0 and "ready\ndone\n" in again.stdout


def test_a_non_critical_failure_is_shown_as_such(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(
        ws / "p.yaml",
        plan_of(
            {"id": "lint", "run": "exit 3", "on_failure": "continue"},
            {"id": "build", "run": "exit 4"},
        ),
    )
    screen = on_a_terminal("run", "p.yaml", "--run-id", "nc1", cwd=ws, env=OFF)
    frame = screen.rsplit("phase  task", 1)[1]  # the last frame of the live view
    rows = {line.split()[1]: line for line in frame.splitlines() if line.startswith("p ")}
    assert "failed (non-critical)" in rows["lint"]
    assert "failed" in rows["build"] and "non-critical" not in rows["build"]
    table = vigil("status", "nc1", cwd=ws).stdout
    lines = {line.split()[1]: line for line in table.splitlines() if line.startswith(" p ")}
    assert "failed (non-critical)" in lines["lint"] and "non-critical" not in lines["build"]
    assert status("nc1", ws)["state"] == "failed"


def test_logs_follow_returns_for_a_waiting_run_and_one_without_a_driver(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(
        ws / "p.yaml",
        plan_of({"id": "hi", "run": "echo hello"}, {"id": "ask", "approval": {"question": "?"}}),
    )
    assert vigil("run", "p.yaml", "--run-id", "w1", cwd=ws, env=OFF).returncode == ExitCode.WAITING
    waiting = vigil("logs", "w1", "--follow", cwd=ws)
    assert waiting.returncode == 0 and "hello" in waiting.stdout
    write_plan(ws / "slow.yaml", plan_of({"id": "slow", "run": "echo started; sleep 300"}))
    run = spawn("run", "slow.yaml", "--run-id", "k1", cwd=ws, env=OFF)
    wait_for(lambda: bool(tagged("k1/slow/", ws)))
    kill9(run)
    orphaned = vigil("logs", "k1", "slow", "--follow", cwd=ws)
    assert orphaned.returncode == 0 and "started" in orphaned.stdout
    assert vigil("cancel", "k1", cwd=ws).returncode == 0  # ends the step left behind
