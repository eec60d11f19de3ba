"""The next step is always printed: the commands that answer a waiting run's questions,
the resume command after Ctrl-C, and what `cancel` of an ended run did."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
from pathlib import Path
from typing import Any

import pytest

from clitools import spawn, status, tagged, vigil, wait_for, write_plan
from enginetools import HANG
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow


def plan(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "n", "project": "n", "phases": [{"id": "p", "tasks": list(tasks)}]}


def answers_in(text: str) -> list[list[str]]:
    """The commands a run's output tells a person to type (`answer: vigil ...`)."""
    found = re.findall(r"answer: (vigil .*?)   \(or ", text)
    return [shlex.split(command)[1:] for command in found]


def test_a_waiting_run_prints_the_exact_command_for_each_question(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(
        tmp_path / "p.yaml",
        plan(
            {"id": "migrate", "run": "echo v2 > schema.txt", "review": "required"},
            {"id": "ship", "approval": {"question": "Ship it?"}},
            {"id": "pick", "approval": {"question": "Which region?", "choices": ["eu", "us"]}},
        ),
    )
    out = vigil("run", str(tmp_path / "p.yaml"), "--run-id", "w1", cwd=ws)
    assert out.returncode == ExitCode.WAITING, out.stdout + out.stderr
    assert "waiting for a person (3 questions); next:" in out.stdout
    changes = json.loads(vigil("review", "w1", "--format", "json", cwd=ws).stdout)[0]["changes"]
    # Review approval is pinned to exactly the changes that are held.
    assert f"vigil review w1 --task migrate --changes {changes} --approve" in out.stdout
    assert "look:   vigil review w1 --task migrate" in out.stdout
    assert "Ship it?" in out.stdout and "Which region?" in out.stdout
    commands = answers_in(out.stdout)
    assert len(commands) == 3
    assert next(c for c in commands if "--value" in c)[-2:] == ["--value", "eu"]
    # Typed as printed, each answers its question, and the run ends.
    for command in commands:
        done = vigil(*command, cwd=ws)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert status("w1", ws)["state"] == "succeeded"
    assert (ws / "schema.txt").read_text() == "v2\n"


def test_an_answer_that_leaves_the_run_waiting_prints_the_rest(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(
        tmp_path / "p.yaml",
        plan(
            {"id": "one", "approval": {"question": "First?"}},
            {"id": "two", "needs": ["one"], "approval": {"question": "Second?"}},
        ),
    )
    out = vigil("run", str(tmp_path / "p.yaml"), "--run-id", "w2", "--format", "json", cwd=ws)
    assert out.returncode == ExitCode.WAITING
    first = json.loads(out.stdout)["next"]
    assert [s["task"] for s in first] == ["one"]
    answered = vigil(*shlex.split(first[0]["command"])[1:], cwd=ws)
    assert answered.returncode == 0, answered.stderr
    assert "Second?" in answered.stdout
    [then] = answers_in(answered.stdout)
    assert vigil(*then, cwd=ws).returncode == 0
    assert status("w2", ws)["state"] == "succeeded"


def test_ctrl_c_prints_the_real_resume_command(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(ws / "p.yaml", plan({"id": "t", "run": "sleep 300"}))
    proc = spawn("run", "p.yaml", "--run-id", "cc1", cwd=ws, env={"VIGIL_ISOLATION": "off"})
    wait_for(lambda: bool(tagged("cc1/t/", ws)))
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == ExitCode.CANCELLED, err
    assert "resume with: vigil resume cc1" in out
    assert "resume with `vigil resume cc1`" in err
    assert "RUN_ID" not in out + err


def test_cancel_of_an_ended_run_says_so(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(ws / "p.yaml", plan({"id": "t", "run": "true"}))
    assert vigil("run", "p.yaml", "--run-id", "done1", cwd=ws).returncode == 0
    out = vigil("cancel", "done1", cwd=ws)
    assert out.returncode == 0, out.stderr
    assert "run done1 had already ended (succeeded); nothing to cancel" in out.stdout
    assert status("done1", ws)["state"] == "succeeded"
    js = json.loads(vigil("cancel", "done1", "--format", "json", cwd=ws).stdout)
    assert js == {"id": "done1", "state": "succeeded", "already_ended": True}
